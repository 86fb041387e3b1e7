//! Snap-up's manager calls: where the CC sector's files are, and the upgrade proof.

use super::missing;
use crate::manager::Call;
use crate::manager::wire::{Bytes, CidJson, SnapUpOnChainInfo};
use crate::plan::{ManagerCall, Submission};
use crate::task::{Progress, Turn};

impl Turn<'_> {
    pub(super) fn snap(&mut self, call: ManagerCall) -> Progress {
        if call == ManagerCall::StoreBasicInfo {
            if self.committed().is_none() {
                return Progress::Outcome(missing("committed sector to upgrade"));
            }
            return self.resolve_store();
        }
        let sector = match self.need_sector() {
            Ok(sector) => sector,
            Err(missing) => return missing,
        };
        let outputs = self.status.outputs.clone().unwrap_or_default();
        let (Some(comm_r), Some(comm_d), Some(store)) =
            (&outputs.comm_r, &outputs.comm_d, &outputs.store)
        else {
            return Progress::Outcome(missing("new CommR, CommD and persist store"));
        };
        let Some(proof) = super::prove::proof_bytes(&outputs) else {
            return Progress::Outcome(missing("upgrade proof"));
        };
        let info = SnapUpOnChainInfo {
            comm_r: comm_r.bytes(),
            comm_d: comm_d.bytes(),
            access_instance: store.name.clone(),
            // The manager compares these with its list, index by index: every piece it listed,
            // fillers included, in its order.
            pieces: outputs
                .pieces
                .iter()
                .map(|p| CidJson { cid: p.cid.clone() })
                .collect(),
            proof: Bytes(proof),
        };
        self.submission(
            Submission::SubmitSnapUpProof,
            Call::SubmitSnapUpProof { sector, info },
        )
    }
}
