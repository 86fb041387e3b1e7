//! PersistanceSubmitted to ProofSubmitted: the interactive seed, the proof and its landing.

use std::time::Duration;

use base64::Engine as _;

use super::{call_failed, failed, missing, unexpected};
use crate::api::Outputs;
use crate::manager::wire::{Bytes, ProofOnChainInfo};
use crate::manager::{Call, Method, Reply};
use crate::plan::cursor::Outcome;
use crate::plan::{ManagerCall, Submission};
use crate::sector::FailureLevel;
use crate::task::{Progress, Turn};

/// The proof in status, decoded; none when absent or not base64 (a hand-edited status).
pub fn proof_bytes(outputs: &Outputs) -> Option<Vec<u8>> {
    let data = outputs.proof.as_ref()?.data.as_ref()?;
    base64::engine::general_purpose::STANDARD.decode(data).ok()
}

impl Turn<'_> {
    pub(super) fn prove(&mut self, call: ManagerCall) -> Progress {
        let sector = match self.need_sector() {
            Ok(sector) => sector,
            Err(missing) => return missing,
        };
        match call {
            ManagerCall::WaitSeed => {
                let call = Call::WaitSeed {
                    sector,
                    proof_type: self.proof_type(),
                };
                let reply = match self.answer(&call) {
                    Ok(reply) => reply,
                    Err(ask) => return ask,
                };
                Progress::Outcome(match reply {
                    Ok(Reply::Seed(resp)) => match resp.seed {
                        Some(seed) => {
                            let outputs = self.status.outputs.get_or_insert_with(Default::default);
                            outputs.seed = Some(super::randomness(&seed.seed.0, seed.epoch));
                            Outcome::Done
                        }
                        None if resp.should_wait => {
                            Outcome::NotYet(Duration::from_secs(resp.delay.clamp(1, 3600) as u64))
                        }
                        None => failed(
                            FailureLevel::Temporary,
                            "the manager gave no seed and no reason to wait",
                        ),
                    },
                    Ok(other) => unexpected(Method::WaitSeed, &other),
                    Err(failure) => call_failed(failure),
                })
            }
            ManagerCall::SubmitProof => {
                let outputs = self.status.outputs.clone().unwrap_or_default();
                let Some(bytes) = proof_bytes(&outputs) else {
                    return Progress::Outcome(missing("proof"));
                };
                let request = Call::SubmitProof {
                    sector,
                    proof: ProofOnChainInfo {
                        proof: Bytes(bytes),
                    },
                    reset: false,
                };
                self.submission(Submission::SubmitProof, request)
            }
            _ => self.poll(Call::PollProofState(sector)),
        }
    }
}
