//! Sector commitments: CommR (sealed) and CommD (unsealed data), held as their 32 bytes and written
//! as the CIDs Filecoin uses for them (bagboea4b5abc... and baga6ea4sea...). A commitment is parsed
//! once, where it enters (a step's output, the task's status, the manager's 32 raw bytes), so no
//! layer passes a commitment around as a string it has not checked. Piece CIDs (CommP) share
//! CommD's format and are parsed with [`parse_data_cid`] where a step reads them.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use cid::Cid;
use cid::multihash::Multihash;
use schemars::{JsonSchema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A commitment CID that does not parse, or is of the wrong kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CidError {
    pub message: String,
}

/// A 32-byte commitment (filecoin-proofs' `Commitment`).
pub type Commitment = [u8; 32];

/// Multicodec of an unsealed commitment (CommD, CommP): fil-commitment-unsealed.
const FIL_COMMITMENT_UNSEALED: u64 = 0xf101;
/// Multicodec of a sealed commitment (CommR): fil-commitment-sealed.
const FIL_COMMITMENT_SEALED: u64 = 0xf102;
/// Multihash of CommD/CommP: sha2-256-trunc254-padded.
const SHA2_256_TRUNC254_PADDED: u64 = 0x1012;
/// Multihash of CommR: poseidon-bls12_381-a2-fc1.
const POSEIDON_BLS12_381_A2_FC1: u64 = 0xb401;

fn commitment_cid(codec: u64, hash: u64, commitment: &Commitment) -> String {
    let digest = Multihash::<64>::wrap(hash, commitment).expect("32 bytes fit a multihash");
    Cid::new_v1(codec, digest).to_string()
}

fn parse_commitment(what: &str, text: &str, codec: u64, hash: u64) -> Result<Commitment, CidError> {
    let bad = |why: String| CidError {
        message: format!("{what} {text:?} is not valid: {why}"),
    };
    let cid = Cid::try_from(text).map_err(|e| bad(e.to_string()))?;
    if cid.codec() != codec || cid.hash().code() != hash {
        return Err(bad(format!(
            "codec {:#x} / multihash {:#x}, expected {codec:#x} / {hash:#x}",
            cid.codec(),
            cid.hash().code()
        )));
    }
    cid.hash()
        .digest()
        .try_into()
        .map_err(|_| bad("digest is not 32 bytes".into()))
}

/// The CID of an unsealed commitment (CommD, CommP).
pub fn data_cid(commitment: &Commitment) -> String {
    commitment_cid(
        FIL_COMMITMENT_UNSEALED,
        SHA2_256_TRUNC254_PADDED,
        commitment,
    )
}

/// An unsealed commitment (CommD, CommP) from its CID; `what` names it in the error.
pub fn parse_data_cid(what: &str, text: &str) -> Result<Commitment, CidError> {
    parse_commitment(
        what,
        text,
        FIL_COMMITMENT_UNSEALED,
        SHA2_256_TRUNC254_PADDED,
    )
}

macro_rules! commitment_type {
    ($(#[$doc:meta])* $name:ident, $label:literal, $codec:expr, $hash:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(Commitment);

        impl $name {
            pub const fn from_bytes(bytes: Commitment) -> Self {
                Self(bytes)
            }

            pub const fn bytes(&self) -> Commitment {
                self.0
            }

            /// Parses the CID; `what` names the field in the error.
            pub fn parse(what: &str, text: &str) -> Result<Self, CidError> {
                parse_commitment(what, text, $codec, $hash).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&commitment_cid($codec, $hash, &self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = CidError;

            fn from_str(text: &str) -> Result<Self, CidError> {
                Self::parse($label, text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        /// A string in the CRD, as before the type existed: the CID format is checked where
        /// the value is read, with an error that names the commitment.
        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> Cow<'static, str> {
                String::schema_name()
            }

            fn json_schema(generator: &mut SchemaGenerator) -> schemars::Schema {
                String::json_schema(generator)
            }
        }
    };
}

commitment_type!(
    /// A replica's sealed commitment, CommR.
    CommR,
    "commR",
    FIL_COMMITMENT_SEALED,
    POSEIDON_BLS12_381_A2_FC1
);

commitment_type!(
    /// A sector's unsealed data commitment, CommD.
    CommD,
    "commD",
    FIL_COMMITMENT_UNSEALED,
    SHA2_256_TRUNC254_PADDED
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitments_round_trip_through_their_filecoin_cids() {
        let comm = [7u8; 32];
        let d = CommD::from_bytes(comm).to_string();
        let r = CommR::from_bytes(comm).to_string();
        assert!(d.starts_with("baga6ea4sea"), "{d}");
        assert!(r.starts_with("bagboea4b5abc"), "{r}");
        assert_eq!(d, data_cid(&comm));
        assert_eq!(d.parse::<CommD>().unwrap().bytes(), comm);
        assert_eq!(r.parse::<CommR>().unwrap().bytes(), comm);
        assert_eq!(parse_data_cid("piece cid", &d).unwrap(), comm);
    }

    #[test]
    fn a_commitment_of_the_other_kind_is_refused_by_name() {
        let sealed = CommR::from_bytes([7; 32]).to_string();
        let err = CommD::parse("inputs.commD", &sealed).unwrap_err();
        assert!(err.message.contains("inputs.commD"), "{err}");
        assert!(err.message.contains("expected 0xf101"), "{err}");
    }

    #[test]
    fn serde_writes_the_cid_and_refuses_a_bad_one() {
        let comm = CommR::from_bytes([3; 32]);
        let json = serde_json::to_string(&comm).unwrap();
        assert_eq!(json, format!("\"{comm}\""));
        assert_eq!(serde_json::from_str::<CommR>(&json).unwrap(), comm);
        let err = serde_json::from_str::<CommR>("\"baga6ea4seaq\"").unwrap_err();
        assert!(err.to_string().contains("commR"), "{err}");
    }
}
