//! damocles-manager's wire format: JSON-RPC 2.0 over HTTP POST to `/rpc/v0`, methods `Venus.<Name>`
//! with positional params, Go's JSON encoding of its types (see docs/manager-wire.md).
//!
//! Encodings that differ from serde defaults: `[]byte` (tickets, seeds, proofs) is base64;
//! `[32]byte` (CommR, CommD) is an array of 32 numbers; `cid.Cid` is `{"/": "..."}`; result codes are
//! bare numbers, and an unknown code is a decoding error naming it, never a panic.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The HTTP path of the API.
pub const RPC_PATH: &str = "/rpc/v0";
/// Every method is `Venus.<GoMethodName>`.
pub const NAMESPACE: &str = "Venus";
/// The manager's code for a sector it does not know.
pub const ERR_SECTOR_STATE_NOT_FOUND: i64 = 11001;
/// JSON-RPC: the params array has the wrong length (another API version).
pub const ERR_INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: no such method.
pub const ERR_METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: the request or one of its params does not decode (go-jsonrpc's answer to a param of
/// the wrong type).
pub const ERR_PARSE: i64 = -32700;

pub fn method(name: &str) -> String {
    format!("{NAMESPACE}.{name}")
}

/// A JSON-RPC 2.0 request with positional params.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Request {
    pub jsonrpc: String,
    pub id: u64,
    pub method: String,
    pub params: Vec<serde_json::Value>,
}

impl Request {
    pub fn new(id: u64, name: &str, params: Vec<serde_json::Value>) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id,
            method: method(name),
            params,
        }
    }
}

/// A JSON-RPC 2.0 response. A missing `result` means null (Go omits it).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Response {
    pub jsonrpc: String,
    pub id: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

/// Go `[]byte`: base64 (standard alphabet, padded).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", STANDARD.encode(&self.0))
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?.unwrap_or_default();
        STANDARD
            .decode(text)
            .map(Bytes)
            .map_err(serde::de::Error::custom)
    }
}

/// Go `abi.Randomness` as damocles uses it: base64 of exactly 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Randomness(pub [u8; 32]);

impl Serialize for Randomness {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Randomness {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = Bytes::deserialize(deserializer)?.0;
        let len = bytes.len();
        bytes.try_into().map(Randomness).map_err(|_| {
            serde::de::Error::custom(format!("randomness is {len} bytes, expected 32"))
        })
    }
}

/// Go `cid.Cid`: `{"/": "<cid>"}`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct CidJson {
    #[serde(rename = "/")]
    pub cid: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
