//! Groth parameters and verifying keys: which files a sector size needs, which are missing, and
//! generating *test* parameters for small sizes.
//!
//! Parameters generated here come from a local random setup. They prove and verify consistently with
//! each other, which is what tests and the demo need, but they are not the official Filecoin parameters
//! and proofs made with them are worthless on chain. Every place that uses them says so. Real farms
//! fetch the official files (e.g. `lotus fetch-params`, `paramfetch`) into `FIL_PROOFS_PARAMETER_CACHE`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use filecoin_proofs::parameters::public_params;
use filecoin_proofs::{DefaultPieceHasher, PoRepConfig, with_shape};
use serde::{Deserialize, Serialize};
use storage_proofs_core::compound_proof::CompoundProof;
use storage_proofs_core::merkle::MerkleTreeTrait;
use storage_proofs_core::parameter_cache::{
    CacheableParameters, parameter_cache_dir, parameter_cache_metadata_path,
    parameter_cache_params_path, parameter_cache_verifying_key_path,
};
use storage_proofs_porep::stacked::{StackedCircuit, StackedCompound, StackedDrg};
use storage_proofs_update::constants::TreeRHasher;
use storage_proofs_update::{
    EmptySectorUpdate, EmptySectorUpdateCircuit, EmptySectorUpdateCompound,
    PublicParams as UpdatePublicParams,
};
use tracing::warn;

use super::proofs::seal_proof;
use crate::sector::SectorSize;

/// The environment variable filecoin-proofs reads the parameter directory from.
pub const PARAMETER_CACHE_ENV: &str = "FIL_PROOFS_PARAMETER_CACHE";

/// Written next to parameters this tool generated, so later runs can say they are test parameters.
const TEST_PARAMS_RECORD: &str = "damocles-test-parameters.json";

/// `~/.cache/damocles-operator/params`, where test parameters live unless told otherwise.
pub fn default_cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/damocles-operator/params")
}

/// Points filecoin-proofs at our default parameter directory unless the user chose one. Must run
/// before any proofs call (filecoin-proofs reads its settings once) and while single-threaded.
pub fn init_cache_env() {
    if std::env::var_os(PARAMETER_CACHE_ENV).is_none() {
        // SAFETY: called first thing in main, before any thread exists.
        unsafe { std::env::set_var(PARAMETER_CACHE_ENV, default_cache_dir()) };
    }
}

/// Which circuit a parameter set is for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::Display, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Circuit {
    /// Proof of replication (C2, verify-seal); synthetic and interactive PoRep share it.
    Porep,
    /// Empty-sector-update (snapup: snap-prove, verify-snap).
    EmptySectorUpdate,
}

/// The files of one parameter set in the cache.
#[derive(Clone, Debug, Serialize)]
pub struct ParameterSet {
    pub circuit: Circuit,
    pub id: String,
    pub params: PathBuf,
    pub verifying_key: PathBuf,
    pub metadata: PathBuf,
}

impl ParameterSet {
    fn new(circuit: Circuit, id: String) -> Self {
        Self {
            circuit,
            params: parameter_cache_params_path(&id),
            verifying_key: parameter_cache_verifying_key_path(&id),
            metadata: parameter_cache_metadata_path(&id),
            id,
        }
    }

    pub fn files(&self) -> [&Path; 3] {
        [&self.params, &self.verifying_key, &self.metadata]
    }

    pub fn missing(&self) -> Vec<&Path> {
        self.files().into_iter().filter(|p| !p.is_file()).collect()
    }
}

fn porep_config(size: SectorSize) -> PoRepConfig {
    seal_proof(size, false).as_v1_config()
}

type StackedCompoundOf<Tree> = StackedCompound<Tree, DefaultPieceHasher>;

