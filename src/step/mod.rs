//! The step contract: what the executor (controller or local mode) hands `damocles-step`, and what it
//! gets back.
//!
//! A step is one process of `damocles-step run --request request.json`. The request names the step, the
//! sector and its proof type, the task's workspace directory and the persist store, and the inputs the
//! plan has gathered so far (ticket, seed, commitments, pieces, upstream files with their digests). The
//! result is one JSON document printed on stdout and written to the termination-message file, so a pod's
//! status carries it back to the controller. Large outputs (C1 output, proofs) stay files; the result
//! holds their path and sha256.
//!
//! Exit codes are the failure levels of damocles-worker (see [`ExitCode`]). These types compile without
//! the proofs stack: the operator builds requests and reads results with them.

pub mod destination;
pub mod workspace;

#[cfg(feature = "proofs")]
pub mod bench;
#[cfg(feature = "proofs")]
pub mod params;
#[cfg(feature = "proofs")]
pub mod proofs;
#[cfg(feature = "proofs")]
pub mod run;
#[cfg(feature = "proofs")]
pub mod stall;
#[cfg(feature = "proofs")]
mod steps;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::plan::StepKind;
pub use crate::sector::Bytes32;
use crate::sector::commitment::CidError;
use crate::sector::{CommD, CommR, FailureLevel, SectorRef, SectorSize};

/// The request schema this build writes and understands. A request with a higher version is refused
/// (permanent failure) rather than half-understood.
pub const REQUEST_VERSION: u32 = 4;

/// Where the result goes when the request does not say: Kubernetes' default termination-message path.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// The environment variable that carries the step request into a step pod
/// (`damocles-step run --request-env DAMOCLES_STEP_REQUEST`).
pub const REQUEST_ENV: &str = "DAMOCLES_STEP_REQUEST";

/// Kubernetes keeps at most this many bytes of a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// One step to run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepRequest {
    /// Schema version of this request; see [`REQUEST_VERSION`].
    pub version: u32,
    pub step: StepKind,
    pub sector: SectorRef,
    pub sector_size: SectorSize,
    /// Seal with a synthetic PoRep proof type (StackedDrg*V1_1_Feat_SyntheticPoRep).
    #[serde(default)]
    pub synthetic_po_rep: bool,
    /// The task's own workspace directory on the node (one per task).
    pub workspace: PathBuf,
    /// Root of the persist store (damocles layout: sealed/, cache/, update/, update-cache/).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist: Option<PathBuf>,
    /// A directory on storage every node mounts (under the persist store), for outputs that a
    /// step on another node reads: C1 writes its output here when C2 may run on any node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<PathBuf>,
    /// Where to write the result for the pod status; defaults to `/dev/termination-log`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_path: Option<PathBuf>,
    #[serde(default)]
    pub inputs: StepInputs,
    /// Steps run after this one in the same run, on its workspace and with its inputs, while each
    /// succeeds (tree-d after add-piece: it reads what add-piece wrote). Their results come in
    /// [`StepResult::then`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<StepKind>,
}

/// What the plan has gathered for the step. Each step reads the fields it needs and reports a missing
/// one as a permanent failure naming it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepInputs {
    /// Deal pieces in sector order; empty means a pledge (committed-capacity) sector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<PieceInput>,
    /// PreCommit randomness (32 bytes, hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Bytes32>,
    /// Interactive seed for C1 (32 bytes, hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Bytes32>,
    /// Unsealed commitment (CID, baga6ea4sea...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_d: Option<CommD>,
    /// Sealed commitment (CID, bagboea4b5abc...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_r: Option<CommR>,
    /// C1's output file, input to C2 (travels through the persist store when C2 runs elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c1_output: Option<FileDigest>,
    /// A proof file to check (verify-seal, verify-snap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<FileDigest>,
    /// The committed-capacity sector a snapup upgrades (or an upgraded sector's original replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cc_sector: Option<SealedFiles>,
    /// The sealed files to unseal from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedFiles>,
    /// The byte range to recover (unseal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseal: Option<UnsealRange>,
    /// Where upload delivers the unsealed piece: every destination the manager gave
    /// (see [`destination::Destination`]), with any market token redacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
    /// The manager's piece store URL (`store:///<cid>` destinations PUT `<pieceStore><cid>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub piece_store: Option<String>,
    /// Local piece directories add-piece looks in first for a deal piece, `<dir>/<cid>` then
    /// `<dir>/<cid>.car`, before its source (damocles-worker's `local_pieces_dirs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub piece_dirs: Vec<PathBuf>,
    /// Persist stores by instance name, for `store://<instance>/<path>` destinations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stores: BTreeMap<String, PathBuf>,
    /// Hosts the step may reach over http(s) (profiles.allowedHosts with the manager's and the
    /// piece store's); see [`destination::host_allowed`]. Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Directories `file://` destinations may be written under (profiles.deliveryRoots).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivery_roots: Vec<PathBuf>,
}