#[serde(rename_all = "PascalCase")]
pub struct SectorId {
    pub miner: u64,
    pub number: u64,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct AllocateSectorSpec {
    pub allowed_miners: Option<Vec<u64>>,
    pub allowed_proof_types: Option<Vec<i64>>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct AllocatedSector {
    #[serde(rename = "ID")]
    pub id: SectorId,
    /// abi.RegisteredSealProof (5: StackedDrg2KiBV1_1, 10: its synthetic variant).
    pub proof_type: i64,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct Ticket {
    pub ticket: Randomness,
    pub epoch: i64,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct Seed {
    pub seed: Randomness,
    pub epoch: i64,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct PreCommitOnChainInfo {
    pub comm_r: [u8; 32],
    pub comm_d: [u8; 32],
    pub ticket: Ticket,
    /// Deal ids; only older managers read it, newer ones ignore it.
    #[serde(default)]
    pub deals: Vec<u64>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct ProofOnChainInfo {
    pub proof: Bytes,
}

/// What a submission returned (`SubmitPreCommitResp`, `SubmitProofResp`, `SubmitSnapUpProofResp`).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct SubmitResp {
    pub res: SubmitResult,
    #[serde(default)]
    pub desc: Option<String>,
}

/// What a poll returned (`PollPreCommitStateResp`, `PollProofStateResp`).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct PollResp {
    pub state: OnChainState,
    #[serde(default)]
    pub desc: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct WaitSeedResp {
    pub should_wait: bool,
    /// Seconds to wait before asking again.
    pub delay: i64,
    #[serde(default)]
    pub seed: Option<Seed>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct ReportStateReq {
    pub worker: WorkerIdentifier,
    pub state_change: SectorStateChange,
    #[serde(default)]
    pub failure: Option<SectorFailure>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct WorkerIdentifier {
    pub instance: String,
    pub location: String,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct SectorStateChange {
    pub prev: String,
    pub next: String,
    pub event: String,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct SectorFailure {
    pub level: String,
    pub desc: String,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct SectorStateResp {
    /// The Go field has the tag `json:"Id"`.
    #[serde(rename = "Id")]
    pub id: SectorId,
    pub finalized: bool,
    #[serde(default)]
    pub abort_reason: Option<String>,
}

/// `AcquireDealsSpec`: limits on the deals a sector may take.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct AcquireDealsSpec {
    #[serde(default)]
    pub max_deals: Option<u64>,
    #[serde(default)]
    pub min_used_space: Option<u64>,
}

/// `abi.PieceInfo` as the newest manager sends it in `SectorPieceV2`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct PieceInfo {
    /// Padded size.
    pub size: u64,
    #[serde(rename = "PieceCID")]
    pub piece_cid: CidJson,
}

/// One piece of a sector (`SectorPieceV2`). The market lists filler pieces too (deal and
/// allocation 0, the zero CommP); lotus-imported sectors may have `DealInfo: null` for them.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct SectorPiece {
    pub piece: PieceInfo,
    #[serde(default)]
    pub deal_info: Option<DealInfo>,
}

impl SectorPiece {
    /// The unpadded bytes to fetch for it, or None for a filler (pledge) piece, which is zeros.
    /// damocles-worker's rule (planner/common/sector.rs): a builtin-market piece is a deal when
    /// its DealID is set, a direct (DDO) one when its AllocationID is.
    pub fn payload_size(&self) -> Option<u64> {
        let deal = self.deal_info.as_ref()?;
        let is_deal = if deal.is_builtin_market {
            deal.deal_id != 0
        } else {
            deal.allocation_id != 0
        };
        is_deal.then_some(deal.payload_size)
    }
}

/// `core.DealInfoV2`: venus's `market.DealInfoV2` (flattened) and the manager's two flags.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DealInfo {
    #[serde(default, rename = "DealID")]
    pub deal_id: u64,
    #[serde(default)]
    pub publish_cid: Option<CidJson>,
    #[serde(default, rename = "AllocationID")]
    pub allocation_id: u64,
    #[serde(default, rename = "PieceCID")]
    pub piece_cid: Option<CidJson>,
    #[serde(default)]
    pub piece_size: u64,
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub length: u64,
    /// The deal's bytes before zero padding: what the piece store serves.
    #[serde(default)]
    pub payload_size: u64,
    #[serde(default)]
    pub start_epoch: i64,
    #[serde(default)]
    pub end_epoch: i64,
    #[serde(default)]
    pub is_builtin_market: bool,
    #[serde(default)]
    pub is_compatible: bool,
}

/// `StoreBasicInfo`: a persist store instance.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct StoreBasicInfo {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub strict: bool,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub weight: u64,
    #[serde(default)]
    pub meta: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct AllocateSnapUpSpec {
    pub sector: AllocateSectorSpec,
    pub deals: AcquireDealsSpec,
}

/// A committed sector's public facts.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct SectorPublicInfo {
    pub comm_r: [u8; 32],
    #[serde(rename = "SealedCID")]
    pub sealed_cid: CidJson,
    pub activation: i64,
    pub expiration: i64,
}

/// Where a sector's files are kept.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct SectorPrivateInfo {
    pub access_instance: String,
}

/// A committed-capacity sector to upgrade, with the deals to put into it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct AllocatedSnapUpSector {
    pub sector: AllocatedSector,
    #[serde(default)]
    pub pieces: Option<Vec<SectorPiece>>,
    pub public: SectorPublicInfo,
    pub private: SectorPrivateInfo,
}

/// What `SubmitSnapUpProof` sends: the new commitments, where the updated files are, the proof.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct SnapUpOnChainInfo {
    pub comm_r: [u8; 32],
    pub comm_d: [u8; 32],
    pub access_instance: String,
    pub pieces: Vec<CidJson>,
    pub proof: Bytes,
}

/// What a worker tells the manager of itself every ping interval (`WorkerPing`): what
/// `damocles-manager util worker list` shows. Dest is where the worker's admin API listens, which
/// `util worker resume` calls.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct WorkerInfo {
    pub name: String,
    pub dest: String,
    pub version: String,
    pub summary: WorkerInfoSummary,
}

/// A worker's sealing threads by what they do (damocles-worker counts one thread each; the
/// operator one unfinished task each).
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct WorkerInfoSummary {
    pub threads: u64,
    /// Without a sector yet.
    pub empty: u64,
    pub paused: u64,
    pub running: u64,
    pub waiting: u64,
    /// With a failure recorded.
    pub errors: u64,
}

/// A deal as v0.9-era managers kept it (`Deals`, damocles-manager's `LegacyPieces`): what
/// `AcquireDeals` of older managers answers and what `AllocateRebuildSector` hands out as
/// `Pieces` for a sector sealed then.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct LegacyDeal {
    /// The deal id; 0 for a filler (pledge) piece.
    #[serde(rename = "ID")]
    pub id: u64,
    pub payload_size: u64,
    pub piece: LegacyPieceInfo,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct LegacyPieceInfo {
    /// Padded size.
    pub size: u64,
    /// Padded offset in the sector.
    #[serde(default)]
    pub offset: u64,
    pub cid: CidJson,
}

impl From<LegacyDeal> for SectorPiece {
    /// In today's form: a builtin-market deal of that id and payload size.
    fn from(legacy: LegacyDeal) -> Self {
        SectorPiece {
            piece: PieceInfo {
                size: legacy.piece.size,
                piece_cid: legacy.piece.cid,
            },
            deal_info: Some(DealInfo {
                deal_id: legacy.id,
                payload_size: legacy.payload_size,
                is_builtin_market: true,
                ..Default::default()
            }),
        }
    }
}

/// A sector whose files are lost, with what is needed to seal it again bit for bit.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct SectorRebuildInfo {
    pub sector: AllocatedSector,
    pub ticket: Ticket,
    /// The deals of a sector sealed by a v0.9-era manager (null otherwise); damocles-worker
    /// seals these in when present, else PiecesV2.
    #[serde(default)]
    pub pieces: Option<Vec<LegacyDeal>>,
    #[serde(default, rename = "PiecesV2")]
    pub pieces_v2: Option<Vec<SectorPiece>>,
    #[serde(default)]
    pub is_snap_up: bool,
    #[serde(default)]
    pub upgrade_public: Option<SectorPublicInfo>,
}