fn porep_id<Tree: 'static + MerkleTreeTrait>(config: &PoRepConfig) -> anyhow::Result<String> {
    let params = public_params::<Tree>(config)?;
    Ok(<StackedCompoundOf<Tree> as CacheableParameters<
        StackedCircuit<Tree, DefaultPieceHasher>,
        _,
    >>::cache_identifier(&params))
}

fn update_id<Tree: 'static + MerkleTreeTrait<Hasher = TreeRHasher>>(size: u64) -> String {
    let params = UpdatePublicParams::from_sector_size(size);
    <EmptySectorUpdateCompound<Tree> as CacheableParameters<EmptySectorUpdateCircuit<Tree>, _>>::cache_identifier(
        &params,
    )
}

/// The parameter sets a sector size needs, for the given circuits.
pub fn required(size: SectorSize, circuits: &[Circuit]) -> anyhow::Result<Vec<ParameterSet>> {
    let bytes = size.bytes();
    circuits
        .iter()
        .map(|circuit| {
            let id = match circuit {
                Circuit::Porep => with_shape!(bytes, porep_id, &porep_config(size),)?,
                Circuit::EmptySectorUpdate => with_shape!(bytes, update_id, bytes,),
            };
            Ok(ParameterSet::new(*circuit, id))
        })
        .collect()
}

fn generate_porep<Tree: 'static + MerkleTreeTrait>(config: &PoRepConfig) -> anyhow::Result<()> {
    let params = public_params::<Tree>(config)?;
    let mut rng = rand::rngs::OsRng;
    <StackedCompoundOf<Tree> as CompoundProof<StackedDrg<'_, Tree, DefaultPieceHasher>, _>>::groth_params(
        Some(&mut rng),
        &params,
    )?;
    <StackedCompoundOf<Tree> as CompoundProof<StackedDrg<'_, Tree, DefaultPieceHasher>, _>>::verifying_key(
        Some(&mut rng),
        &params,
    )?;
    let circuit = <StackedCompoundOf<Tree> as CompoundProof<
        StackedDrg<'_, Tree, DefaultPieceHasher>,
        _,
    >>::blank_circuit(&params);
    <StackedCompoundOf<Tree> as CacheableParameters<
        StackedCircuit<Tree, DefaultPieceHasher>,
        _,
    >>::get_param_metadata(circuit, &params)?;
    Ok(())
}

fn generate_update<Tree: 'static + MerkleTreeTrait<Hasher = TreeRHasher>>(
    size: u64,
) -> anyhow::Result<()> {
    let params = UpdatePublicParams::from_sector_size(size);
    let mut rng = rand::rngs::OsRng;
    type Compound<T> = EmptySectorUpdateCompound<T>;
    <Compound<Tree> as CompoundProof<EmptySectorUpdate<Tree>, EmptySectorUpdateCircuit<Tree>>>::groth_params(
        Some(&mut rng),
        &params,
    )?;
    <Compound<Tree> as CompoundProof<EmptySectorUpdate<Tree>, EmptySectorUpdateCircuit<Tree>>>::verifying_key(
        Some(&mut rng),
        &params,
    )?;
    let circuit = <Compound<Tree> as CompoundProof<
        EmptySectorUpdate<Tree>,
        EmptySectorUpdateCircuit<Tree>,
    >>::blank_circuit(&params);
    <Compound<Tree> as CacheableParameters<EmptySectorUpdateCircuit<Tree>, _>>::get_param_metadata(
        circuit, &params,
    )?;
    Ok(())
}

/// What `params generate` did for one set.
#[derive(Debug)]
pub struct Generated {
    pub set: ParameterSet,
    /// `None`: the files were already there and were left alone.
    pub took: Option<Duration>,
}