/// The file role of C1's output (read by C2).
pub const C1_OUTPUT_ROLE: &str = "c1-output";
/// The file role of a proof (C2's, snap-prove's; read by the verifiers and submitted).
pub const PROOF_ROLE: &str = "proof";

impl StepInputs {
    /// Takes what a successful step produced into the inputs of the steps after it: the one
    /// mapping from step outputs to step inputs (the task core, the bench and the tests use it).
    pub fn absorb(&mut self, produced: &StepOutputs) {
        if produced.comm_d.is_some() {
            self.comm_d = produced.comm_d;
        }
        if produced.comm_r.is_some() {
            self.comm_r = produced.comm_r;
        }
        if let Some(file) = produced.file(C1_OUTPUT_ROLE) {
            self.c1_output = Some(file.clone());
        }
        if let Some(file) = produced.file(PROOF_ROLE) {
            self.proof = Some(file.clone());
        }
    }

    /// The inputs `step` reads, out of everything gathered. Steps record a digest of their inputs in
    /// their completion marker, so handing a step more than it reads would make a rerun recompute
    /// for nothing.
    pub fn select(&self, step: StepKind) -> StepInputs {
        let all = self;
        match step {
            StepKind::AddPiece => StepInputs {
                pieces: all.pieces.clone(),
                piece_dirs: all.piece_dirs.clone(),
                allowed_hosts: all.allowed_hosts.clone(),
                ..Default::default()
            },
            StepKind::Pc1 => StepInputs {
                ticket: all.ticket,
                ..Default::default()
            },
            StepKind::SyntheticProofs | StepKind::C1 => StepInputs {
                ticket: all.ticket,
                seed: (step == StepKind::C1).then_some(all.seed).flatten(),
                comm_d: all.comm_d,
                comm_r: all.comm_r,
                ..Default::default()
            },
            StepKind::C2 => StepInputs {
                c1_output: all.c1_output.clone(),
                ..Default::default()
            },
            StepKind::VerifySeal => StepInputs {
                ticket: all.ticket,
                seed: all.seed,
                comm_d: all.comm_d,
                comm_r: all.comm_r,
                proof: all.proof.clone(),
                ..Default::default()
            },
            _ => all.clone(),
        }
    }
}

/// A sealed replica and its cache directory, with the commitment they were sealed to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SealedFiles {
    pub sealed: PathBuf,
    pub cache: PathBuf,
    /// CommR of the replica (CID); needed to upgrade it (snapup), not to unseal it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_r: Option<CommR>,
    /// CommD of the replica (CID); needed to unseal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_d: Option<CommD>,
    /// The ticket it was sealed with; needed to unseal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Bytes32>,
}

/// A piece of deal data to add to the sector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PieceInput {
    /// Expected piece CID (CommP); checked against the bytes read. Omitted for a pledge piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// Padded size in bytes (a power of two, at least 128).
    pub size: u64,
    /// store://<path in the persist store>, file://<path> or http(s)://<url>; omitted: zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A deal's payload: exactly this many bytes are read from the source and zero-padded to the
    /// piece (as damocles-worker reads a piece store); omitted: the source is the whole piece,
    /// zero-filled when shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
}

/// Unpadded byte range of a sector.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnsealRange {
    pub offset: u64,
    pub size: u64,
}

/// A file and the sha256 it must have.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileDigest {
    pub path: PathBuf,
    /// Lower-case hex sha256 of the file's bytes.
    pub sha256: String,
    pub size: u64,
}

/// What one run of a step reports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    pub version: u32,
    pub step: StepKind,
    pub sector: SectorRef,
    /// `None` when the step succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<StepFailure>,
    #[serde(default)]
    pub outputs: StepOutputs,
    /// The step had already completed with the same inputs; its recorded outputs are returned.
    #[serde(default)]
    pub reused: bool,
    #[serde(default)]
    pub duration_ms: u64,
    /// Set in a termination message too small for the whole result (a snap proof at 512 MiB
    /// and up is 3072 bytes, 4096 in base64): the whole result is the step's line of standard
    /// output, which the operator reads from the pod's log and checks against this digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_log: Option<LoggedResult>,
    /// The results of the request's `then` steps, in order; the first that failed is the last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<StepResult>,
}