/// A piece to recover from a sealed sector.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct SectorUnsealInfo {
    pub sector: AllocatedSector,
    pub piece_cid: CidJson,
    /// Unpadded offset and size in the sector.
    pub offset: u64,
    pub size: u64,
    pub private_info: SectorPrivateInfo,
    pub ticket: Ticket,
    pub comm_d: [u8; 32],
    #[serde(default)]
    pub dest: Option<Vec<String>>,
    #[serde(default)]
    pub state: Option<serde_json::Value>,
    #[serde(default)]
    pub error_info: String,
}

const SIZES: [crate::sector::SectorSize; 5] = [
    crate::sector::SectorSize::Size2KiB,
    crate::sector::SectorSize::Size8MiB,
    crate::sector::SectorSize::Size512MiB,
    crate::sector::SectorSize::Size32GiB,
    crate::sector::SectorSize::Size64GiB,
];

/// abi.RegisteredSealProof for a sector size: StackedDrg<size>V1_1 (5..=9), or its
/// `_Feat_SyntheticPoRep` variant (10..=14).
pub fn seal_proof_type(size: crate::sector::SectorSize, synthetic: bool) -> i64 {
    let index = SIZES
        .iter()
        .position(|s| *s == size)
        .expect("every size is listed") as i64;
    index + if synthetic { 10 } else { 5 }
}

/// The seal proof types of a size that a task pinned to `synthetic` (or, with None, any task)
/// may be handed: damocles-worker asks for every variant of its size and adopts what it gets.
/// The NI-PoRep variant (V1_2) is left out: this operator does not seal it.
pub fn seal_proof_types(size: crate::sector::SectorSize, synthetic: Option<bool>) -> Vec<i64> {
    match synthetic {
        Some(synthetic) => vec![seal_proof_type(size, synthetic)],
        None => vec![seal_proof_type(size, false), seal_proof_type(size, true)],
    }
}

