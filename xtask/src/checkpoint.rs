//! Checkpoints that survive a kill at any moment.
//!
//! A checkpoint is a folder of files. It is written under a temporary name, every file is
//! synced, a `COMPLETE` marker is added last, and only then is the folder renamed into place
//! and the `latest` pointer updated (itself written atomically). A reader trusts only folders
//! with the marker, so a crash mid-write leaves the previous checkpoint in charge.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::fsutil::{sync_dir, write_atomic};

const MARKER: &str = "COMPLETE";
const LATEST: &str = "latest";

pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

impl CheckpointStore {
    /// `keep`: how many checkpoints to retain (at least 1).
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Self {
        Self {
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tag for the position "`epoch` epochs and `step` further steps done"; sorts by position.
    pub fn tag(epoch: usize, step: usize) -> String {
        format!("e{epoch:04}-s{step:06}")
    }

    /// The position a checkpoint folder's tag names, `(epochs done, further steps)`; `None`
    /// for a folder name that is not a tag.
    pub fn position(ckpt: &Path) -> Option<(usize, usize)> {
        let name = ckpt.file_name()?.to_str()?;
        let (e, s) = name.strip_prefix('e')?.split_once("-s")?;
        Some((e.parse().ok()?, s.parse().ok()?))
    }

    /// Writes a checkpoint and makes it the latest. Returns its folder.
    pub fn save(&self, tag: &str, files: &[(&str, &[u8])]) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let tmp = self.dir.join(format!(".tmp-{tag}"));
        let final_dir = self.dir.join(tag);
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        for (name, bytes) in files {
            write_atomic(&tmp.join(name), bytes)?;
        }
        write_atomic(&tmp.join(MARKER), b"ok\n")?;
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir)?;
        }
        fs::rename(&tmp, &final_dir)
            .with_context(|| format!("cannot move {} into place", tmp.display()))?;
        sync_dir(&self.dir);
        write_atomic(&self.dir.join(LATEST), format!("{tag}\n").as_bytes())?;
        self.prune(tag)?;
        Ok(final_dir)
    }

    /// The newest complete checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        if let Ok(tag) = fs::read_to_string(self.dir.join(LATEST)) {
            let p = self.dir.join(tag.trim());
            if is_complete(&p) {
                return Ok(Some(p));
            }
        }
        Ok(self.complete_tags()?.pop().map(|t| self.dir.join(t)))
    }

    pub fn read(ckpt: &Path, file: &str) -> Result<Vec<u8>> {
        let p = ckpt.join(file);
        fs::read(&p)
            .with_context(|| format!("checkpoint file {} is missing or unreadable", p.display()))
    }

    fn complete_tags(&self) -> Result<Vec<String>> {
        if !self.dir.is_dir() {
            return Ok(vec![]);
        }
        let mut tags: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter(|e| is_complete(&e.path()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        tags.sort();
        Ok(tags)
    }

    fn prune(&self, current: &str) -> Result<()> {
        let tags = self.complete_tags()?;
        let excess = tags.len().saturating_sub(self.keep);
        for t in tags.iter().filter(|t| t.as_str() != current).take(excess) {
            fs::remove_dir_all(self.dir.join(t))?;
        }
        Ok(())
    }
}

fn is_complete(p: &Path) -> bool {
    p.join(MARKER).is_file()
}

/// Fails with a clear message when `path` should be a run folder but is not.
pub fn require_run_dir(path: &Path) -> Result<()> {
    if !path.is_dir() {
        bail!(
            "model folder {} does not exist (train one with `cargo xtask train …`)",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_reads_back_the_tag() {
        for (e, s) in [(0, 0), (3, 17), (12345, 1_234_567)] {
            let p = Path::new("runs/r/checkpoints").join(CheckpointStore::tag(e, s));
            assert_eq!(CheckpointStore::position(&p), Some((e, s)));
        }
        for name in ["latest", ".tmp-e0001-s000002", "e1-sx", "e-s1"] {
            assert_eq!(CheckpointStore::position(Path::new(name)), None, "{name}");
        }
    }

    #[test]
    fn keeps_the_newest_and_ignores_incomplete_folders() {
        let d = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(d.path().join("ck"), 2);
        assert!(store.latest().unwrap().is_none());
        for e in 1..=3 {
            store
                .save(&CheckpointStore::tag(e, 0), &[("a.bin", &[e as u8])])
                .unwrap();
        }
        let latest = store.latest().unwrap().unwrap();
        assert!(latest.ends_with("e0003-s000000"));
        assert_eq!(CheckpointStore::read(&latest, "a.bin").unwrap(), vec![3]);
        assert!(!d.path().join("ck/e0001-s000000").exists(), "pruned");
        assert!(d.path().join("ck/e0002-s000000").exists());

        // A crash half-way through writing e0004: its folder exists without the marker, and the
        // pointer was not updated yet. A crash after the rename but before the pointer: the
        // newest complete folder wins.
        fs::create_dir_all(d.path().join("ck/.tmp-e0004-s000000")).unwrap();
        fs::create_dir_all(d.path().join("ck/e0005-s000000")).unwrap();
        assert!(store.latest().unwrap().unwrap().ends_with("e0003-s000000"));
        fs::write(d.path().join("ck/latest"), "e0009-s000000\n").unwrap();
        assert!(store.latest().unwrap().unwrap().ends_with("e0003-s000000"));
        assert!(
            CheckpointStore::read(&latest, "missing")
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }
}
