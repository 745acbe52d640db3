//! The files of a run folder on arbitrary bytes: the first byte picks the reader, the rest is
//! the file. Configurations are parsed and validated as `--resume` and `explain` read them;
//! records are decoded as model checkpoints are, both from raw bytes and as a valid record of a
//! tiny CNN damaged by the input (truncated, then bytes overwritten), which reaches the tensor
//! payloads that random bytes rarely get to.
#![no_main]

use std::sync::OnceLock;

use burn::backend::Flex;
use burn::module::Module;
use burn::record::Recorder;
use cfx_classifiers::{CnnClassifier, CnnClassifierConfig};
use libfuzzer_sys::fuzz_target;
use xtask::train::gan::GanRun;
use xtask::train::ibinn::IbInnTrainConfig;
use xtask::train::run::{Rec, decode_record, parse_toml};

type Record = <CnnClassifier<Flex> as Module<Flex>>::Record;

fn valid_record() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let model: CnnClassifier<Flex> = CnnClassifierConfig::tiny().init(&Default::default());
        Recorder::<Flex>::record(&Rec::default(), model.into_record(), ()).unwrap()
    })
}

fn decode(bytes: Vec<u8>) {
    let _ = decode_record::<Flex, Record>(bytes, "model.mpk", &Default::default());
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, file)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            if let Ok(text) = std::str::from_utf8(file)
                && let Ok(cfg) = parse_toml::<IbInnTrainConfig>(text, "config.toml")
            {
                let _ = cfg.validate();
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(file) {
                let _ = parse_toml::<GanRun>(text, "model.toml");
            }
        }
        2 => decode(file.to_vec()),
        _ => {
            // [keep: u16] then (offset: u16, byte) triples.
            let mut bytes = valid_record().to_vec();
            if let [a, b, rest @ ..] = file {
                let keep = u16::from_le_bytes([*a, *b]) as usize;
                if keep < bytes.len() {
                    bytes.truncate(keep);
                }
                for chunk in rest.chunks_exact(3) {
                    let at = u16::from_le_bytes([chunk[0], chunk[1]]) as usize;
                    if let Some(byte) = bytes.get_mut(at) {
                        *byte = chunk[2];
                    }
                }
            }
            decode(bytes);
        }
    }
});
