//! Writes a CelebA-style image folder made from MNIST: 178 × 218 RGB JPEGs (CelebA's aligned
//! size) in `img_align_celeba/` beside a `list_eval_partition.txt`, each a digit enlarged and
//! coloured on a coloured background. It exercises the whole image-folder path (JPEG, aspect
//! ratio, crop, colour, partition file) where CelebA itself is not at hand. `preview.png` shows
//! the first 16 test images as the loader hands them to a 64 × 64 model.
//!
//!     cargo run --release -p cfx-datasets --example celeba_style -- OUT_DIR [N_TRAIN] [N_TEST]

use std::fmt::Write as _;
use std::path::PathBuf;

use cfx_datasets::{FolderShape, Split, image_folder, mnist};
use image::imageops::{FilterType, overlay, resize};
use image::{GrayImage, Rgb, RgbImage};

fn colour(seed: u64) -> [u8; 3] {
    // SplitMix64: a fixed, portable colour per image.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    [z as u8, (z >> 8) as u8, (z >> 16) as u8]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: celeba_style OUT_DIR [N_TRAIN] [N_TEST]")?,
    );
    let n_train: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5000);
    let n_test: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let images = out.join("img_align_celeba");
    std::fs::create_dir_all(&images)?;
    let mut partition = String::new();
    let mut k = 0u64;
    for (split, n, part) in [(Split::Train, n_train, 0), (Split::Test, n_test, 2)] {
        let set = mnist(split)?;
        for i in 0..n.min(set.len()) {
            k += 1;
            let digit = GrayImage::from_raw(28, 28, set.image(i).to_vec()).ok_or("bad MNIST")?;
            let digit = resize(&digit, 120, 120, FilterType::Triangle);
            let (bg, fg) = (colour(2 * k), colour(2 * k + 1));
            let mut canvas = RgbImage::from_pixel(178, 218, Rgb(bg));
            let mut ink = RgbImage::new(120, 120);
            for (x, y, p) in digit.enumerate_pixels() {
                let a = f32::from(p[0]) / 255.0;
                let mix = |c: usize| (f32::from(bg[c]) * (1.0 - a) + f32::from(fg[c]) * a) as u8;
                ink.put_pixel(x, y, Rgb([mix(0), mix(1), mix(2)]));
            }
            overlay(&mut canvas, &ink, 29, 49);
            let name = format!("{k:06}.jpg");
            canvas.save(images.join(&name))?;
            writeln!(partition, "{name} {part}")?;
        }
    }
    std::fs::write(out.join("list_eval_partition.txt"), partition)?;
    let loaded = image_folder(&out, Split::Test, FolderShape::CELEBA, Some(16))?;
    let mut preview = RgbImage::new(4 * 66, 4 * 66);
    for i in 0..loaded.len() {
        let planes = loaded.image(i);
        let (x0, y0) = ((i % 4) as u32 * 66 + 1, (i / 4) as u32 * 66 + 1);
        for p in 0..64 * 64 {
            let c = |k: usize| planes[k * 64 * 64 + p];
            let (x, y) = ((p % 64) as u32, (p / 64) as u32);
            preview.put_pixel(x0 + x, y0 + y, Rgb([c(0), c(1), c(2)]));
        }
    }
    preview.save(out.join("preview.png"))?;
    println!("{k} images in {}", images.display());
    Ok(())
}
