//! TreeDBuilt to PCSubmitted: the ticket, the PreCommit and its landing, and the guard that keeps
//! PC1, PC2 and the PreCommit from working with a ticket the chain will no longer take.

use std::time::Duration;

use super::{call_failed, missing, sector_id, unexpected};
use crate::api::{PlanKind, Randomness, State};
use crate::manager::wire::{AllocatedSector, PreCommitOnChainInfo, Ticket};
use crate::manager::{Call, Method, Reply};
use crate::plan::cursor::Outcome;
use crate::plan::{Action, ManagerCall, Output, StepKind, Submission};
use crate::sector::{CommD, CommR};
use crate::task::{Effect, Progress, Question, Turn, Wake};

/// When a PreCommit ticket is too old to use: the chain rejects a PreCommit whose ticket epoch is
/// more than `max_age` epochs below the head (2880 + 900 on mainnet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TicketRules {
    /// Epochs below the head a ticket is drawn at (SealRandomnessLookback, 900).
    pub lookback: i64,
    pub max_age: i64,
    /// Give up on a ticket this many epochs before it expires, so the work done with it can still
    /// be submitted in time.
    pub margin: i64,
    pub block_time: Duration,
}

impl Default for TicketRules {
    fn default() -> Self {
        Self {
            lookback: 900,
            max_age: 2880 + 900,
            margin: 300,
            block_time: Duration::from_secs(30),
        }
    }
}

impl TicketRules {
    /// Whether a ticket assigned `elapsed` ago is too old for the work still to come. The head
    /// is estimated from wall time: the operator has no chain of its own.
    pub fn too_old(&self, elapsed: Duration) -> bool {
        let epochs = (elapsed.as_millis() / self.block_time.as_millis().max(1)) as i64;
        self.lookback + epochs > self.max_age - self.margin
    }
}

/// What the ticket guard does with a task whose ticket is about to expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TicketExpiry {
    /// Go back to the state that draws the ticket for a new one (PC1 and PC2 are redone).
    Rewind,
    /// End the task.
    Abort,
}

/// Work that a too-old ticket would waste: PC1, PC2 and the PreCommit of a sealer.
fn uses_ticket(plan: PlanKind, action: Action) -> bool {
    plan == PlanKind::Sealer
        && matches!(
            action,
            Action::Proof(StepKind::Pc1 | StepKind::Pc2)
                | Action::Manager(ManagerCall::SubmitPreCommit)
        )
}

fn precommit_info(comm_r: CommR, comm_d: CommD, ticket: &Randomness) -> PreCommitOnChainInfo {
    PreCommitOnChainInfo {
        comm_r: comm_r.bytes(),
        comm_d: comm_d.bytes(),
        ticket: Ticket {
            ticket: crate::manager::wire::Randomness(ticket.value.0),
            epoch: ticket.epoch,
        },
        deals: vec![],
    }
}

/// The Event reason when a ticket is too old for the work left: the task rewinds for a new one
/// or aborts (--ticket-expiry).
pub const TICKET_EXPIRING: &str = "TicketExpiring";

