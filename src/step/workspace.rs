//! Files of a task on disk, and the rules that make a step safe to kill at any instant.
//!
//! Every output is written under a temporary name (`.<name>.partial`), fsynced, then renamed into place,
//! and the parent directory fsynced. When all of a step's outputs are in place, a completion marker
//! `.steps/<step>.json` records a digest of the step's inputs and its result. A rerun then either
//! returns the recorded result (same input digest, outputs still present) or discards whatever the
//! step may have left (partial files, stale outputs) and does the work again. Nothing a completed
//! upstream step wrote is touched by a downstream step: PC2 encodes a fresh copy of the staged data,
//! never the only copy (damocles users lost sealed files when a worker restarted mid-PC2).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{FileDigest, StepError, StepKind, StepResult};
use crate::sector::SectorRef;

/// Environment variable that makes a step kill itself at a named point: `<step>:<point>`, e.g.
/// `pc2:before-rename`. For crash tests only.
pub const FAULT_ENV: &str = "DAMOCLES_STEP_FAULT";

/// Crash points a test can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// Half of an output's bytes are written under its temporary name.
    MidWrite,
    /// An output is complete under its temporary name, not yet renamed.
    BeforeRename,
    /// All outputs are in place; the completion marker is not written yet.
    BeforeMarker,
}

impl FaultPoint {
    fn name(self) -> &'static str {
        match self {
            FaultPoint::MidWrite => "mid-write",
            FaultPoint::BeforeRename => "before-rename",
            FaultPoint::BeforeMarker => "before-marker",
        }
    }
}

/// Dies like a SIGKILL would if `DAMOCLES_STEP_FAULT` names this step and point.
pub fn crash_point(step: StepKind, point: FaultPoint) {
    if let Ok(spec) = std::env::var(FAULT_ENV)
        && spec == format!("{step}:{}", point.name())
    {
        eprintln!("{FAULT_ENV}={spec}: killing this step process now (crash test)");
        // abort() skips destructors and buffered writes, as a kill would.
        std::process::abort();
    }
}

/// The damocles file layout of one sector, rooted at a task workspace or at the persist store.
#[derive(Clone, Debug)]
pub struct SectorFiles {
    root: PathBuf,
    name: String,
}

