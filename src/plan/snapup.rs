//! snapup: upgrade a committed-capacity sector with deal data (empty-sector-update).

use super::{
    Action::{File, Manager, Proof},
    Event as E, ManagerCall as M, Output as O, Plan, PlanKind, State as S, StateSpec,
    StepKind as K, t,
};

pub(super) static PLAN: Plan = Plan {
    kind: PlanKind::Snapup,
    states: &[
        StateSpec {
            state: S::Empty,
            summary: "ask the manager for a CC sector to upgrade and the deals to put in it",
            actions: &[Manager(M::AllocateSanpUpSector)],
            needs: &[],
            produces: &[O::Sector, O::Deals, O::CcSector],
        },
        StateSpec {
            state: S::Allocated,
            summary: "write the deal pieces into the staged sector file",
            actions: &[Proof(K::AddPiece)],
            needs: &[O::Sector, O::Deals],
            produces: &[O::Pieces],
        },
        StateSpec {
            state: S::PieceAdded,
            summary: "build tree-d and compute the new CommD",
            actions: &[Proof(K::TreeD)],
            needs: &[O::Pieces],
            produces: &[O::TreeD],
        },
        StateSpec {
            state: S::TreeDBuilt,
            summary: "record the sector's basic info with the manager, then encode the deal data into the old replica",
            actions: &[Manager(M::StoreBasicInfo), Proof(K::SnapEncode)],
            needs: &[O::CcSector, O::Pieces, O::TreeD],
            produces: &[O::SnapReplica],
        },
        StateSpec {
            state: S::SnapEncoded,
            summary: "prove the encoding (GPU)",
            actions: &[Proof(K::SnapProve)],
            needs: &[O::CcSector, O::SnapReplica],
            produces: &[O::SnapProof],
        },
        StateSpec {
            state: S::SnapProved,
            summary: "reserve space and copy the updated replica and cache to the persist store",
            actions: &[Manager(M::StoreReserveSpace), File(K::Persist)],
            needs: &[O::SnapReplica],
            produces: &[O::PersistedFiles],
        },
        StateSpec {
            state: S::Persisted,
            summary: "submit the upgrade proof; the manager checks the persisted files (RePersist if they fail)",
            actions: &[Manager(M::SubmitSnapUpProof)],
            needs: &[O::PersistedFiles, O::SnapProof],
            produces: &[O::SnapUpSubmitted],
        },
        StateSpec {
            state: S::Finished,
            summary: "the sector is upgraded",
            actions: &[],
            needs: &[O::SnapUpSubmitted],
            produces: &[],
        },
        StateSpec {
            state: S::Aborted,
            summary: "the task ended without completing; the manager was told",
            actions: &[],
            needs: &[],
            produces: &[],
        },
    ],
    transitions: &[
        t(S::Empty, E::AllocatedSnapUpSector, S::Allocated),
        t(S::Allocated, E::AddPiece, S::PieceAdded),
        t(S::PieceAdded, E::BuildTreeD, S::TreeDBuilt),
        t(S::TreeDBuilt, E::SnapEncode, S::SnapEncoded),
        t(S::SnapEncoded, E::SnapProve, S::SnapProved),
        t(S::SnapProved, E::Persist, S::Persisted),
        t(S::Persisted, E::RePersist, S::SnapProved),
        t(S::Persisted, E::Finish, S::Finished),
    ],
};
