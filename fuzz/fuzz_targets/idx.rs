//! The IDX reader on arbitrary bytes, raw and gzip-wrapped: an error or a well-formed array,
//! never a panic or an allocation the header merely claims.
#![no_main]

use std::path::Path;

use cfx_datasets::idx::parse_idx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(array) = parse_idx(data, Path::new("fuzz.idx")) {
        let n: usize = array.dims.iter().product();
        assert_eq!(
            n,
            array.data.len(),
            "dims {:?} disagree with the data",
            array.dims
        );
    }
});
