//! Image folders: CelebA as distributed (`img_align_celeba/` beside `list_eval_partition.txt`),
//! torchvision's `ImageFolder` layout (one sub-folder per class), or a flat folder of images.
//!
//! Every image is decoded (PNG or JPEG), converted to grey or RGB, scaled so that its shorter
//! side is the target size and centre-cropped to a square — torchvision's `Resize(size)` then
//! `CenterCrop(size)`, the preprocessing of the Glow reference (rosinality/glow-pytorch) for
//! CelebA 64×64. The result is an in-memory [`ImageSet`] of bytes like every other dataset.
//!
//! Splits. With a partition file (`list_eval_partition.txt` or Kaggle's `.csv`), train is
//! partition 0 and test partition 2; partition 1 (CelebA's validation images) belongs to
//! neither, because no trainer here selects models on a validation set. Without one, a file is
//! a test image when the first byte of the SHA-256 of its path relative to the folder is
//! divisible by 10 (about 10 %): the split depends on the file alone, so it stays the same
//! when files are added or removed and on every machine.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};
use sha2::{Digest, Sha256};

use crate::error::{DatasetError, Result};
use crate::image_set::ImageSet;
use crate::mnist::Split;

/// Partition files CelebA ships (the `.txt`) or Kaggle's copy of it uses (the `.csv`).
const PARTITION_FILES: [&str; 2] = ["list_eval_partition.txt", "list_eval_partition.csv"];
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// What every image of the folder becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderShape {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Side of the square images.
    pub size: usize,
}

impl FolderShape {
    /// CelebA as the Glow reference trains on it.
    pub const CELEBA: Self = Self {
        channels: 3,
        size: 64,
    };

    /// `[C, H, W]` to a folder shape: square, grey or RGB.
    pub fn from_image_shape([c, h, w]: [usize; 3]) -> Result<Self> {
        if h != w || h == 0 || !(c == 1 || c == 3) {
            return Err(DatasetError::Invalid(format!(
                "image folders load square grey or RGB images; the model takes {c}×{h}×{w}"
            )));
        }
        Ok(Self {
            channels: c,
            size: h,
        })
    }
}

/// The files of one split and the class of each, before decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderListing {
    pub files: Vec<PathBuf>,
    pub labels: Vec<u8>,
    pub class_names: Vec<String>,
}

/// Lists the images of `split` in `dir` (sorted by path, so the order is the same everywhere).
pub fn list_image_folder(dir: &Path, split: Split) -> Result<FolderListing> {
    if !dir.is_dir() {
        return Err(DatasetError::Invalid(format!(
            "image folder {} does not exist or is not a folder",
            dir.display()
        )));
    }
    if let Some(partition) = PARTITION_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
    {
        return list_partitioned(dir, &partition, split);
    }
    let all = class_layout(dir)?;
    let mut listing = FolderListing {
        files: vec![],
        labels: vec![],
        class_names: all.class_names,
    };
    for (path, label) in all.files.into_iter().zip(all.labels) {
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        if is_test_file(rel) == (split == Split::Test) {
            listing.files.push(path);
            listing.labels.push(label);
        }
    }
    if listing.files.is_empty() {
        return Err(DatasetError::Invalid(format!(
            "{}: the {} split is empty (about 1 image in 10 is a test image; add images or a \
             list_eval_partition.txt)",
            dir.display(),
            split.name()
        )));
    }
    Ok(listing)
}

/// Loads the images of `split` in `dir`, at most the first `limit` of them, decoding on every
/// core. The error names the file that failed.
pub fn image_folder(
    dir: &Path,
    split: Split,
    shape: FolderShape,
    limit: Option<usize>,
) -> Result<ImageSet> {
    if !(shape.channels == 1 || shape.channels == 3) || shape.size == 0 {
        return Err(DatasetError::Invalid(format!(
            "image folders load grey (1) or RGB (3) images of a positive size, not {} channels \
             of size {}",
            shape.channels, shape.size
        )));
    }
    let mut listing = list_image_folder(dir, split)?;
    if let Some(n) = limit {
        listing.files.truncate(n);
        listing.labels.truncate(n);
    }
    let pixels = decode_all(&listing.files, shape)?;
    let name = format!("{}/{}", dir.display(), split.name());
    ImageSet::new(
        name,
        [shape.channels, shape.size, shape.size],
        pixels,
        listing.labels,
        listing.class_names,
    )
}

