//! The Filecoin identities a step needs: proof types, prover ids and commitment CIDs.

use filecoin_proofs_api::{RegisteredSealProof, RegisteredUpdateProof};

use super::StepRequest;
pub use crate::sector::commitment::{data_cid, parse_data_cid};
use crate::sector::{SectorRef, SectorSize};

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
}
