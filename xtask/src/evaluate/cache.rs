//! Generated counterfactuals on disk, so metrics can be re-run without regenerating them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cfx_counterfactual::Miss;
use cfx_metrics::CounterfactualSet;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

const FORMAT: &str = "cfx-counterfactuals/1";

/// A cached set with the key it was generated under and its generation time.
#[derive(Debug, Clone)]
pub struct Cached {
    pub set: CounterfactualSet,
    pub key: String,
    pub seconds: f64,
    /// Why each sample has no counterfactual (`None`: it has one); `None` for a cache written
    /// before the reasons were kept.
    pub misses: Option<Vec<Option<Miss>>>,
}

/// The files a trained run's outputs depend on: its `model.toml` and every `.mpk` record in it
/// (one for most runs; generator, encoder and maps for C3LT).
pub fn model_files(run: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(run)
        .with_context(|| format!("cannot read {}", run.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "mpk"))
        .collect();
    files.sort();
    files.push(run.join("model.toml"));
    Ok(files)
}

/// Everything that decides what a method produces: hashed files and settings.
pub fn cache_key(files: &[&Path], settings: &str) -> Result<String> {
    let mut h = Sha256::new();
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        h.update(Sha256::digest(&bytes));
    }
    h.update(settings.as_bytes());
    Ok(format!("{:x}", h.finalize()))
}

pub fn save(path: &Path, c: &Cached) -> Result<()> {
    let s = &c.set;
    let [ch, hh, ww] = s.shape;
    let n = s.len();
    let f32s = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let i64s =
        |v: &mut dyn Iterator<Item = i64>| -> Vec<u8> { v.flat_map(|x| x.to_le_bytes()).collect() };
    let inputs = f32s(&s.inputs);
    let cfs = f32s(&s.counterfactuals);
    let predicted = i64s(&mut s.predicted.iter().map(|&v| v as i64));
    let cf_pred = i64s(&mut s.cf_predicted.iter().map(|v| v.map_or(-1, |c| c as i64)));
    let targets = i64s(&mut s.targets.iter().map(|&v| v as i64));
    let ids = i64s(&mut s.ids.iter().map(|&v| v as i64));
    let tensors = [
        ("inputs", Dtype::F32, vec![n, ch, hh, ww], &inputs[..]),
        ("counterfactuals", Dtype::F32, vec![n, ch, hh, ww], &cfs[..]),
        ("predicted", Dtype::I64, vec![n], &predicted[..]),
        ("cf_predicted", Dtype::I64, vec![n], &cf_pred[..]),
        ("targets", Dtype::I64, vec![n], &targets[..]),
        ("ids", Dtype::I64, vec![n], &ids[..]),
    ];
    let mut meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("key".to_string(), c.key.clone()),
        ("seconds".to_string(), c.seconds.to_string()),
    ]);
    // In the header rather than a tensor, so that caches written before it still load.
    if let Some(m) = &c.misses {
        meta.insert(
            "misses".to_string(),
            serde_json::to_string(m).context("misses as JSON")?,
        );
    }
    cfx_linalg::atomic_file::write_safetensors(path, &tensors, meta)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn load(path: &Path) -> Result<Cached> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bad = |what: String| anyhow::anyhow!("{}: {what}", path.display());
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not safetensors: {e}")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        bail!("{} is not a counterfactual cache", path.display());
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("corrupt: {e}")))?;
    let tensor = |name: &str, dt: Dtype| {
        let t = st
            .tensor(name)
            .map_err(|e| bad(format!("no tensor {name}: {e}")))?;
        if t.dtype() != dt {
            return Err(bad(format!(
                "tensor {name} is {:?}, expected {dt:?}",
                t.dtype()
            )));
        }
        Ok((t.shape().to_vec(), t.data().to_vec()))
    };
    let f32s = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let (shape, d) = tensor(name, Dtype::F32)?;
        Ok((
            shape,
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        ))
    };
    let i64s = |name: &str| -> Result<Vec<i64>> {
        let (_, d) = tensor(name, Dtype::I64)?;
        Ok(d.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    };
    let usizes = |name: &str| -> Result<Vec<usize>> {
        i64s(name)?
            .into_iter()
            .map(|v| usize::try_from(v).map_err(|_| bad(format!("negative value in {name}"))))
            .collect()
    };
    let (shape, inputs) = f32s("inputs")?;
    let (_, counterfactuals) = f32s("counterfactuals")?;
    if shape.len() != 4 {
        return Err(bad(format!(
            "inputs have shape {shape:?}, expected [N, C, H, W]"
        )));
    }
    let set = CounterfactualSet {
        shape: [shape[1], shape[2], shape[3]],
        inputs,
        counterfactuals,
        predicted: usizes("predicted")?,
        cf_predicted: i64s("cf_predicted")?
            .into_iter()
            .map(|v| usize::try_from(v).ok())
            .collect(),
        targets: usizes("targets")?,
        ids: usizes("ids")?,
    };
    set.validate().map_err(|e| bad(e.to_string()))?;
    let misses: Option<Vec<Option<Miss>>> = match meta.get("misses") {
        Some(text) => {
            let m: Vec<Option<Miss>> =
                serde_json::from_str(text).map_err(|e| bad(format!("misses: {e}")))?;
            if m.len() != set.len() {
                return Err(bad(format!(
                    "{} miss reasons for {} samples",
                    m.len(),
                    set.len()
                )));
            }
            if let Some(i) = (0..m.len()).find(|&i| m[i].is_some() != set.cf_predicted[i].is_none())
            {
                return Err(bad(format!(
                    "sample {i}: miss reason {:?} but counterfactual class {:?}",
                    m[i], set.cf_predicted[i]
                )));
            }
            Some(m)
        }
        None => None,
    };
    Ok(Cached {
        misses,
        set,
        key: meta.get("key").cloned().unwrap_or_default(),
        seconds: meta
            .get("seconds")
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_failures() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let set = CounterfactualSet {
            shape: [1, 2, 2],
            inputs: (0..8).map(|v| v as f32 / 8.0).collect(),
            counterfactuals: vec![0.5; 8],
            predicted: vec![3, 1],
            cf_predicted: vec![Some(4), None],
            targets: vec![4, 7],
            ids: vec![10, 11],
        };
        let mut cached = Cached {
            set: set.clone(),
            key: "k".into(),
            seconds: 1.5,
            misses: Some(vec![None, Some(Miss::LambdaNotBracketed)]),
        };
        save(&p, &cached).unwrap();
        let c = load(&p).unwrap();
        assert_eq!(c.set, set);
        assert_eq!((c.key.as_str(), c.seconds), ("k", 1.5));
        assert_eq!(c.misses, cached.misses);
        // A reason must sit where the class is missing.
        cached.misses = Some(vec![Some(Miss::NoSolution), None]);
        save(&p, &cached).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("sample 0"), "{e}");
        // Caches from before the reasons were kept still load, without them.
        cached.misses = None;
        save(&p, &cached).unwrap();
        assert_eq!(load(&p).unwrap().misses, None);
        std::fs::write(&p, b"garbage").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("c.safetensors"), "{e}");
    }
}