impl SectorFiles {
    pub fn new(root: impl Into<PathBuf>, sector: SectorRef) -> Self {
        Self {
            root: root.into(),
            name: sector.to_string(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Staged (unsealed) sector data written by add-piece.
    pub fn staged(&self) -> PathBuf {
        self.root.join("unsealed").join(&self.name)
    }
    pub fn sealed(&self) -> PathBuf {
        self.root.join("sealed").join(&self.name)
    }
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache").join(&self.name)
    }
    pub fn update(&self) -> PathBuf {
        self.root.join("update").join(&self.name)
    }
    pub fn update_cache(&self) -> PathBuf {
        self.root.join("update-cache").join(&self.name)
    }
    /// Small step outputs (piece infos, PC1/C1 outputs, proofs) live here.
    pub fn outputs(&self) -> PathBuf {
        self.root.join("outputs")
    }
    pub fn output(&self, name: &str) -> PathBuf {
        self.outputs().join(name)
    }
    pub fn scratch(&self) -> PathBuf {
        self.root.join(".scratch")
    }
    pub fn marker(&self, step: StepKind) -> PathBuf {
        self.root.join(".steps").join(format!("{step}.json"))
    }
}

fn io_error(action: &str, path: &Path, err: io::Error) -> StepError {
    let message = format!("{action} {}: {err}", path.display());
    match err.kind() {
        io::ErrorKind::NotFound => StepError::critical(message),
        // A full disk or a flaky mount may clear up; everything else is for a person.
        io::ErrorKind::StorageFull | io::ErrorKind::Interrupted | io::ErrorKind::TimedOut => {
            StepError::temporary(message)
        }
        _ => StepError::permanent(message),
    }
}

pub fn create_dir(path: &Path) -> Result<(), StepError> {
    fs::create_dir_all(path).map_err(|e| io_error("cannot create directory", path, e))
}

/// The temporary name an output is written under before it is renamed into place.
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

fn sync_dir(dir: &Path) -> Result<(), StepError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot sync directory", dir, e))
}

/// Makes a finished temporary file or directory durable and moves it to its final name.
pub fn commit(partial: &Path, path: &Path, step: StepKind) -> Result<(), StepError> {
    if partial.is_dir() {
        for entry in fs::read_dir(partial).map_err(|e| io_error("cannot list", partial, e))? {
            let entry = entry.map_err(|e| io_error("cannot list", partial, e))?;
            if entry.path().is_file() {
                sync_file(&entry.path())?;
            }
        }
        sync_dir(partial)?;
    } else {
        sync_file(partial)?;
    }
    crash_point(step, FaultPoint::BeforeRename);
    remove_any(path)?;
    fs::rename(partial, path).map_err(|e| io_error("cannot rename into", path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_file(path: &Path) -> Result<(), StepError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error("cannot sync", path, e))
}

/// Writes `bytes` to `path` crash-safely: temporary name, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8], step: StepKind) -> Result<FileDigest, StepError> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    let partial = partial_path(path);
    let mut file = File::create(&partial).map_err(|e| io_error("cannot create", &partial, e))?;
    let half = bytes.len() / 2;
    file.write_all(&bytes[..half])
        .map_err(|e| io_error("cannot write", &partial, e))?;
    crash_point(step, FaultPoint::MidWrite);
    file.write_all(&bytes[half..])
        .map_err(|e| io_error("cannot write", &partial, e))?;
    drop(file);
    commit(&partial, path, step)?;
    Ok(FileDigest {
        path: path.to_path_buf(),
        sha256: hex::encode(Sha256::digest(bytes)),
        size: bytes.len() as u64,
    })
}

/// Removes a file or directory if it exists.
pub fn remove_any(path: &Path) -> Result<(), StepError> {
    let result = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    result.map_err(|e| io_error("cannot remove", path, e))
}

/// `root/relative`, refused when it would leave `root`: `relative` must be a plain relative path
/// (no `..`, no leading `/`), and no part of it that exists may be a symbolic link, which could
/// point anywhere the pod may write. The root is the admin's (a store, a delivery root) and may
/// itself be a link.
pub fn confine(root: &Path, relative: &Path) -> Result<PathBuf, StepError> {
    use std::path::Component;
    let refuse = |why: String| {
        StepError::permanent(format!(
            "{} cannot be written inside {}: {why}",
            relative.display(),
            root.display()
        ))
    };
    let plain = relative
        .components()
        .all(|part| matches!(part, Component::Normal(_)));
    if relative.as_os_str().is_empty() || !plain {
        return Err(refuse(
            "not a plain relative path (no .., no leading /)".into(),
        ));
    }
    let mut path = root.to_path_buf();
    for part in relative.components() {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(refuse(format!("{} is a symbolic link", path.display())));
            }
            Ok(_) => {}
            // What does not exist yet is created by the step, inside the root.
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(io_error("cannot inspect", &path, e)),
        }
    }
    Ok(root.join(relative))
}

