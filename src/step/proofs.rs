//! The Filecoin identities a step needs: proof types, prover ids and commitment CIDs.

use cid::Cid;
use cid::multihash::Multihash;
use filecoin_proofs_api::{Commitment, RegisteredSealProof, RegisteredUpdateProof};

use super::{StepError, StepRequest};
use crate::api::{SectorRef, SectorSize};

/// Multicodec of an unsealed commitment (CommD, CommP): fil-commitment-unsealed.
const FIL_COMMITMENT_UNSEALED: u64 = 0xf101;
/// Multicodec of a sealed commitment (CommR): fil-commitment-sealed.
const FIL_COMMITMENT_SEALED: u64 = 0xf102;
/// Multihash of CommD/CommP: sha2-256-trunc254-padded.
const SHA2_256_TRUNC254_PADDED: u64 = 0x1012;
/// Multihash of CommR: poseidon-bls12_381-a2-fc1.
const POSEIDON_BLS12_381_A2_FC1: u64 = 0xb401;

/// The PoRep proof type (API version 1.1) of a request: its sector size, synthetic or interactive.
pub fn seal_proof(size: SectorSize, synthetic: bool) -> RegisteredSealProof {
    use RegisteredSealProof::*;
    match (size, synthetic) {
        (SectorSize::Size2KiB, false) => StackedDrg2KiBV1_1,
        (SectorSize::Size8MiB, false) => StackedDrg8MiBV1_1,
        (SectorSize::Size512MiB, false) => StackedDrg512MiBV1_1,
        (SectorSize::Size32GiB, false) => StackedDrg32GiBV1_1,
        (SectorSize::Size64GiB, false) => StackedDrg64GiBV1_1,
        (SectorSize::Size2KiB, true) => StackedDrg2KiBV1_1_Feat_SyntheticPoRep,
        (SectorSize::Size8MiB, true) => StackedDrg8MiBV1_1_Feat_SyntheticPoRep,
        (SectorSize::Size512MiB, true) => StackedDrg512MiBV1_1_Feat_SyntheticPoRep,
        (SectorSize::Size32GiB, true) => StackedDrg32GiBV1_1_Feat_SyntheticPoRep,
        (SectorSize::Size64GiB, true) => StackedDrg64GiBV1_1_Feat_SyntheticPoRep,
    }
}

/// The empty-sector-update proof type for a sector size.
pub fn update_proof(size: SectorSize) -> RegisteredUpdateProof {
    use RegisteredUpdateProof::*;
    match size {
        SectorSize::Size2KiB => StackedDrg2KiBV1,
        SectorSize::Size8MiB => StackedDrg8MiBV1,
        SectorSize::Size512MiB => StackedDrg512MiBV1,
        SectorSize::Size32GiB => StackedDrg32GiBV1,
        SectorSize::Size64GiB => StackedDrg64GiBV1,
    }
}

impl StepRequest {
    pub fn seal_proof(&self) -> RegisteredSealProof {
        seal_proof(self.sector_size, self.synthetic_po_rep)
    }
}

/// The prover id of a miner: the payload of its ID address (the actor id as a uvarint), zero-padded
/// to 32 bytes, exactly as lotus and damocles-worker build it.
pub fn prover_id(miner: u64) -> [u8; 32] {
    let mut buffer = unsigned_varint::encode::u64_buffer();
    let payload = unsigned_varint::encode::u64(miner, &mut buffer);
    let mut id = [0u8; 32];
    id[..payload.len()].copy_from_slice(payload);
    id
}

pub fn sector_id(sector: SectorRef) -> filecoin_proofs_api::SectorId {
    filecoin_proofs_api::SectorId::from(sector.number)
}

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

fn parse_commitment(
    what: &str,
    text: &str,
    codec: u64,
    hash: u64,
) -> Result<Commitment, StepError> {
    let bad = |why: String| StepError::permanent(format!("{what} {text:?} is not valid: {why}"));
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
pub fn parse_data_cid(what: &str, text: &str) -> Result<Commitment, StepError> {
    parse_commitment(
        what,
        text,
        FIL_COMMITMENT_UNSEALED,
        SHA2_256_TRUNC254_PADDED,
    )
}

/// CommR from its CID.
pub fn parse_sealed_cid(what: &str, text: &str) -> Result<Commitment, StepError> {
    parse_commitment(what, text, FIL_COMMITMENT_SEALED, POSEIDON_BLS12_381_A2_FC1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prover_id_is_the_id_address_payload() {
        // t01000: uvarint(1000) = e8 07
        let id = prover_id(1000);
        assert_eq!(&id[..3], &[0xe8, 0x07, 0x00]);
        assert!(id[2..].iter().all(|b| *b == 0));
    }

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