/// Generates the test parameter sets that are missing, one at a time, calling `progress` before each;
/// a set another process is generating is waited for (a lock file per set), not generated twice.
pub fn generate(
    size: SectorSize,
    circuits: &[Circuit],
    mut progress: impl FnMut(&ParameterSet),
) -> anyhow::Result<Vec<Generated>> {
    let bytes = size.bytes();
    let mut done = vec![];
    for set in required(size, circuits)? {
        if set.missing().is_empty() {
            done.push(Generated { set, took: None });
            continue;
        }
        progress(&set);
        // Another `params generate` may be making this set (.ci/run starts one early, scripts/test
        // asks again): wait for it, then use what it wrote, instead of deleting its half-written
        // files below. The lock goes with the process, so a killed generation frees it.
        let _lock = lock_exclusive(&set.params.with_extension("lock"))?;
        if set.missing().is_empty() {
            done.push(Generated { set, took: None });
            continue;
        }
        // A half-written set (killed mid-generation) is regenerated whole: filecoin-proofs would
        // otherwise trust a truncated params file that happens to exist.
        for file in set.files() {
            let _ = fs::remove_file(file);
        }
        let started = Instant::now();
        match set.circuit {
            Circuit::Porep => with_shape!(bytes, generate_porep, &porep_config(size),)?,
            Circuit::EmptySectorUpdate => with_shape!(bytes, generate_update, bytes,)?,
        }
        record_test_parameters(&set)?;
        done.push(Generated {
            set,
            took: Some(started.elapsed()),
        });
    }
    Ok(done)
}

#[derive(Serialize, Deserialize, Default)]
struct TestParamsRecord {
    /// Parameter set ids generated locally by `damocles-step params generate`.
    generated: Vec<String>,
}

fn record_path() -> PathBuf {
    parameter_cache_dir().join(TEST_PARAMS_RECORD)
}

fn read_record() -> TestParamsRecord {
    fs::read(record_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn record_test_parameters(set: &ParameterSet) -> anyhow::Result<()> {
    // Two `params generate` may finish different sets at once (`--circuit porep` beside
    // `--circuit empty-sector-update`): the record is read and rewritten under a lock so neither
    // drops the other's entry.
    let _lock = lock_exclusive(&record_path().with_extension("lock"))?;
    let mut record = read_record();
    if !record.generated.contains(&set.id) {
        record.generated.push(set.id.clone());
    }
    let path = record_path();
    let partial = path.with_extension("json.partial");
    fs::write(&partial, serde_json::to_vec_pretty(&record)?)?;
    fs::rename(partial, path)?;
    Ok(())
}

/// Opens `path` and locks it exclusively (released when the file is dropped or the process dies),
/// creating its directory first: on a new machine the parameter cache does not exist until the
/// first set is written.
fn lock_exclusive(path: &Path) -> std::io::Result<fs::File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let file = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    file.lock()?;
    Ok(file)
}

/// Whether a parameter set was generated locally (test parameters), not fetched.
pub fn is_test_set(set: &ParameterSet) -> bool {
    read_record().generated.contains(&set.id)
}

/// Logs a loud warning when the proofs of this size will use locally generated test parameters.
pub fn announce_test_parameters(size: SectorSize, circuit: Circuit) {
    let Ok(sets) = required(size, &[circuit]) else {
        return;
    };
    let record = read_record();
    for set in sets.iter().filter(|s| record.generated.contains(&s.id)) {
        warn!(
            circuit = %set.circuit,
            "using TEST {} parameters generated locally by `damocles-step params generate`: \
             proofs made with them are for tests and demos only and are worthless on chain",
            set.circuit
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh machine's first `params generate` failed with "No such file or directory" when it
    /// locked a set before the cache directory existed.
    #[test]
    fn a_lock_in_a_cache_directory_not_made_yet_is_created_and_excludes_others() {
        let dir = std::env::temp_dir().join(format!("damocles-params-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("params").join("set.lock");
        let held = lock_exclusive(&path).unwrap();
        assert!(path.is_file());
        let other = fs::File::options().write(true).open(&path).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(fs::TryLockError::WouldBlock)
        ));
        drop(held);
        other.try_lock().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
