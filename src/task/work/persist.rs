//! PCLanded and Persisted (and snapup's persist states): space in a persist store, then telling
//! the manager where the sector's files are.

use super::{call_failed, missing, unexpected};
use crate::api::StoreRef;
use crate::manager::{Call, Method, Reply};
use crate::plan::ManagerCall;
use crate::plan::cursor::Outcome;
use crate::task::{Step, Turn};

impl Turn<'_> {
    pub(super) fn persist(&mut self, call: ManagerCall) -> Step {
        let sector = match self.need_sector() {
            Ok(sector) => sector,
            Err(missing) => return missing,
        };
        let store = self.status.outputs.as_ref().and_then(|o| o.store.clone());
        if call == ManagerCall::StoreReserveSpace {
            if store.is_some() {
                return Step::Outcome(Outcome::Done);
            }
            let call = Call::StoreReserveSpace {
                sector,
                size: self.task.spec.sector_size.bytes(),
                candidates: self.rules.store_candidates.clone(),
            };
            let reply = match self.answer(&call) {
                Ok(reply) => reply,
                Err(ask) => return ask,
            };
            return Step::Outcome(match reply {
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
            return Step::Outcome(missing("persist store"));
        };
        let call = Call::SubmitPersistedEx {
            sector,
            instance: store.name,
            upgrade: false,
        };
        let reply = match self.answer(&call) {
            Ok(reply) => reply,
            Err(ask) => return ask,
        };
        Step::Outcome(match reply {
            Ok(Reply::Persisted(true)) => Outcome::Done,
            Ok(Reply::Persisted(false)) => Outcome::FilesMissed,
            Ok(other) => unexpected(Method::SubmitPersistedEx, &other),
            Err(failure) => call_failed(failure),
        })
    }
}