/// sha256 and size of a file, streaming.
pub fn digest_file(path: &Path) -> Result<FileDigest, StepError> {
    let mut file = File::open(path).map_err(|e| io_error("cannot open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| io_error("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok(FileDigest {
        path: path.to_path_buf(),
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// Checks an input file before heavy work: present, the recorded size and digest. Anything else is a
/// critical failure naming the file, because the data it stands for is suspect.
pub fn check_input(what: &str, expected: &FileDigest) -> Result<(), StepError> {
    let path = &expected.path;
    let meta = fs::metadata(path).map_err(|e| {
        StepError::critical(format!(
            "{what} {} is missing or unreadable: {e}",
            path.display()
        ))
    })?;
    if meta.len() != expected.size {
        return Err(StepError::critical(format!(
            "{what} {} is {} bytes, expected {} (truncated or replaced)",
            path.display(),
            meta.len(),
            expected.size
        )));
    }
    let actual = digest_file(path)?;
    if actual.sha256 != expected.sha256 {
        return Err(StepError::critical(format!(
            "{what} {} has sha256 {}, expected {} (corrupt)",
            path.display(),
            actual.sha256,
            expected.sha256
        )));
    }
    Ok(())
}

/// Checks that an input file exists with exactly `size` bytes.
pub fn check_size(what: &str, path: &Path, size: u64) -> Result<(), StepError> {
    let meta = fs::metadata(path).map_err(|e| {
        StepError::critical(format!(
            "{what} {} is missing or unreadable: {e}",
            path.display()
        ))
    })?;
    if !meta.is_file() || meta.len() != size {
        return Err(StepError::critical(format!(
            "{what} {} is {} bytes, expected {size} (truncated or not written completely)",
            path.display(),
            meta.len()
        )));
    }
    Ok(())
}

/// Checks that an input directory exists and holds files.
pub fn check_dir(what: &str, path: &Path) -> Result<(), StepError> {
    let empty = fs::read_dir(path)
        .map_err(|e| {
            StepError::critical(format!(
                "{what} {} is missing or unreadable: {e}",
                path.display()
            ))
        })?
        .next()
        .is_none();
    if empty {
        return Err(StepError::critical(format!(
            "{what} {} is empty",
            path.display()
        )));
    }
    Ok(())
}

/// What a completed step left behind.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct CompletionMarker {
    pub input_digest: String,
    pub result: StepResult,
}

/// Digest of everything a step's work depends on: its request (without where to report) and the
/// markers of the steps whose outputs it reads, so redoing an upstream step invalidates this one.
pub fn input_digest(
    files: &SectorFiles,
    request_inputs: &serde_json::Value,
    upstream: &[StepKind],
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(request_inputs.to_string());
    for step in upstream {
        hasher.update(step.to_string());
        match fs::read(files.marker(*step)) {
            Ok(bytes) => hasher.update(Sha256::digest(bytes)),
            Err(_) => hasher.update(b"absent"),
        }
    }
    hex::encode(hasher.finalize())
}

/// The recorded result of a completed step, if its inputs are the same and its files are all there.
pub fn completed(files: &SectorFiles, step: StepKind, digest: &str) -> Option<StepResult> {
    let bytes = fs::read(files.marker(step)).ok()?;
    let marker: CompletionMarker = serde_json::from_slice(&bytes).ok()?;
    if marker.input_digest != digest {
        return None;
    }
    let all_present = marker
        .result
        .outputs
        .files
        .iter()
        .all(|f| fs::metadata(&f.file.path).is_ok_and(|m| m.len() == f.file.size));
    all_present.then_some(marker.result)
}

/// Records a step as complete. Written last, so its presence means every output is in place.
pub fn mark_complete(
    files: &SectorFiles,
    step: StepKind,
    digest: &str,
    result: &StepResult,
) -> Result<(), StepError> {
    crash_point(step, FaultPoint::BeforeMarker);
    let marker = CompletionMarker {
        input_digest: digest.to_string(),
        result: result.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&marker).expect("markers serialize");
    // The marker itself must not trip the step's own fault points.
    let path = files.marker(step);
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    let partial = partial_path(&path);
    fs::write(&partial, &bytes).map_err(|e| io_error("cannot write", &partial, e))?;
    sync_file(&partial)?;
    fs::rename(&partial, &path).map_err(|e| io_error("cannot rename into", &path, e))?;
    sync_dir(path.parent().expect("markers live in .steps/"))
}

/// Forgets a step: its marker first (so a crash here still means "not done"), then its outputs and
/// any temporary files next to them.
pub fn discard(files: &SectorFiles, step: StepKind, outputs: &[PathBuf]) -> Result<(), StepError> {
    remove_any(&files.marker(step))?;
    for path in outputs {
        remove_any(&partial_path(path))?;
        remove_any(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("damocles-ws-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn atomic_write_leaves_no_partial_and_reports_digest() {
        let dir = temp_dir("atomic");
        let path = dir.join("out/proof.bin");
        let digest = write_atomic(&path, b"proof bytes", StepKind::C2).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"proof bytes");
        assert!(!partial_path(&path).exists());
        assert_eq!(digest, digest_file(&path).unwrap());
        check_input("proof", &digest).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn input_checks_name_the_file_and_grade_critical() {
        let dir = temp_dir("inputs");
        let path = dir.join("c1.json");
        let digest = write_atomic(&path, b"{\"c1\": 1}", StepKind::C1).unwrap();
        fs::write(&path, b"{\"c1\"").unwrap();
        let err = check_input("C1 output", &digest).unwrap_err();
        assert_eq!(err.level, crate::sector::FailureLevel::Critical);
        assert!(
            err.message.contains("c1.json") && err.message.contains("truncated"),
            "{err}"
        );
        fs::write(&path, b"{\"c9\": 1}").unwrap();
        let err = check_input("C1 output", &digest).unwrap_err();
        assert!(err.message.contains("corrupt"), "{err}");
        fs::remove_file(&path).unwrap();
        let err = check_input("C1 output", &digest).unwrap_err();
        assert!(err.message.contains("missing"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
