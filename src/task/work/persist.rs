//! PCLanded and Persisted (and snapup's persist states): space in a persist store, then telling
//! the manager where the sector's files are.

use super::{call_failed, missing, unexpected};
use crate::api::{PlanKind, StoreRef};
use crate::manager::{Call, Method, Reply};
use crate::plan::ManagerCall;
use crate::plan::cursor::Outcome;
use crate::task::{Progress, Turn};

/// The space to reserve for a sector's persisted files, sized as damocles-worker sizes it
/// (sealing/sealing_thread/planner/common/sealing.rs): the sealed replica and its cache take about
/// twice a small sector, and about 2 % more than a large one (32 GiB and up).
pub fn reserved_bytes(sector_bytes: u64) -> u64 {
    if sector_bytes < 32 << 30 {
        2 * sector_bytes
    } else {
        sector_bytes + sector_bytes / 50
    }
}

impl Turn<'_> {
    pub(super) fn persist(&mut self, call: ManagerCall) -> Progress {
        let sector = match self.need_sector() {
            Ok(sector) => sector,
            Err(missing) => return missing,
        };
        let store = self.status.outputs.as_ref().and_then(|o| o.store.clone());
        if call == ManagerCall::StoreReserveSpace {
            if store.is_some() {
                return Progress::Outcome(Outcome::Done);
            }
            let call = Call::StoreReserveSpace {
                sector,
                size: reserved_bytes(self.task.spec.sector_size.bytes()),
                candidates: self.rules.store_candidates.clone(),
            };
            let reply = match self.answer(&call) {
                Ok(reply) => reply,
                Err(ask) => return ask,
            };
            return Progress::Outcome(match reply {
                Ok(Reply::Store(Some(store))) => {
                    self.status
                        .outputs
                        .get_or_insert_with(Default::default)
                        .store = Some(StoreRef {
                        name: store.name,
                        path: store.path,
                    });
                    Outcome::Done
                }
                Ok(Reply::Store(None)) => Outcome::NotYet(self.rules.poll_interval),
                Ok(other) => unexpected(Method::StoreReserveSpace, &other),
                Err(failure) => call_failed(failure),
            });
        }
        let Some(store) = store else {
            return Progress::Outcome(missing("persist store"));
        };
        // A rebuilt upgraded sector is reported by its updated replica, as damocles-worker does.
        let upgrade = self.task.spec.plan == PlanKind::Rebuild && self.facts().upgraded;
        let call = Call::SubmitPersistedEx {
            sector,
            instance: store.name,
            upgrade,
        };
        let reply = match self.answer(&call) {
            Ok(reply) => reply,
            Err(ask) => return ask,
        };
        Progress::Outcome(match reply {
            Ok(Reply::Persisted(true)) => Outcome::Done,
            Ok(Reply::Persisted(false)) => Outcome::FilesMissed,
            Ok(other) => unexpected(Method::SubmitPersistedEx, &other),
            Err(failure) => call_failed(failure),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::reserved_bytes;

    #[test]
    fn space_is_reserved_as_damocles_worker_reserves_it() {
        assert_eq!(reserved_bytes(2048), 4096);
        assert_eq!(reserved_bytes(512 << 20), 1 << 30);
        assert_eq!(reserved_bytes(32 << 30), (32 << 30) + (32 << 30) / 50);
        assert_eq!(reserved_bytes(64 << 30), (64 << 30) + (64 << 30) / 50);
    }
}
