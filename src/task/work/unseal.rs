//! Unsealed: where the piece goes and telling the manager it went; and what an aborted unseal
//! hands back.

use super::allocate::unseal_piece;
use super::{call_failed, missing, unexpected};
use crate::api::PlanKind;
use crate::manager::{Call, Method, Reply};
use crate::plan::ManagerCall;
use crate::plan::cursor::Outcome;
use crate::task::{Step, Turn};

/// What an aborted unseal hands back: its request, as failed (the sector itself is fine). The
/// sector's own report (ReportFinalized for an unseal, ReportAborted otherwise) comes when the
/// task has ended (see work::report).
pub(crate) fn hand_back(turn: &Turn<'_>, reason: &str) -> Option<Call> {
    let sector = turn.sector_id()?;
    match (&turn.task.spec.unseal, turn.task.spec.plan) {
        (Some(unseal), PlanKind::Unseal) => turn.committed().map(|_| Call::AchieveUnsealSector {
            sector,
            piece: unseal_piece(unseal),
            error: format!("aborted: {reason}"),
        }),
        _ => None,
    }
}

impl Turn<'_> {
    pub(super) fn unseal(&mut self, call: ManagerCall) -> Step {
        let Some(unseal) = self.task.spec.unseal.clone() else {
            return Step::Outcome(missing("unseal request (spec.unseal)"));
        };
        let sector = match self.need_sector() {
            Ok(sector) => sector,
            Err(missing) => return missing,
        };
        let piece = unseal_piece(&unseal);
        if call == ManagerCall::AcquireUnsealDest {
            let call = Call::AcquireUnsealDest { sector, piece };
            let reply = match self.answer(&call) {
                Ok(reply) => reply,
                Err(ask) => return ask,
            };
            return Step::Outcome(match reply {
                Ok(Reply::Destinations(destinations)) => {
                    if !destinations.is_empty() && !destinations.contains(&unseal.destination) {
                        self.log(
                            false,
                            format!(
                                "the manager also lists {destinations:?}; the piece goes to \
                                 spec.unseal.destination {}",
                                unseal.destination
                            ),
                        );
                    }
                    Outcome::Done
                }
                Ok(other) => unexpected(Method::AcquireUnsealDest, &other),
                Err(failure) => call_failed(failure),
            });
        }
        let call = Call::AchieveUnsealSector {
            sector,
            piece,
            error: String::new(),
        };
        let reply = match self.answer(&call) {
            Ok(reply) => reply,
            Err(ask) => return ask,
        };
        Step::Outcome(match reply {
            Ok(_) => Outcome::Done,
            Err(failure) => call_failed(failure),
        })
    }
}