/// One image, `[C, size, size]` bytes: shorter side scaled to `size` (triangle filter, i.e.
/// bilinear with antialiasing when shrinking), then the centre square.
pub fn load_image(path: &Path, shape: FolderShape) -> Result<Vec<u8>> {
    let bad = |reason: String| DatasetError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let img = ImageReader::open(path)
        .map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?
        .decode()
        .map_err(|e| bad(e.to_string()))?;
    Ok(fit_square(&img, shape))
}

/// Scales and crops an image to `shape` (see [`load_image`]).
pub fn fit_square(img: &DynamicImage, shape: FolderShape) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let s = shape.size;
    let short = w.min(h).max(1);
    // torchvision's Resize(int): the shorter side becomes `s`, the longer keeps the aspect
    // ratio, truncated.
    let (nw, nh) = if w <= h {
        (s, (s * h / short).max(s))
    } else {
        ((s * w / short).max(s), s)
    };
    let resized = if (nw, nh) == (w, h) {
        img.clone()
    } else {
        img.resize_exact(nw as u32, nh as u32, FilterType::Triangle)
    };
    // CenterCrop's offsets: round((W − s) / 2).
    let (x0, y0) = (
        ((nw - s) as f64 / 2.0).round(),
        ((nh - s) as f64 / 2.0).round(),
    );
    let cropped = resized.crop_imm(x0 as u32, y0 as u32, s as u32, s as u32);
    if shape.channels == 1 {
        cropped.to_luma8().into_raw()
    } else {
        // Interleaved RGB to planar [C, H, W].
        let rgb = cropped.to_rgb8().into_raw();
        let mut out = vec![0u8; 3 * s * s];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * s * s + i] = px[c];
            }
        }
        out
    }
}

fn decode_all(files: &[PathBuf], shape: FolderShape) -> Result<Vec<u8>> {
    let per_image = shape.channels * shape.size * shape.size;
    let mut out = vec![0u8; files.len() * per_image];
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = files.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .zip(out.chunks_mut(chunk * per_image))
            .map(|(files, out)| {
                scope.spawn(move || -> Result<()> {
                    for (file, dst) in files.iter().zip(out.chunks_exact_mut(per_image)) {
                        dst.copy_from_slice(&load_image(file, shape)?);
                    }
                    Ok(())
                })
            })
            .collect();
        // The first failing file in path order, so that the message is the same every run.
        workers
            .into_iter()
            .map(|w| w.join().expect("image decoding thread panicked"))
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(out)
}

fn is_image(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| DatasetError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io)?;
    entries.sort();
    Ok(entries)
}

