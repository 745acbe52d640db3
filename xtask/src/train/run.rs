//! The folder of one training run: `runs/<name>/`.
//!
//! ```text
//! config.toml      the resolved training configuration (written at start)
//! checkpoints/     resumable checkpoints (see `checkpoint.rs`)
//! metrics.csv      one row per finished epoch (rewritten atomically from the checkpoint state)
//! train.log        human-readable progress lines
//! model.mpk        the final model (plus model.toml, its architecture)
//! test.json        the test-set evaluation of the final model
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::Backend;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::checkpoint::CheckpointStore;
use crate::fsutil::{write_atomic, write_json};

pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Opens `root` for a new run, or for resuming one. A new run refuses a folder that already
    /// holds checkpoints, so an earlier run is never overwritten by accident.
    pub fn open(root: &Path, resume: bool) -> Result<Self> {
        let run = Self {
            root: root.to_path_buf(),
        };
        let has_checkpoints = run.checkpoints(1).latest()?.is_some();
        match (resume, has_checkpoints) {
            (true, false) => bail!(
                "cannot resume: {} has no checkpoint (start a new run without --resume)",
                root.display()
            ),
            (false, true) => bail!(
                "{} already holds a run; pass --resume to continue it or choose another --name",
                root.display()
            ),
            _ => {}
        }
        fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
        Ok(run)
    }

    pub fn checkpoints(&self, keep: usize) -> CheckpointStore {
        CheckpointStore::new(self.root.join("checkpoints"), keep)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn write_toml<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        write_atomic(&self.path(name), toml::to_string_pretty(value)?.as_bytes())
    }

    pub fn read_toml<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        read_toml(&self.path(name))
    }

    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let path = self.path(name);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid", path.display()))
    }

    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        write_json(&self.path(name), value)
    }

    /// Rewrites `name` as CSV from all rows (so it always matches the checkpointed history).
    pub fn write_csv<T: Serialize>(&self, name: &str, rows: &[T]) -> Result<()> {
        let mut w = csv::Writer::from_writer(vec![]);
        for r in rows {
            w.serialize(r)?;
        }
        write_atomic(&self.path(name), &w.into_inner()?)
    }

    pub fn log(&self, line: &str) -> Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("train.log"))?;
        writeln!(f, "{line}")?;
        Ok(())
    }
}

/// How models, optimisers and checkpoints are serialised.
pub type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// The record in `<run>/model.mpk`, with an error naming the file if it is missing or does not
/// fit the architecture in `model.toml`.
pub fn read_model_record<B: Backend, R: Record<B>>(run: &Path, device: &B::Device) -> Result<R> {
    read_record(&run.join("model.mpk"), device)
}

/// A record file (model, optimiser or checkpoint part), with an error naming it.
pub fn read_record<B: Backend, R: Record<B>>(path: &Path, device: &B::Device) -> Result<R> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode_record(bytes, &path.display().to_string(), device)
}

/// [`read_record`] on the file's bytes; `source` names the file in errors (the `run_files` fuzz
/// target drives this). burn's decoder panics on some damaged files (a parameter id that is
/// not base32: `ParamId::deserialize` documents the panic; the fuzz target found it), so a
/// panic inside it is caught and reported like any other mismatch: a damaged checkpoint gives a
/// message naming it, not a backtrace.
pub fn decode_record<B: Backend, R: Record<B>>(
    bytes: Vec<u8>,
    source: &str,
    device: &B::Device,
) -> Result<R> {
    let what = || format!("{source} is damaged or does not match the architecture in model.toml");
    check_msgpack_lengths(&bytes).with_context(what)?;
    match quiet_catch(|| Recorder::<B>::load(&Rec::default(), bytes, device)) {
        Some(loaded) => loaded.with_context(what),
        None => bail!("{}", what()),
    }
}

/// Walks a MessagePack document (the record format) without allocating and checks that no
/// string, binary, array or map claims more than the bytes left after it. The decoder reserves
/// what a length header claims before reading the elements: the `run_files` fuzz target found
/// a 43-byte file whose tensor shape claimed 2³⁰ dimensions, an 8 GiB allocation. With this
/// check a damaged file can make the decoder reserve at most a few times its own size.
fn check_msgpack_lengths(bytes: &[u8]) -> Result<()> {
    use rmp::Marker as M;
    let mut at = 0usize;
    // Values still to read: the document, then the elements its containers announce.
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        let marker = *bytes
            .get(at)
            .with_context(|| format!("ends at byte {at} with values still to come"))?;
        at += 1;
        let mut length = |width: usize| -> Result<u64> {
            let field = bytes
                .get(at..at + width)
                .with_context(|| format!("ends inside a length field at byte {at}"))?;
            at += width;
            Ok(field.iter().fold(0u64, |n, &b| n << 8 | b as u64))
        };
        let (skip, items) = match M::from_u8(marker) {
            M::FixPos(_) | M::FixNeg(_) | M::Null | M::True | M::False => (0, 0),
            M::U8 | M::I8 => (1, 0),
            M::U16 | M::I16 => (2, 0),
            M::U32 | M::I32 | M::F32 => (4, 0),
            M::U64 | M::I64 | M::F64 => (8, 0),
            M::FixStr(n) => (n as u64, 0),
            M::Str8 | M::Bin8 => (length(1)?, 0),
            M::Str16 | M::Bin16 => (length(2)?, 0),
            M::Str32 | M::Bin32 => (length(4)?, 0),
            M::FixArray(n) => (0, n as u64),
            M::Array16 => (0, length(2)?),
            M::Array32 => (0, length(4)?),
            M::FixMap(n) => (0, 2 * n as u64),
            M::Map16 => (0, 2 * length(2)?),
            M::Map32 => (0, 2 * length(4)?),
            // Extension types: a type byte, then the data.
            M::FixExt1 => (2, 0),
            M::FixExt2 => (3, 0),
            M::FixExt4 => (5, 0),
            M::FixExt8 => (9, 0),
            M::FixExt16 => (17, 0),
            M::Ext8 => (length(1)? + 1, 0),
            M::Ext16 => (length(2)? + 1, 0),
            M::Ext32 => (length(4)? + 1, 0),
            M::Reserved => bail!("byte {} is not a MessagePack marker", at - 1),
        };
        let left = (bytes.len() - at) as u64;
        if skip > left {
            bail!("a value at byte {at} claims {skip} bytes; {left} are left");
        }
        at += skip as usize;
        pending += items;
        // Every value takes at least one byte.
        if pending > left - skip {
            bail!(
                "a container before byte {at} claims {pending} more values; {} bytes are left",
                left - skip
            );
        }
    }
    Ok(())
}