/// The sector size and synthetic flag of a V1_1 seal proof type; none for other types.
pub fn sector_of_proof_type(proof_type: i64) -> Option<(crate::sector::SectorSize, bool)> {
    match proof_type {
        5..=9 => Some((SIZES[(proof_type - 5) as usize], false)),
        10..=14 => Some((SIZES[(proof_type - 10) as usize], true)),
        _ => None,
    }
}

macro_rules! result_code {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)*
        }

        impl TryFrom<u64> for $name {
            type Error = String;
            fn try_from(code: u64) -> Result<Self, String> {
                match code {
                    $($value => Ok($name::$variant),)*
                    other => Err(format!(
                        concat!("unknown ", stringify!($name), " {} from the manager (known: {})"),
                        other,
                        [$(concat!(stringify!($value), " ", stringify!($variant))),*].join(", ")
                    )),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_u64(*self as u64)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $name::try_from(u64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

result_code!(
    /// damocles-manager's `SubmitResult`.
    SubmitResult {
        Unknown = 0,
        Accepted = 1,
        DuplicateSubmit = 2,
        MismatchedSubmission = 3,
        Rejected = 4,
        FilesMissed = 5,
    }
);

result_code!(
    /// damocles-manager's `OnChainState`.
    OnChainState {
        Unknown = 0,
        Pending = 1,
        Packed = 2,
        Landed = 3,
        NotFound = 4,
        Failed = 5,
        PermFailed = 6,
        ShouldAbort = 7,
    }
);

#[cfg(test)]
mod tests {
    //! Fixtures written from damocles-manager's Go types (docs/manager-wire.md, section 7).
    use serde_json::json;

    use super::*;

    const TICKET_B64: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    fn sid() -> SectorId {
        SectorId {
            miner: 1000,
            number: 2,
        }
    }

    #[test]
    fn requests_match_the_manager_fixtures() {
        let allocated = AllocatedSector {
            id: sid(),
            proof_type: 5,
        };
        let info = PreCommitOnChainInfo {
            comm_r: std::array::from_fn(|i| i as u8 + 1),
            comm_d: [7; 32],
            ticket: Ticket {
                ticket: Randomness([1; 32]),
                epoch: 12345,
            },
            deals: vec![],
        };
        let request = Request::new(
            3,
            "SubmitPreCommit",
            vec![
                serde_json::to_value(&allocated).unwrap(),
                serde_json::to_value(&info).unwrap(),
                json!(false),
            ],
        );
        let expected = json!({"jsonrpc": "2.0", "id": 3, "method": "Venus.SubmitPreCommit", "params": [
            {"ID": {"Miner": 1000, "Number": 2}, "ProofType": 5},
            {"CommR": (1..=32).collect::<Vec<u8>>(), "CommD": vec![7u8; 32],
             "Ticket": {"Ticket": TICKET_B64, "Epoch": 12345}, "Deals": []},
            false]});
        assert_eq!(serde_json::to_value(&request).unwrap(), expected);

        let spec = AllocateSectorSpec {
            allowed_miners: Some(vec![1000]),
            allowed_proof_types: Some(vec![5]),
        };
        assert_eq!(
            serde_json::to_value(spec).unwrap(),
            json!({"AllowedMiners": [1000], "AllowedProofTypes": [5]})
        );
        let proof = ProofOnChainInfo {
            proof: Bytes(vec![0xde, 0xad, 0xbe, 0xef]),
        };
        assert_eq!(
            serde_json::to_value(proof).unwrap(),
            json!({"Proof": "3q2+7w=="})
        );
    }

    /// WorkerPing's one param, as damocles-manager's core.WorkerInfo reads it.
    #[test]
    fn a_worker_ping_is_the_workers_info() {
        let info = WorkerInfo {
            name: "damocles-operator-0".into(),
            dest: "10.0.0.7:17890".into(),
            version: "damocles-operator 0.1.0".into(),
            summary: WorkerInfoSummary {
                threads: 5,
                empty: 1,
                paused: 1,
                running: 2,
                waiting: 1,
                errors: 1,
            },
        };
        let request = Request::new(4, "WorkerPing", vec![serde_json::to_value(&info).unwrap()]);
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"jsonrpc": "2.0", "id": 4, "method": "Venus.WorkerPing", "params": [
                {"Name": "damocles-operator-0", "Dest": "10.0.0.7:17890",
                 "Version": "damocles-operator 0.1.0", "Summary": {"Threads": 5, "Empty": 1,
                 "Paused": 1, "Running": 2, "Waiting": 1, "Errors": 1}}]})
        );
    }

    /// A sector sealed by a v0.9-era manager: its rebuild info carries the deals as legacy
    /// `Pieces` (damocles-manager's `LegacyPieces`, JSON key `Deals` in its state), read into
    /// today's form with the deal id and payload size the piece is fetched by.
    #[test]
    fn a_rebuild_of_a_v0_9_sector_carries_its_legacy_deals() {
        let wire = json!({
            "Sector": {"ID": {"Miner": 1000, "Number": 2}, "ProofType": 5},
            "Ticket": {"Ticket": TICKET_B64, "Epoch": 12345},
            "Pieces": [
                {"ID": 7, "PayloadSize": 1000,
                 "Piece": {"Size": 1024, "Offset": 0, "Cid": {"/": "baga6ea4seaqdeal"}}},
                {"ID": 0, "PayloadSize": 0,
                 "Piece": {"Size": 1024, "Offset": 1024, "Cid": {"/": "baga6ea4seaqfill"}}}
            ],
            "PiecesV2": null, "IsSnapUp": false, "UpgradePublic": null
        });
        let info: SectorRebuildInfo = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(serde_json::to_value(&info).unwrap(), wire);
        let pieces: Vec<SectorPiece> = info.pieces.unwrap().into_iter().map(Into::into).collect();
        assert_eq!(pieces[0].piece.piece_cid.cid, "baga6ea4seaqdeal");
        assert_eq!(pieces[0].piece.size, 1024);
        assert_eq!(pieces[0].payload_size(), Some(1000));
        assert_eq!(pieces[1].payload_size(), None, "deal 0 is a filler");
    }

    #[test]
    fn responses_from_the_manager_decode() {
        let response: Response =
            serde_json::from_value(json!({"jsonrpc": "2.0", "id": 5, "result":
            {"ShouldWait": false, "Delay": 0, "Seed": {"Seed": TICKET_B64, "Epoch": 12495}}}))
            .unwrap();
        let seed: WaitSeedResp = serde_json::from_value(response.result.unwrap()).unwrap();
        assert_eq!(
            seed.seed.unwrap(),
            Seed {
                seed: Randomness([1; 32]),
                epoch: 12495
            }
        );

        let state: SectorStateResp = serde_json::from_value(
            json!({"Id": {"Miner": 1000, "Number": 2}, "Finalized": false, "AbortReason": ""}),
        )
        .unwrap();
        assert_eq!(state.id, sid());
        let resp: SubmitResp = serde_json::from_value(json!({"Res": 2, "Desc": null})).unwrap();
        assert_eq!(resp.res, SubmitResult::DuplicateSubmit);
        let poll: PollResp = serde_json::from_value(json!({"State": 7})).unwrap();
        assert_eq!(poll.state, OnChainState::ShouldAbort);

        // Go omits a nil result; an error comes with its code.
        let response: Response = serde_json::from_value(json!({"jsonrpc": "2.0", "id": 4,
            "error": {"code": 11001, "message": "error code 11001: sector state not found"}}))
        .unwrap();
        assert_eq!(response.result, None);
        assert_eq!(response.error.unwrap().code, ERR_SECTOR_STATE_NOT_FOUND);
    }

    #[test]
    fn unknown_codes_and_bad_bytes_are_clear_errors() {
        let err = serde_json::from_value::<SubmitResp>(json!({"Res": 9}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown SubmitResult 9") && err.contains("4 Rejected"),
            "{err}"
        );
        let err = serde_json::from_value::<PollResp>(json!({"State": 42}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown OnChainState 42"), "{err}");
        let err = serde_json::from_value::<Ticket>(json!({"Ticket": "AQID", "Epoch": 1}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 bytes, expected 32"), "{err}");
        let err = serde_json::from_value::<ProofOnChainInfo>(json!({"Proof": "not base64!"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Invalid"), "{err}");
    }
}
