//! unseal: recover a piece's bytes from a sealed sector and upload them.

use super::{
    Action::{File, Manager, Proof},
    Event as E, ManagerCall as M, Output as O, Plan, PlanKind, State as S, StateSpec,
    StepKind as K, t,
};

pub(super) static PLAN: Plan = Plan {
    kind: PlanKind::Unseal,
    states: &[
        StateSpec {
            state: S::Empty,
            summary: "register the unseal task with the manager and get the sector's sealing info",
            actions: &[Manager(M::AllocateUnsealSector)],
            needs: &[],
            produces: &[O::Sector, O::UnsealRequest],
        },
        StateSpec {
            state: S::Allocated,
            summary: "unseal the requested range of the sealed sector",
            actions: &[Proof(K::Unseal)],
            needs: &[O::Sector, O::UnsealRequest],
            produces: &[O::UnsealedPiece],
        },
        StateSpec {
            state: S::Unsealed,
            summary: "get the manager's destinations, deliver the piece to each (http(s), market, file, store) and report it done",
            actions: &[
                Manager(M::AcquireUnsealDest),
                File(K::Upload),
                Manager(M::AchieveUnsealSector),
            ],
            needs: &[O::UnsealedPiece, O::UnsealRequest],
            produces: &[O::PieceUploaded],
        },
        StateSpec {
            state: S::Finished,
            summary: "the piece is delivered",
            actions: &[],
            needs: &[O::PieceUploaded],
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
        t(S::Empty, E::AllocatedUnsealSector, S::Allocated),
        t(S::Allocated, E::UnsealDone, S::Unsealed),
        t(S::Unsealed, E::UploadPieceDone, S::Finished),
    ],
};
