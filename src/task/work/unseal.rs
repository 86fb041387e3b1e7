//! Unsealed: where the piece goes and telling the manager it went; and what an aborted unseal
//! hands back.

use std::path::PathBuf;

use super::allocate::unseal_piece;
use super::{call_failed, failed, missing, unexpected};
use crate::api::PlanKind;
use crate::manager::{Call, Method, Reply};
use crate::plan::ManagerCall;
use crate::plan::cursor::Outcome;
use crate::sector::FailureLevel;
use crate::step::destination::{Destination, DestinationError, redact};
use crate::task::steps::destination_stores;
use crate::task::{Progress, Turn};

/// What an aborted unseal hands back: its request, as failed (the sector itself is fine). The
/// sector's own report (ReportFinalized for an unseal, ReportAborted otherwise) comes when the
/// task has ended (see work::report).
pub(crate) fn hand_back(turn: &Turn<'_>, reason: &str) -> Option<Call> {
    let sector = turn.sector_id()?;
    let taken = turn.status.outputs.as_ref()?.unseal.as_ref()?;
    match turn.task.spec.plan {
        PlanKind::Unseal => turn.committed().map(|_| Call::AchieveUnsealSector {
            sector,
            piece: unseal_piece(taken),
            error: format!("aborted: {reason}"),
        }),
        _ => None,
    }
}

/// What the operator lets an unseal deliver to: the stores it knows, whether a piece store is
/// set, and the admin's allowlists (profiles.allowedHosts, profiles.deliveryRoots).
pub struct DeliveryRules<'a> {
    pub stores: &'a [&'a str],
    pub piece_store: bool,
    pub allowed_hosts: &'a [String],
    pub delivery_roots: &'a [PathBuf],
}

/// Why the piece cannot go to `destinations` (the manager's list), checked before any byte
/// moves: an empty list (the worker would report success having delivered nothing), a scheme
/// damocles-worker does not deliver to, a store this task cannot mount, no piece store, or a
/// host or node path the admin did not allow.
pub fn undeliverable(destinations: &[String], rules: &DeliveryRules<'_>) -> Option<String> {
    let DeliveryRules {
        stores,
        piece_store,
        allowed_hosts,
        delivery_roots,
    } = *rules;
    if destinations.is_empty() {
        return Some(
            "the manager gave no destination for the piece (AcquireUnsealDest answered an empty \
             list): nothing would receive it"
                .to_string(),
        );
    }
    let problems: Vec<String> = destinations
        .iter()
        .filter_map(|text| {
            let reason = match Destination::parse(text) {
                Err(DestinationError { reason, .. }) => reason,
                Ok(Destination::Store { instance, .. }) if !stores.contains(&instance.as_str()) => {
                    format!(
                        "store {instance} is not one this task knows the path of (the \
                         sector's store or profiles.storePaths: {stores:?}); add it to \
                         storePaths"
                    )
                }
                Ok(Destination::PieceStore { .. }) if !piece_store => {
                    "no piece store is configured (profiles.pieceStore)".to_string()
                }
                Ok(destination) => destination.forbidden(allowed_hosts, delivery_roots)?,
            };
            Some(format!("{}: {reason}", redact(text)))
        })
        .collect();
    (!problems.is_empty()).then(|| {
        format!(
            "the piece cannot be delivered to the manager's destinations: {}",
            problems.join("; ")
        )
    })
}

impl Turn<'_> {
    pub(super) fn unseal(&mut self, call: ManagerCall) -> Progress {
        let Some(taken) = self.status.outputs.as_ref().and_then(|o| o.unseal.clone()) else {
            return Progress::Outcome(missing("unseal request (status.outputs.unseal)"));
        };
        let sector = match self.need_sector() {
            Ok(sector) => sector,
            Err(missing) => return missing,
        };
        let piece = unseal_piece(&taken);
        if call == ManagerCall::AcquireUnsealDest {
            let call = Call::AcquireUnsealDest { sector, piece };
            let reply = match self.answer(&call) {
                Ok(reply) => reply,
                Err(ask) => return ask,
            };
            return Progress::Outcome(match reply {
                Ok(Reply::Destinations(destinations)) => {
                    let stores = destination_stores(&self.status, &self.rules.profiles);
                    let names: Vec<&str> = stores.keys().map(String::as_str).collect();
                    let profiles = &self.rules.profiles;
                    let roots: Vec<PathBuf> =
                        profiles.delivery_roots.iter().map(PathBuf::from).collect();
                    let rules = DeliveryRules {
                        stores: &names,
                        piece_store: profiles.piece_store.is_some(),
                        allowed_hosts: &profiles.allowed_hosts,
                        delivery_roots: &roots,
                    };
                    if let Some(problem) = undeliverable(&destinations, &rules) {
                        return Progress::Outcome(failed(FailureLevel::Permanent, problem));
                    }
                    let recorded: Vec<String> = destinations.iter().map(|d| redact(d)).collect();
                    self.log(false, format!("the piece goes to {}", recorded.join(", ")));
                    if let Some(unseal) =
                        self.status.outputs.as_mut().and_then(|o| o.unseal.as_mut())
                    {
                        unseal.destinations = recorded;
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
        Progress::Outcome(match reply {
            Ok(_) => Outcome::Done,
            Err(failure) => call_failed(failure),
        })
    }
}