/// Runs `f`, turning a panic into `None` without the panic message on stderr. The message is
/// silenced for this thread only (a thread-local flag read by a hook wrapped around the one
/// installed before), so a panic elsewhere still reports as usual.
fn quiet_catch<T>(f: impl FnOnce() -> T) -> Option<T> {
    use std::cell::Cell;
    use std::panic::{AssertUnwindSafe, catch_unwind, set_hook, take_hook};
    use std::sync::Once;
    thread_local! { static QUIET: Cell<bool> = const { Cell::new(false) }; }
    static WRAP: Once = Once::new();
    WRAP.call_once(|| {
        let previous = take_hook();
        set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let out = catch_unwind(AssertUnwindSafe(f)).ok();
    QUIET.with(|q| q.set(false));
    out
}

pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_toml(&text, &path.display().to_string())
}

/// [`read_toml`] on the file's text; `source` names the file in errors.
pub fn parse_toml<T: DeserializeOwned>(text: &str, source: &str) -> Result<T> {
    toml::from_str(text).with_context(|| format!("{source} is not a valid configuration"))
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};

    use super::*;

    /// Regression test for the `run_files` fuzz target's first crash: burn's decoder panics
    /// ("Invalid id.") on a parameter id that is not base32.
    #[test]
    fn a_damaged_record_is_an_error_naming_the_file_not_a_panic() {
        let dev = Default::default();
        let lin: Linear<Flex> = LinearConfig::new(3, 2).init(&dev);
        let id = lin.weight.id.serialize();
        let mut bytes = Recorder::<Flex>::record(&Rec::default(), lin.into_record(), ()).unwrap();
        let at = bytes
            .windows(id.len())
            .position(|w| w == id.as_bytes())
            .expect("the id is stored as text");
        bytes[at] = b'!';
        type R = <Linear<Flex> as Module<Flex>>::Record;
        let Err(e) = decode_record::<Flex, R>(bytes, "damaged.mpk", &dev) else {
            panic!("a record with a broken parameter id loaded");
        };
        assert!(format!("{e:#}").contains("damaged.mpk"), "{e:#}");
    }

    /// Regression test for the `run_files` fuzz target's second finding: 43 bytes whose tensor
    /// shape claims 2³⁰ entries made the decoder reserve 8 GiB.
    #[test]
    fn a_record_claiming_more_than_it_holds_is_refused_before_decoding() {
        let oom = [
            0x86, 0x01, 0xdd, 0x2c, 0x00, 0x00, 0xff, 0xdd, 0x34, 0x33, 0x00, 0x02, 0x83, 0x01,
            0xdd, 0x2c, 0x3d, 0x33, 0xff, 0xb1, 0x32, 0xff, 0xff, 0xff, 0x82, 0x01, 0xdd, 0x2c,
            0x00, 0x00, 0xff, 0xdd, 0x34, 0x33, 0x00, 0x02, 0x83, 0xdd, 0x21, 0x2c, 0x3d, 0x33,
            0xff,
        ];
        let e = check_msgpack_lengths(&oom).unwrap_err().to_string();
        assert!(e.contains("claims"), "{e}");
        type R = <Linear<Flex> as Module<Flex>>::Record;
        let Err(e) = decode_record::<Flex, R>(oom.to_vec(), "huge.mpk", &Default::default()) else {
            panic!("a 43-byte record loaded");
        };
        assert!(format!("{e:#}").contains("huge.mpk"), "{e:#}");
    }

    #[test]
    fn valid_records_pass_the_length_check() {
        let lin: Linear<Flex> = LinearConfig::new(5, 3).init(&Default::default());
        let bytes = Recorder::<Flex>::record(&Rec::default(), lin.into_record(), ()).unwrap();
        check_msgpack_lengths(&bytes).unwrap();
        // Cut anywhere, the document ends with values still to come.
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                check_msgpack_lengths(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }
}