/// The line of a step's output that holds its whole result: its sha256 (hex) and length.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LoggedResult {
    pub sha256: String,
    pub size: u64,
}

impl LoggedResult {
    pub fn of(line: &str) -> Self {
        use sha2::Digest;
        LoggedResult {
            sha256: hex::encode(sha2::Sha256::digest(line.as_bytes())),
            size: line.len() as u64,
        }
    }

    /// The result whose line this describes, among the lines of a pod's log (the last such).
    pub fn find_in(&self, log: &str) -> Result<StepResult, String> {
        let line = log
            .lines()
            .rev()
            .map(|line| line.trim_end_matches('\r'))
            .find(|line| line.len() as u64 == self.size && LoggedResult::of(line) == *self)
            .ok_or_else(|| {
                format!(
                    "the step's result ({} bytes, sha256 {}) is not in its log's last lines",
                    self.size, self.sha256
                )
            })?;
        let result: StepResult = serde_json::from_str(line)
            .map_err(|e| format!("the step's result in its log cannot be read: {e}"))?;
        if result.in_log.is_some() {
            return Err("the step's result in its log points to the log again".into());
        }
        Ok(result)
    }
}

impl StepResult {
    pub fn exit_code(&self) -> ExitCode {
        match &self.failure {
            None => ExitCode::Ok,
            Some(failure) => ExitCode::from(failure.level),
        }
    }

    /// The whole result, as the step prints it on its standard output (one line).
    pub fn output_line(&self) -> String {
        serde_json::to_string(self).expect("results serialize")
    }

    /// The result as the termination message: JSON within Kubernetes' 4096-byte limit. The failure
    /// message is shortened first. A success too big for it drops what is also in a file (the
    /// piece list is `outputs/pieces.json`, listed with its digest); if it still does not fit,
    /// the message says where the whole result is: the step's output line
    /// ([`StepResult::output_line`]), by its digest.
    pub fn termination_message(&self) -> String {
        self.termination_message_within(TERMINATION_MESSAGE_LIMIT)
    }

    /// As [`StepResult::termination_message`], within `limit` bytes (at most Kubernetes' 4096;
    /// tests lower it to send small results through the log).
    pub fn termination_message_within(&self, limit: usize) -> String {
        let limit = limit.min(TERMINATION_MESSAGE_LIMIT);
        let mut result = self.clone();
        let mut text = serde_json::to_string(&result).expect("results serialize");
        if text.len() > limit && result.failure.is_none() {
            result.outputs.pieces.clear();
            result.outputs.delivered.clear();
            text = serde_json::to_string(&result).expect("results serialize");
            if text.len() > limit {
                result.outputs = StepOutputs::default();
                result.then.clear();
                result.in_log = Some(LoggedResult::of(&self.output_line()));
                text = serde_json::to_string(&result).expect("results serialize");
            }
        }
        while text.len() > limit {
            let Some(failure) = result.failure.as_mut() else {
                break;
            };
            let over = text.len() - limit;
            let keep = failure.message.len().saturating_sub(over + 16);
            let cut = crate::text::prefix(&failure.message, keep).len();
            failure.message.truncate(cut);
            failure.message.push_str(" [truncated]");
            text = serde_json::to_string(&result).expect("results serialize");
            if keep == 0 {
                break;
            }
        }
        text
    }
}

/// Why a step failed and how bad it is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepFailure {
    pub level: FailureLevel,
    pub message: String,
}

/// What a step produced. Each step fills the fields it makes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepOutputs {
    /// Pieces as added, with their CIDs (add-piece).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<PieceOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_d: Option<CommD>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_r: Option<CommR>,
    /// Files the step wrote, by role ("sealed", "c1-output", "proof", "unsealed-piece"...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<NamedFile>,
    /// Verify steps: whether the proof holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// Upload: where the bytes went, in the order delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered: Vec<String>,
    /// C2 and snap-prove: the proof itself (base64), so the operator can submit it without reading
    /// the node's files. PoRep proofs are at most 1920 bytes, well inside the termination message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

