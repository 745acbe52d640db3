//! `explain`'s PNG input path on arbitrary bytes, with and without `--resize`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xtask::explain::inputs::decode_png;

fuzz_target!(|data: &[u8]| {
    for resize in [false, true] {
        if let Ok(input) = decode_png(data, "fuzz.png", [1, 28, 28], resize) {
            assert_eq!(input.pixels.len(), 28 * 28);
            assert!(input.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
        }
    }
});
