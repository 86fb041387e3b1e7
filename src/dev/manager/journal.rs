//! The dev manager's state file: a journal of whole-state snapshots, one JSON document per line;
//! the last complete line is the state.
//!
//! Appended, not replaced: on ext4 (the default `auto_da_alloc` mount option) replacing a file,
//! by a rename over it or by truncating it, makes the kernel write the new data out before the
//! call returns. On the CI machine's disk that made a 30 KB save take up to 1.2 s at 100
//! sectors while an append of the same bytes took under 1 ms, and every caller of a change waits
//! for its save. damocles-manager's badger store appends (its value log) and does not fsync by
//! default either.
//!
//! A manager killed in the middle of an append leaves a partial last line: a save it had not
//! answered yet. The next start skips it and rewrites the journal as its last complete snapshot;
//! a journal is also rewritten that way once it would grow past both [`COMPACT_AT_BYTES`] and
//! [`COMPACT_AT_SNAPSHOTS`] snapshots, and after a save that failed part-way.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;
use tracing::warn;

/// A journal holding this many snapshots of the current size (and at least
/// [`COMPACT_AT_BYTES`]) is rewritten as its last one.
const COMPACT_AT_SNAPSHOTS: u64 = 16;
const COMPACT_AT_BYTES: u64 = 64 << 20;

pub(super) struct Journal {
    path: PathBuf,
    /// fsync each save before it counts (`--sync-writes`).
    sync: bool,
    /// Open for appending once the journal has been (re)written by this process.
    file: Option<File>,
    len: u64,
}

impl Journal {
    /// A journal at `path` whose first [`append`](Self::append) rewrites it whole.
    pub(super) fn new(path: &Path, sync: bool) -> Self {
        Journal {
            path: path.to_path_buf(),
            sync,
            file: None,
            len: 0,
        }
    }

    /// The last complete snapshot at `path`; None when there is no file.
    pub(super) fn load<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        last_snapshot(&bytes)
            .map(Some)
            .with_context(|| format!("the state file {} is corrupt", path.display()))
    }

    /// Adds `snapshot` (one JSON document, no newline in it) as the state; it is in the file, as
    /// far as a killed process is concerned, when this returns.
    pub(super) fn append(&mut self, snapshot: &[u8]) -> anyhow::Result<()> {
        let mut line = Vec::with_capacity(snapshot.len() + 1);
        line.extend_from_slice(snapshot);
        line.push(b'\n');
        let size = line.len() as u64;
        let limit = COMPACT_AT_BYTES.max(COMPACT_AT_SNAPSHOTS * size);
        match &mut self.file {
            Some(file) if self.len + size <= limit => {
                let appended = file
                    .write_all(&line)
                    .and_then(|()| if self.sync { file.sync_data() } else { Ok(()) });
                if let Err(err) = appended {
                    // Part of the line may be in the file: the next save rewrites it whole
                    // rather than appending after a line that would never parse.
                    self.file = None;
                    return Err(err)
                        .with_context(|| format!("cannot append to {}", self.path.display()));
                }
                self.len += size;
            }
            _ => {
                replace(&self.path, &line, self.sync)?;
                self.file = Some(
                    OpenOptions::new()
                        .append(true)
                        .open(&self.path)
                        .with_context(|| format!("cannot open {}", self.path.display()))?,
                );
                self.len = size;
            }
        }
        Ok(())
    }
}

fn last_snapshot<T: DeserializeOwned>(bytes: &[u8]) -> anyhow::Result<T> {
    let text = bytes.strip_suffix(b"\n");
    let (complete, partial) = match text {
        // Ends with a newline: every line is complete.
        Some(text) => (text, None),
        None => match bytes.iter().rposition(|&b| b == b'\n') {
            Some(newline) => (&bytes[..newline], Some(&bytes[newline + 1..])),
            // One document without a newline: a state file written before the journal. (A
            // journal's first line is never cut short: it is written whole, then renamed in.)
            None => (&bytes[..0], Some(bytes)),
        },
    };
    if let Some(partial) = partial {
        match serde_json::from_slice(partial) {
            Ok(state) => return Ok(state),
            Err(err) => warn!(
                bytes = partial.len(),
                "the state file ends in a partial save (the manager stopped while writing it, \
                 before answering the change): the save before it is the state ({err})"
            ),
        }
    }
    let last = complete
        .rsplit(|&b| b == b'\n')
        .next()
        .filter(|line| !line.is_empty())
        .context("it holds no complete snapshot")?;
    Ok(serde_json::from_slice(last)?)
}

/// Writes a copy and renames it over `path`, so a process killed meanwhile leaves the old file.
fn replace(path: &Path, bytes: &[u8], sync: bool) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    if sync {
        File::open(&partial)?.sync_all()?;
    }
    std::fs::rename(&partial, path)
        .with_context(|| format!("cannot rename into {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn journal_at(dir: &Path) -> (PathBuf, Journal) {
        let path = dir.join("state.json");
        (path.clone(), Journal::new(&path, false))
    }

    fn snapshot(n: u64) -> Vec<u8> {
        serde_json::to_vec(&json!({"n": n, "pad": "x".repeat(100)})).unwrap()
    }

    fn loaded(path: &Path) -> u64 {
        Journal::load::<Value>(path).unwrap().unwrap()["n"]
            .as_u64()
            .unwrap()
    }

    #[test]
    fn the_last_append_is_the_state_and_earlier_ones_stay_until_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut journal) = journal_at(dir.path());
        assert!(Journal::load::<Value>(&path).unwrap().is_none());
        for n in 1..=5 {
            journal.append(&snapshot(n)).unwrap();
            assert_eq!(loaded(&path), n);
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 5);
    }

    #[test]
    fn a_restarted_journal_starts_from_its_last_snapshot_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut journal) = journal_at(dir.path());
        for n in 1..=3 {
            journal.append(&snapshot(n)).unwrap();
        }
        let (_, mut again) = journal_at(dir.path());
        let state: Value = Journal::load(&path).unwrap().unwrap();
        again.append(&serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(loaded(&path), 3);
    }

    #[test]
    fn a_save_cut_short_is_skipped_and_the_one_before_is_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut journal) = journal_at(dir.path());
        journal.append(&snapshot(1)).unwrap();
        journal.append(&snapshot(2)).unwrap();
        let cut = &snapshot(3)[..40];
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(cut)
            .unwrap();
        assert_eq!(loaded(&path), 2);
    }

    #[test]
    fn a_state_file_of_one_document_without_a_newline_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, snapshot(7)).unwrap();
        assert_eq!(loaded(&path), 7);
        std::fs::write(&path, &snapshot(7)[..30]).unwrap();
        let err = Journal::load::<Value>(&path).unwrap_err();
        assert!(format!("{err:#}").contains("is corrupt"), "{err:#}");
    }

    #[test]
    fn a_complete_line_that_does_not_parse_is_corruption_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut bytes = snapshot(1);
        bytes.extend_from_slice(b"\n{\"n\": \n");
        std::fs::write(&path, bytes).unwrap();
        let err = Journal::load::<Value>(&path).unwrap_err();
        assert!(format!("{err:#}").contains("is corrupt"), "{err:#}");
    }

    #[test]
    fn a_journal_past_its_limit_is_rewritten_as_its_last_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut journal) = journal_at(dir.path());
        // Snapshots of 4 MiB: the limit is 16 of them.
        let big =
            |n: u64| serde_json::to_vec(&json!({"n": n, "pad": "x".repeat(4 << 20)})).unwrap();
        for n in 1..=17 {
            journal.append(&big(n)).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(loaded(&path), 17);
    }
}
