//! Reader for the IDX format of MNIST and Fashion-MNIST (gzip-compressed or raw).
//!
//! Layout: two zero bytes, an element-type byte, a rank byte, `rank` big-endian `u32`
//! dimensions, then the elements in row-major order. The MNIST family only uses unsigned bytes
//! (type `0x08`), so other element types are recognised but rejected with a clear message.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::error::{DatasetError, Result};

/// Largest decompressed size accepted (the biggest MNIST-family file is 47 MB): a guard against
/// corrupt headers and gzip bombs, so bad input never turns into a huge allocation.
pub const MAX_IDX_BYTES: usize = 1 << 30;

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

impl IdxArray {
    pub fn len(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads an IDX file, decompressing it first when it starts with the gzip magic bytes.
pub fn read_idx_file(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_idx(&bytes, path)
}

/// Decodes IDX bytes (gzip or raw); `source` only names the data in error messages.
pub fn parse_idx(bytes: &[u8], source: &Path) -> Result<IdxArray> {
    let err = |reason: String| DatasetError::Idx {
        path: source.to_path_buf(),
        reason,
    };
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        raw =
            gunzip(bytes).map_err(|e| err(format!("gzip stream is truncated or corrupt ({e})")))?;
        raw.as_slice()
    } else {
        bytes
    };

    if bytes.len() < 4 {
        return Err(err(format!(
            "file has {} bytes, too short for the 4-byte magic number",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(err(format!(
            "bad magic number {:02x}{:02x}{:02x}{:02x} (must start with 0000)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    let elem_type = bytes[2];
    let rank = bytes[3] as usize;
    match elem_type {
        0x08 => {}
        0x09 | 0x0b | 0x0c | 0x0d | 0x0e => {
            return Err(err(format!(
                "element type 0x{elem_type:02x} is not supported (MNIST-family files hold \
                 unsigned bytes, type 0x08)"
            )));
        }
        other => return Err(err(format!("unknown element type 0x{other:02x}"))),
    }
    if rank == 0 {
        return Err(err("rank is 0".into()));
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(err(format!(
            "truncated header: rank {rank} needs {header} bytes, file has {}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            err(format!(
                "dimensions {dims:?} describe more than 1 GiB of data"
            ))
        })?;
    let body = &bytes[header..];
    if body.len() < expected {
        return Err(err(format!(
            "truncated: dimensions {dims:?} need {expected} data bytes, found {}",
            body.len()
        )));
    }
    if body.len() > expected {
        return Err(err(format!(
            "{} unexpected trailing bytes after the {expected} data bytes of dimensions {dims:?}",
            body.len() - expected
        )));
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let read = GzDecoder::new(bytes)
        .take(MAX_IDX_BYTES as u64 + 1)
        .read_to_end(&mut out)?;
    if read > MAX_IDX_BYTES {
        return Err(std::io::Error::other("decompresses to more than 1 GiB"));
    }
    Ok(out)
}

/// Serialises unsigned bytes as IDX (used by tests and by tools that write MNIST-like files).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn msg(r: Result<IdxArray>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn round_trips_raw_and_gzip() {
        let data: Vec<u8> = (0..24).collect();
        let raw = encode_idx(&[2, 3, 4], &data);
        let a = parse_idx(&raw, Path::new("x")).unwrap();
        assert_eq!(a.dims, vec![2, 3, 4]);
        assert_eq!(a.data, data);
        assert_eq!(parse_idx(&gzip(&raw), Path::new("x")).unwrap(), a);
    }

    #[test]
    fn rejects_bad_magic_and_types() {
        let mut raw = encode_idx(&[2], &[1, 2]);
        raw[0] = 7;
        assert!(
            msg(parse_idx(&raw, Path::new("f.idx")))
                .contains("f.idx: not a valid IDX file: bad magic")
        );
        let mut raw = encode_idx(&[2], &[1, 2]);
        raw[2] = 0x0d;
        assert!(msg(parse_idx(&raw, Path::new("f"))).contains("type 0x0d is not supported"));
        raw[2] = 0x42;
        assert!(msg(parse_idx(&raw, Path::new("f"))).contains("unknown element type"));
        let mut raw = encode_idx(&[2], &[1, 2]);
        raw[3] = 0;
        assert!(msg(parse_idx(&raw, Path::new("f"))).contains("rank is 0"));
    }

    #[test]
    fn rejects_truncation_and_trailing_bytes() {
        let raw = encode_idx(&[3, 2], &[0; 6]);
        assert!(
            msg(parse_idx(&raw[..raw.len() - 1], Path::new("f")))
                .contains("truncated: dimensions [3, 2] need 6")
        );
        assert!(msg(parse_idx(&raw[..6], Path::new("f"))).contains("truncated header"));
        assert!(msg(parse_idx(&raw[..2], Path::new("f"))).contains("too short"));
        let mut long = raw.clone();
        long.push(9);
        assert!(msg(parse_idx(&long, Path::new("f"))).contains("1 unexpected trailing bytes"));
        let gz = gzip(&raw);
        assert!(
            msg(parse_idx(&gz[..gz.len() / 2], Path::new("f")))
                .contains("gzip stream is truncated or corrupt")
        );
    }

    #[test]
    fn rejects_absurd_dimensions_without_allocating() {
        let mut raw = vec![0, 0, 8, 3];
        for _ in 0..3 {
            raw.extend_from_slice(&u32::MAX.to_be_bytes());
        }
        assert!(msg(parse_idx(&raw, Path::new("f"))).contains("more than 1 GiB"));
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = read_idx_file(Path::new("/nonexistent/images.idx"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/images.idx"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = parse_idx(&bytes, Path::new("fuzz"));
        }

        #[test]
        fn decodes_what_it_encodes(dims in proptest::collection::vec(1usize..5, 1..4), seed in 0u8..255) {
            let n: usize = dims.iter().product();
            let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let a = parse_idx(&encode_idx(&dims, &data), Path::new("p")).unwrap();
            proptest::prop_assert_eq!(a.dims, dims);
            proptest::prop_assert_eq!(a.data, data);
        }
    }
}
