//! The ground every layer stands on: the domain's value types (a sector, its size, how bad a
//! failure is, commitments, a name that is not valid). Nothing here imports another module of this
//! crate: the plans, the CRD, the step contract and the manager wire format all build on it.

pub mod commitment;

pub use commitment::{CommD, CommR};

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use strum::{Display, EnumIter, EnumString, IntoEnumIterator, IntoStaticStr};

/// Filecoin sector sizes the proofs support.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    Display,
    EnumString,
    EnumIter,
    IntoStaticStr,
)]
pub enum SectorSize {
    #[serde(rename = "2KiB")]
    #[strum(serialize = "2KiB")]
    Size2KiB,
    #[serde(rename = "8MiB")]
    #[strum(serialize = "8MiB")]
    Size8MiB,
    #[serde(rename = "512MiB")]
    #[strum(serialize = "512MiB")]
    Size512MiB,
    #[serde(rename = "32GiB")]
    #[strum(serialize = "32GiB")]
    Size32GiB,
    #[serde(rename = "64GiB")]
    #[strum(serialize = "64GiB")]
    Size64GiB,
}

impl SectorSize {
    pub fn bytes(self) -> u64 {
        match self {
            SectorSize::Size2KiB => 2 << 10,
            SectorSize::Size8MiB => 8 << 20,
            SectorSize::Size512MiB => 512 << 20,
            SectorSize::Size32GiB => 32 << 30,
            SectorSize::Size64GiB => 64 << 30,
        }
    }

    pub fn parse(name: &str) -> Result<Self, UnknownName> {
        Self::from_str(name).map_err(|_| {
            UnknownName::new("sector size", name, SectorSize::iter().map(<&str>::from))
        })
    }
}

/// A sector id as damocles-manager knows it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub struct SectorRef {
    /// Miner actor id (the number of t0<id>/f0<id>).
    pub miner: u64,
    /// Sector number within the miner.
    pub number: u64,
}

impl fmt::Display for SectorRef {
    /// damocles' sector file name, `s-t0<miner>-<number>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s-t0{}-{}", self.miner, self.number)
    }
}

/// How bad a failure is, as damocles-worker grades it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Display)]
pub enum FailureLevel {
    /// Retried after a back-off; becomes permanent after the retry limit.
    Temporary,
    /// Pauses the task for a person; files kept.
    Permanent,
    /// Pauses the task for a person; inputs are suspect (missing or corrupt files).
    Critical,
    /// Ends the task: the manager is told and the workspace wiped.
    Abort,
}

/// A name that is not one of the valid values, with the valid values listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}; valid values: {}", valid.join(", "))]
pub struct UnknownName {
    pub what: String,
    pub given: String,
    pub valid: Vec<String>,
}

impl UnknownName {
    pub fn new<'a>(what: &str, given: &str, valid: impl Iterator<Item = &'a str>) -> Self {
        Self {
            what: what.to_string(),
            given: given.to_string(),
            valid: valid.map(str::to_string).collect(),
        }
    }
}

/// 32 bytes written as 64 hex characters (tickets, seeds).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bytes32(pub [u8; 32]);

impl fmt::Debug for Bytes32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

impl fmt::Display for Bytes32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

impl std::str::FromStr for Bytes32 {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(text).map_err(|e| format!("not hex: {e}"))?;
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes, expected 32", b.len()))?;
        Ok(Bytes32(array))
    }
}

impl Serialize for Bytes32 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes32 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A string in the CRD, as before the type existed (the hex is checked where it is read).
impl JsonSchema for Bytes32 {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        String::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}