/// Every image below `dir`, recursively, sorted by path.
fn images_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for entry in read_dir_sorted(dir)? {
        if entry.is_dir() {
            out.extend(images_below(&entry)?);
        } else if is_image(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Every image and its class: one class per sub-folder holding images, or, when the images
/// lie in `dir` itself, one class named after the folder.
fn class_layout(dir: &Path) -> Result<FolderListing> {
    let entries = read_dir_sorted(dir)?;
    let direct: Vec<PathBuf> = entries.iter().filter(|p| is_image(p)).cloned().collect();
    let mut classes = vec![];
    for sub in entries.iter().filter(|p| p.is_dir()) {
        let files = images_below(sub)?;
        if !files.is_empty() {
            classes.push((sub.clone(), files));
        }
    }
    let no_images = || {
        DatasetError::Invalid(format!(
            "{}: no PNG or JPEG images found (expected images in the folder, one sub-folder \
             of images per class, or CelebA's img_align_celeba/ with list_eval_partition.txt)",
            dir.display()
        ))
    };
    match (direct.is_empty(), classes.is_empty()) {
        (true, true) => Err(no_images()),
        (false, false) => Err(DatasetError::Invalid(format!(
            "{}: holds images ({}) beside class sub-folders ({}); put every image in a class \
             sub-folder, or keep them all in the folder itself",
            dir.display(),
            direct[0].display(),
            classes[0].0.display()
        ))),
        (false, true) => Ok(FolderListing {
            labels: vec![0; direct.len()],
            files: direct,
            class_names: vec![folder_name(dir, "images")],
        }),
        (true, false) => {
            if classes.len() > 256 {
                return Err(DatasetError::Invalid(format!(
                    "{}: {} class sub-folders, at most 256 are supported",
                    dir.display(),
                    classes.len()
                )));
            }
            let mut listing = FolderListing {
                files: vec![],
                labels: vec![],
                class_names: vec![],
            };
            for (c, (sub, files)) in classes.into_iter().enumerate() {
                let name = sub.file_name().unwrap_or_default().to_string_lossy();
                listing.class_names.push(name.into_owned());
                listing
                    .labels
                    .extend(std::iter::repeat_n(c as u8, files.len()));
                listing.files.extend(files);
            }
            Ok(listing)
        }
    }
}

fn is_test_file(rel: &Path) -> bool {
    // Separators as '/', so that Windows and Unix split alike.
    let key = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    Sha256::digest(key.as_bytes())[0] % 10 == 0
}

/// CelebA's split: `<file> <partition>` lines (or `image_id,partition` CSV rows), images in
/// `img_align_celeba/` (Kaggle: `img_align_celeba/img_align_celeba/`) or beside the file.
fn list_partitioned(dir: &Path, partition: &Path, split: Split) -> Result<FolderListing> {
    let text = std::fs::read_to_string(partition).map_err(|source| DatasetError::Io {
        path: partition.to_path_buf(),
        source,
    })?;
    let wanted = match split {
        Split::Train => 0,
        Split::Test => 2,
    };
    let mut names = vec![];
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.starts_with("image_id")) {
            continue;
        }
        let fields: Vec<&str> = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|f| !f.is_empty())
            .collect();
        let bad = |what: &str| {
            DatasetError::Invalid(format!(
                "{} line {}: {what} in {line:?} (expected `<image file> <0|1|2>`)",
                partition.display(),
                i + 1
            ))
        };
        let [file, part] = fields[..] else {
            return Err(bad("not two fields"));
        };
        let part: u8 = part
            .parse()
            .ok()
            .filter(|p| *p <= 2)
            .ok_or_else(|| bad("partition is not 0, 1 or 2"))?;
        if !seen.insert(file.to_string()) {
            return Err(bad("the file is listed twice"));
        }
        if part == wanted {
            names.push(file.to_string());
        }
    }
    if names.is_empty() {
        return Err(DatasetError::Invalid(format!(
            "{} lists no {} images (partition {wanted})",
            partition.display(),
            split.name()
        )));
    }
    let candidates = [
        dir.join("img_align_celeba").join("img_align_celeba"),
        dir.join("img_align_celeba"),
        dir.to_path_buf(),
    ];
    let image_dir = candidates
        .iter()
        .find(|d| d.join(&names[0]).is_file())
        .ok_or_else(|| {
            DatasetError::Invalid(format!(
                "{} lists {} but it is in none of {}",
                partition.display(),
                names[0],
                candidates
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let files: Vec<PathBuf> = names.iter().map(|n| image_dir.join(n)).collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(DatasetError::Invalid(format!(
            "{} lists {}, which does not exist",
            partition.display(),
            missing.display()
        )));
    }
    Ok(FolderListing {
        labels: vec![0; files.len()],
        files,
        class_names: vec![folder_name(dir, "celeba")],
    })
}

/// The one class of a folder without class sub-folders is named after the folder.
fn folder_name(dir: &Path, fallback: &str) -> String {
    dir.file_name()
        .map_or_else(|| fallback.into(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests;
