//! Instant steps, for benchmarks only (`dev-node --instant-steps`, with `dev-manager
//! --unverified-proofs`): a step pod does not run; it succeeds at once with a well-formed result for
//! its request, so a benchmark measures the operator and the API server, not the proofs. Never
//! used by a test: the tests run every step for real.

use sha2::{Digest, Sha256};

use crate::sector::{CommD, CommR};
use crate::step::{C1_OUTPUT_ROLE, PROOF_ROLE};
use crate::step::{FileDigest, NamedFile, StepOutputs, StepRequest, StepResult};

/// What `request`'s step would have answered: every commitment, file and proof a step of any kind
/// gives, derived from the sector (never zero, the same for every run of one sector).
pub fn result(request: &StepRequest) -> StepResult {
    let seed = |what: &str| -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(what.as_bytes());
        hash.update(request.sector.miner.to_le_bytes());
        hash.update(request.sector.number.to_le_bytes());
        let mut bytes: [u8; 32] = hash.finalize().into();
        // Field elements: the top two bits clear, as a real commitment's are.
        bytes[31] &= 0x3f;
        bytes
    };
    let file = |role: &str| NamedFile {
        role: role.to_string(),
        file: FileDigest {
            // C1's output goes where the real C1 writes it: the shared directory for a C2 on
            // another node.
            path: match &request.share {
                Some(share) if role == C1_OUTPUT_ROLE => share.join("c1.json"),
                _ => request.workspace.join(role),
            },
            sha256: hex::encode(seed(role)),
            size: 192,
        },
    };
    let proof = base64_of(&seed("proof").repeat(6));
    StepResult {
        version: 1,
        step: request.step,
        sector: request.sector,
        failure: None,
        outputs: StepOutputs {
            comm_d: Some(CommD::from_bytes(seed("comm_d"))),
            comm_r: Some(CommR::from_bytes(seed("comm_r"))),
            files: vec![file(C1_OUTPUT_ROLE), file(PROOF_ROLE)],
            proof: Some(proof),
            ..Default::default()
        },
        reused: false,
        duration_ms: 0,
        in_log: None,
        then: request
            .then
            .iter()
            .map(|&step| {
                result(&StepRequest {
                    step,
                    then: Vec::new(),
                    ..request.clone()
                })
            })
            .collect(),
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
