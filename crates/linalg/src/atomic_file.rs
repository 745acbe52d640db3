//! Crash-safe file writing: a file appears complete or not at all.
//!
//! It lives in this crate because it is the lowest one that writes files (FastFID's statistics
//! cache); ECINN's class-means cache and every run file xtask writes go through it too, so
//! there is one rule for what a killed process may leave behind.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use safetensors::{Dtype, tensor::TensorView};

/// Writes `bytes` to `path`: into a temporary file beside it (a unique name, so two processes
/// writing the same file never share one), `fsync`, then a rename over `path`, then an
/// `fsync` of the folder so the rename survives a power cut. The folder is created if needed.
/// On any error `path` keeps its old contents and the temporary file is removed; only a
/// process killed inside the write can leave one (`.name.XXXXXX.tmp`), which nothing reads.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let prefix = format!(
        ".{}.",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    );
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // tempfile makes private (0600) files; run files and caches are shared like any other
    // output, so the umask decides, as it does for `File::create`.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir);
    Ok(())
}

/// One tensor of a safetensors file: name, element type, shape and little-endian bytes.
pub type NamedBytes<'a> = (&'a str, Dtype, Vec<usize>, &'a [u8]);

/// Encodes `tensors` and `meta` as safetensors and writes them with [`write_atomic`] (the
/// statistics and means caches). The error says what failed, for the caller to name the file.
pub fn write_safetensors(
    path: &Path,
    tensors: &[NamedBytes],
    meta: HashMap<String, String>,
) -> Result<(), String> {
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (*name, v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot encode: {e}"))?;
    let bytes =
        safetensors::serialize(views, Some(meta)).map_err(|e| format!("cannot encode: {e}"))?;
    write_atomic(path, &bytes).map_err(|e| format!("cannot write: {e}"))
}

/// Makes a rename inside `dir` durable (best effort: not every filesystem allows it).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("a.bin");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.bin"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_gets_the_permissions_file_create_gives() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (ours, plain) = (dir.path().join("a"), dir.path().join("b"));
        write_atomic(&ours, b"x").unwrap();
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ours), mode(&plain));
    }

    #[test]
    fn a_failed_write_keeps_the_old_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_atomic(&path, b"kept").unwrap();
        // A folder where the file should go: the rename over it fails.
        let blocked = dir.path().join("b");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"x").unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.bin", "b"]);
    }
}