impl StepOutputs {
    pub fn file(&self, role: &str) -> Option<&FileDigest> {
        self.files.iter().find(|f| f.role == role).map(|f| &f.file)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PieceOutput {
    pub cid: String,
    /// Padded size in bytes.
    pub size: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamedFile {
    pub role: String,
    #[serde(flatten)]
    pub file: FileDigest,
}

/// Process exit codes of `damocles-step`, one per failure level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    /// The command line itself was wrong (clap's convention); nothing ran.
    Usage = 2,
    Temporary = 10,
    Permanent = 20,
    Critical = 30,
    Abort = 40,
}

impl From<FailureLevel> for ExitCode {
    fn from(level: FailureLevel) -> Self {
        match level {
            FailureLevel::Temporary => ExitCode::Temporary,
            FailureLevel::Permanent => ExitCode::Permanent,
            FailureLevel::Critical => ExitCode::Critical,
            FailureLevel::Abort => ExitCode::Abort,
        }
    }
}

impl ExitCode {
    /// The failure level an exit code stands for, as the executor reads a finished step process.
    /// An exit code the contract does not define (a crash, a signal) is temporary: rerun the step.
    pub fn level_of(code: i32) -> Option<FailureLevel> {
        match code {
            0 => None,
            20 => Some(FailureLevel::Permanent),
            30 => Some(FailureLevel::Critical),
            40 => Some(FailureLevel::Abort),
            _ => Some(FailureLevel::Temporary),
        }
    }
}

/// A step failure inside `damocles-step`, carrying its level.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub level: FailureLevel,
    pub message: String,
}

impl From<CidError> for StepError {
    fn from(err: CidError) -> Self {
        Self::permanent(err.message)
    }
}

impl StepError {
    pub fn temporary(message: impl Into<String>) -> Self {
        Self {
            level: FailureLevel::Temporary,
            message: message.into(),
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            level: FailureLevel::Permanent,
            message: message.into(),
        }
    }
    pub fn critical(message: impl Into<String>) -> Self {
        Self {
            level: FailureLevel::Critical,
            message: message.into(),
        }
    }
}

/// Reads a request, refusing newer schema versions before looking at the rest, so an old step image
/// given a new request says so instead of a confusing field error.
pub fn parse_request(text: &str) -> Result<StepRequest, StepError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| StepError::permanent(format!("the step request is not JSON: {e}")))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        None => {
            return Err(StepError::permanent(
                "the step request has no numeric \"version\" field",
            ));
        }
        Some(version) if version > u64::from(REQUEST_VERSION) => {
            return Err(StepError::permanent(format!(
                "the step request has schema version {version}, newer than this damocles-step \
                 understands ({REQUEST_VERSION}); run a damocles-step image as new as the operator"
            )));
        }
        Some(_) => {}
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        StepError::permanent(format!("bad step request at {path}: {}", e.into_inner()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_json() -> serde_json::Value {
        serde_json::json!({
            "version": 1,
            "step": "pc1",
            "sector": {"miner": 1000, "number": 7},
            "sectorSize": "2KiB",
            "workspace": "/ws/t1",
            "inputs": {"ticket": "00".repeat(32)}
        })
    }

    #[test]
    fn parses_a_request() {
        let request = parse_request(&request_json().to_string()).unwrap();
        assert_eq!(request.step, StepKind::Pc1);
        assert_eq!(request.inputs.ticket, Some(Bytes32([0; 32])));
        let again: StepRequest =
            serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
        assert_eq!(again, request);
    }

    #[test]
    fn refuses_newer_schema_versions_by_name() {
        let mut json = request_json();
        let newer = REQUEST_VERSION + 1;
        json["version"] = newer.into();
        json["futureField"] = true.into();
        let err = parse_request(&json.to_string()).unwrap_err();
        assert_eq!(err.level, FailureLevel::Permanent);
        assert!(
            err.message.contains(&format!("schema version {newer}")),
            "{}",
            err.message
        );
    }

    #[test]
    fn names_the_bad_field() {
        let mut json = request_json();
        json["inputs"]["ticket"] = "abcd".into();
        let err = parse_request(&json.to_string()).unwrap_err();
        assert!(err.message.contains("inputs.ticket"), "{}", err.message);
        assert!(
            err.message.contains("2 bytes, expected 32"),
            "{}",
            err.message
        );

        let mut json = request_json();
        json["sectorSize"] = "4KiB".into();
        let err = parse_request(&json.to_string()).unwrap_err();
        assert!(err.message.contains("sectorSize"), "{}", err.message);
    }

    #[test]
    fn termination_message_fits_the_kubernetes_limit() {
        let result = StepResult {
            version: REQUEST_VERSION,
            step: StepKind::C2,
            sector: SectorRef {
                miner: 1000,
                number: 1,
            },
            failure: Some(StepFailure {
                level: FailureLevel::Temporary,
                message: "é".repeat(5000),
            }),
            outputs: StepOutputs::default(),
            reused: false,
            duration_ms: 1,
            in_log: None,
            then: Vec::new(),
        };
        let text = result.termination_message();
        assert!(text.len() <= TERMINATION_MESSAGE_LIMIT, "{}", text.len());
        let back: StepResult = serde_json::from_str(&text).unwrap();
        assert!(back.failure.unwrap().message.ends_with("[truncated]"));
        assert_eq!(result.exit_code(), ExitCode::Temporary);

        // A success with a long piece list drops it (it is in pieces.json) and still succeeds;
        // one that cannot fit (a proof over 4 KiB) is sent as a permanent failure saying so.
        let mut many = result.clone();
        many.failure = None;
        many.outputs.pieces = (0..100)
            .map(|i| PieceOutput {
                cid: format!("baga6ea4seaq{i:0>50}"),
                size: 128,
            })
            .collect();
        let text = many.termination_message();
        assert!(text.len() <= TERMINATION_MESSAGE_LIMIT, "{}", text.len());
        let back: StepResult = serde_json::from_str(&text).unwrap();
        assert!(back.failure.is_none() && back.outputs.pieces.is_empty());
    }

    /// A snap proof at 512 MiB and up (16 partitions of 192 bytes: 4096 in base64) cannot travel
    /// in the termination message: the message names the output line by its digest, and the
    /// result read back from a log holding that line is the whole result, proof intact.
    #[test]
    fn a_result_over_the_termination_message_travels_in_the_log_with_its_digest() {
        use base64::Engine;
        let proof: Vec<u8> = (0..16 * 192).map(|i| (i * 7 + 3) as u8).collect();
        let result = StepResult {
            version: REQUEST_VERSION,
            step: StepKind::SnapProve,
            sector: SectorRef {
                miner: 1000,
                number: 1,
            },
            failure: None,
            outputs: StepOutputs {
                proof: Some(base64::engine::general_purpose::STANDARD.encode(&proof)),
                ..Default::default()
            },
            reused: false,
            duration_ms: 1,
            in_log: None,
            then: Vec::new(),
        };
        let line = result.output_line();
        assert!(line.len() > TERMINATION_MESSAGE_LIMIT, "{}", line.len());
        let message = result.termination_message();
        assert!(message.len() <= TERMINATION_MESSAGE_LIMIT);
        let sent: StepResult = serde_json::from_str(&message).unwrap();
        assert_eq!(sent.exit_code(), ExitCode::Ok);
        let logged = sent.in_log.unwrap();
        let log = format!("INFO starting snap-prove\n{line}\nINFO done\n");
        let back = logged.find_in(&log).unwrap();
        assert_eq!(back, result, "the whole result, proof intact");
        let tampered = log.replace("\"proof\":\"", "\"proof\":\"B");
        assert!(
            logged.find_in(&tampered).is_err(),
            "a changed line is refused"
        );
        assert!(logged.find_in("").unwrap_err().contains("not in its log"));
        // At the limit exactly a result still goes in the message; a byte over, through the log.
        let mut small = result.clone();
        small.outputs.proof = Some(base64::engine::general_purpose::STANDARD.encode(&proof[..192]));
        let line = small.output_line();
        assert_eq!(small.termination_message_within(line.len()), line);
        let over: StepResult =
            serde_json::from_str(&small.termination_message_within(line.len() - 1)).unwrap();
        assert_eq!(over.in_log, Some(LoggedResult::of(&line)));
        assert_eq!(over.outputs, StepOutputs::default());
    }

    #[test]
    fn exit_codes_round_trip_to_levels() {
        for level in [
            FailureLevel::Temporary,
            FailureLevel::Permanent,
            FailureLevel::Critical,
            FailureLevel::Abort,
        ] {
            assert_eq!(
                ExitCode::level_of(ExitCode::from(level) as i32),
                Some(level)
            );
        }
        assert_eq!(ExitCode::level_of(0), None);
        assert_eq!(ExitCode::level_of(137), Some(FailureLevel::Temporary));
    }
}
