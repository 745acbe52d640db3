//! Crash-safe file writing: a file or folder appears complete or not at all
//! (`cfx_linalg::atomic_file` does the writing, so every crate follows one rule).

use std::path::Path;

use anyhow::{Context, Result};
pub use cfx_linalg::atomic_file::sync_dir;

/// Writes `bytes` to `path` through a temporary sibling, `fsync`, then `rename`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    cfx_linalg::atomic_file::write_atomic(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `value` as pretty-printed JSON to `path`, atomically (every command's report file).
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
}
