//! The images to explain: test-set indices, the first images of a class, PNG files, or the
//! whole test set.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cfx_datasets::ImageSet;
use image::imageops::FilterType;

/// One input image in unit space.
#[derive(Debug, Clone)]
pub struct Input {
    /// `test:123` or the file path.
    pub source: String,
    /// The dataset label, when the image comes from the test set.
    pub label: Option<usize>,
    /// The original digit of a FakeMNIST image.
    pub aux_label: Option<usize>,
    pub pixels: Vec<f32>,
}

#[derive(Debug, Clone)]
pub enum Selection {
    Indices(Vec<usize>),
    Class { class: usize, count: usize },
    Files { paths: Vec<PathBuf>, resize: bool },
    AllTest { limit: Option<usize> },
}

pub fn select(sel: &Selection, test: &ImageSet, shape: [usize; 3]) -> Result<Vec<Input>> {
    let from_test = |i: usize| Input {
        source: format!("test:{i}"),
        label: Some(test.label(i)),
        aux_label: test.aux_label(i),
        pixels: test.unit_image(i),
    };
    match sel {
        Selection::Indices(idx) => idx
            .iter()
            .map(|&i| {
                if i >= test.len() {
                    bail!(
                        "--index {i}: {} has {} images (0..{})",
                        test.name,
                        test.len(),
                        test.len()
                    );
                }
                Ok(from_test(i))
            })
            .collect(),
        Selection::Class { class, count } => {
            if *class >= test.num_classes() {
                bail!(
                    "--class {class}: {} has classes 0..{} ({})",
                    test.name,
                    test.num_classes(),
                    test.class_names.join(", ")
                );
            }
            Ok(test
                .indices_of_class(*class)
                .into_iter()
                .take(*count)
                .map(from_test)
                .collect())
        }
        Selection::AllTest { limit } => Ok((0..limit.unwrap_or(test.len()).min(test.len()))
            .map(from_test)
            .collect()),
        Selection::Files { paths, resize } => {
            paths.iter().map(|p| read_png(p, shape, *resize)).collect()
        }
    }
}

/// A PNG as a grey unit-space image of `shape` (`[1, H, W]`).
pub fn read_png(path: &Path, shape: [usize; 3], resize: bool) -> Result<Input> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode_png(&bytes, &path.display().to_string(), shape, resize)
}

/// [`read_png`] on the file's bytes; `source` names the file in errors. Decoding runs under the
/// `image` crate's default limits (512 MiB per allocation), so a header declaring a huge image
/// is an error, not an allocation; the `png_input` fuzz target drives this function.
pub fn decode_png(bytes: &[u8], source: &str, shape: [usize; 3], resize: bool) -> Result<Input> {
    let [c, h, w] = shape;
    if c != 1 {
        bail!("PNG inputs are supported for grey models only; this model takes {c} channels");
    }
    let img = image::load_from_memory(bytes)
        .with_context(|| format!("{source}: cannot read as an image"))?
        .to_luma8();
    let (iw, ih) = img.dimensions();
    let img = if (iw as usize, ih as usize) != (w, h) {
        if !resize {
            bail!(
                "{source} is {iw}×{ih} pixels, but the model takes {w}×{h} grey images \
                 (pass --resize to scale it)"
            );
        }
        if iw == 0 || ih == 0 {
            bail!("{source} has no pixels ({iw}×{ih})");
        }
        image::imageops::resize(&img, w as u32, h as u32, FilterType::Triangle)
    } else {
        img
    };
    Ok(Input {
        source: source.to_string(),
        label: None,
        aux_label: None,
        pixels: img.pixels().map(|p| p.0[0] as f32 / 255.0).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_inputs_are_checked_and_resized_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.png");
        let big = dir.path().join("big.png");
        image::GrayImage::from_pixel(28, 28, image::Luma([255]))
            .save(&ok)
            .unwrap();
        image::GrayImage::from_pixel(56, 40, image::Luma([0]))
            .save(&big)
            .unwrap();
        let a = read_png(&ok, [1, 28, 28], false).unwrap();
        assert_eq!(a.pixels.len(), 784);
        assert!(a.pixels.iter().all(|&p| p == 1.0));
        let e = read_png(&big, [1, 28, 28], false).unwrap_err().to_string();
        assert!(
            e.contains("big.png is 56×40") && e.contains("--resize"),
            "{e}"
        );
        assert_eq!(read_png(&big, [1, 28, 28], true).unwrap().pixels.len(), 784);
        let e = read_png(&dir.path().join("none.png"), [1, 28, 28], false).unwrap_err();
        assert!(format!("{e:#}").contains("none.png"), "{e:#}");
    }

    #[test]
    fn damaged_png_bytes_are_named_errors() {
        let mut png = std::io::Cursor::new(vec![]);
        image::GrayImage::from_pixel(28, 28, image::Luma([7]))
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        let png = png.into_inner();
        assert!(decode_png(&png, "whole.png", [1, 28, 28], false).is_ok());
        for (bytes, what) in [
            (&png[..png.len() / 2], "truncated"),
            (&png[..8], "signature only"),
            (&b"not an image at all"[..], "garbage"),
        ] {
            for resize in [false, true] {
                let e = decode_png(bytes, "cut.png", [1, 28, 28], resize).unwrap_err();
                assert!(format!("{e:#}").contains("cut.png"), "{what}: {e:#}");
            }
        }
    }
}