impl Turn<'_> {
    pub(super) fn precommit(&mut self, call: ManagerCall) -> Progress {
        let sector = match self.need_sector() {
            Ok(sector) => sector,
            Err(missing) => return missing,
        };
        match call {
            ManagerCall::AssignTicket => {
                let call = Call::AssignTicket(sector);
                let reply = match self.answer(&call) {
                    Ok(reply) => reply,
                    Err(ask) => return ask,
                };
                Progress::Outcome(match reply {
                    Ok(Reply::Ticket(ticket)) => {
                        let assigned_at = Some(self.time());
                        let outputs = self.status.outputs.get_or_insert_with(Default::default);
                        outputs.ticket = Some(Randomness {
                            assigned_at,
                            ..super::randomness(&ticket.ticket.0, ticket.epoch)
                        });
                        Outcome::Done
                    }
                    Ok(other) => unexpected(Method::AssignTicket, &other),
                    Err(failure) => call_failed(failure),
                })
            }
            ManagerCall::SubmitPreCommit => {
                let outputs = self.status.outputs.clone().unwrap_or_default();
                let (Some(comm_r), Some(comm_d), Some(ticket)) =
                    (outputs.comm_r, outputs.comm_d, &outputs.ticket)
                else {
                    return Progress::Outcome(missing("CommR, CommD and ticket"));
                };
                let info = precommit_info(comm_r, comm_d, ticket);
                let request = Call::SubmitPreCommit {
                    sector: AllocatedSector {
                        id: sector,
                        proof_type: self.proof_type(),
                    },
                    info,
                    reset: false,
                };
                self.submission(Submission::SubmitPreCommit, request)
            }
            _ => self.poll(Call::PollPreCommitState(sector)),
        }
    }

    /// Stops work that a too-old ticket would waste: some when the ticket has expired (or the
    /// manager must first be asked whether the PreCommit already reached it).
    pub(in crate::task) fn ticket_guard(&mut self, action: Action) -> Option<Wake> {
        let plan = self.task.spec.plan();
        if !uses_ticket(plan.kind, action) {
            return None;
        }
        // The ticket is drawn by the work of the state that produces it; its age counts from
        // when the manager handed it out, recorded with it. A task written by an older operator
        // has only its history (the state entered after the draw), which keeps the last
        // HISTORY_LIMIT states.
        let producer = plan.producer_of(Output::Ticket)?;
        let recorded = self
            .status
            .outputs
            .as_ref()
            .and_then(|o| o.ticket.as_ref())
            .and_then(|t| t.assigned_at.as_ref())
            .map(|t| t.0.as_second());
        let assigned = match recorded {
            Some(at) => at,
            None => {
                let drawn = plan.transitions_from(producer).next()?.to;
                let entry = self
                    .status
                    .history
                    .iter()
                    .rev()
                    .find(|h| h.state == drawn)?;
                entry.entered.0.as_second()
            }
        };
        let elapsed = (self.now - assigned).max(0) as u64;
        if !self.rules.tickets.too_old(Duration::from_secs(elapsed)) {
            return None;
        }
        if let Action::Manager(call) = action
            && Submission::of(call).is_some_and(|s| self.status.submitting == Some(s))
            && let Some(sector) = self.sector()
        {
            // The operator stopped mid-submission. If the PreCommit reached the manager, a new
            // ticket would seal a different commR that it refuses as Mismatched: carry on (the
            // call then finds the submission). An unanswered question also carries on: the
            // call reports the manager's error.
            if self.answered(Method::SubmitPreCommit, false).is_some() {
                return None;
            }
            let poll = Call::PollPreCommitState(sector_id(sector));
            // Only a look: the submission reads the same answer next.
            // No live message (Failed: never arrived, or failed on chain) is rewound; the new
            // PreCommit then goes out with reset, replacing whatever the manager holds.
            match self.answered(Method::PollPreCommitState, false) {
                None => return Some(Wake::Ask(Question::Manager(Box::new(poll)))),
                Some(reply)
                    if matches!(
                        super::submit::manager_holds(Method::PollPreCommitState, &reply),
                        Ok(false)
                    ) => {}
                Some(_) => return None,
            }
        }
        Some(self.ticket_expired(producer))
    }

    fn ticket_expired(&mut self, producer: State) -> Wake {
        self.effects.push(Effect::TicketExpiring);
        let state = self.position().state;
        let policy = self.rules.on_ticket_expiry;
        let message = format!(
            "the ticket is too close to expiry for the work left in {state} (policy: {policy:?})"
        );
        self.event(true, TICKET_EXPIRING, message.clone());
        match policy {
            TicketExpiry::Rewind => {
                self.delete_step_pod();
                if let Some(outputs) = self.status.outputs.as_mut() {
                    outputs.ticket = None;
                }
                self.status.attempt += 1;
                self.log(
                    false,
                    format!("ticket expiring in {state}: back to {producer} for a new one"),
                );
                self.enter(None, producer);
                Wake::After(Duration::from_millis(10))
            }
            TicketExpiry::Abort => {
                self.abort(&message);
                self.ended()
            }
        }
    }
}
