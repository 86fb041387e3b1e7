//! Commitment CIDs (CommD/CommP, CommR) as Filecoin writes them. The operator and the dev manager
//! convert between the manager's raw 32-byte commitments and the CIDs steps and status use.

use cid::Cid;
use cid::multihash::Multihash;

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

pub fn data_cid(commitment: &Commitment) -> String {
    commitment_cid(
        FIL_COMMITMENT_UNSEALED,
        SHA2_256_TRUNC254_PADDED,
        commitment,
    )
}

pub fn sealed_cid(commitment: &Commitment) -> String {
    commitment_cid(FIL_COMMITMENT_SEALED, POSEIDON_BLS12_381_A2_FC1, commitment)
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

/// CommD or CommP from its CID.
pub fn parse_data_cid(what: &str, text: &str) -> Result<Commitment, CidError> {
    parse_commitment(
        what,
        text,
        FIL_COMMITMENT_UNSEALED,
        SHA2_256_TRUNC254_PADDED,
    )
}

/// CommR from its CID.
pub fn parse_sealed_cid(what: &str, text: &str) -> Result<Commitment, CidError> {
    parse_commitment(what, text, FIL_COMMITMENT_SEALED, POSEIDON_BLS12_381_A2_FC1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitment_cids_round_trip_with_the_filecoin_prefixes() {
        let comm = [7u8; 32];
        let d = data_cid(&comm);
        let r = sealed_cid(&comm);
        assert!(d.starts_with("baga6ea4sea"), "{d}");
        assert!(r.starts_with("bagboea4b5abc"), "{r}");
        assert_eq!(parse_data_cid("commD", &d).unwrap(), comm);
        assert_eq!(parse_sealed_cid("commR", &r).unwrap(), comm);
        let err = parse_data_cid("commD", &r).unwrap_err();
        assert!(err.message.contains("commD"), "{err}");
    }
}
