use std::path::Path;

use image::{ImageFormat, Rgb, RgbImage};

use super::*;

/// A `w`×`h` image whose pixel (x, y) is `(x, y, seed)` (so crops and channel order show).
fn gradient(w: u32, h: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, seed]))
}

fn save(img: &RgbImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

const SQUARE: FolderShape = FolderShape {
    channels: 3,
    size: 4,
};

#[test]
fn crop_is_centred_after_scaling_the_shorter_side_and_planes_are_rgb() {
    // 6×4: the shorter side already fits, so no scaling, and the crop starts at column 1.
    let img = DynamicImage::ImageRgb8(gradient(6, 4, 7));
    let out = fit_square(&img, SQUARE);
    let plane = |c: usize| &out[c * 16..(c + 1) * 16];
    let xs: Vec<u8> = plane(0)[..4].to_vec();
    assert_eq!(xs, [1, 2, 3, 4], "red plane holds x of the centre crop");
    let ys: Vec<u8> = (0..4).map(|r| plane(1)[r * 4]).collect();
    assert_eq!(ys, [0, 1, 2, 3], "green plane holds y");
    assert!(plane(2).iter().all(|&b| b == 7));

    // 16×8 constant: scaled to 8×4, cropped to 4×4, colour kept; grey is its luma.
    let flat = DynamicImage::ImageRgb8(RgbImage::from_pixel(16, 8, Rgb([200, 100, 50])));
    let rgb = fit_square(&flat, SQUARE);
    assert_eq!(rgb.len(), 48);
    assert!(rgb[..16].iter().all(|&b| b == 200) && rgb[32..].iter().all(|&b| b == 50));
    let grey = fit_square(
        &flat,
        FolderShape {
            channels: 1,
            size: 4,
        },
    );
    let luma = flat.to_luma8().get_pixel(0, 0)[0];
    assert!(grey.len() == 16 && grey.iter().all(|&b| b == luma));
}

#[test]
fn a_flat_folder_splits_every_file_into_exactly_one_split_the_same_way_each_time() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..60u8 {
        save(&gradient(5, 7, i), &dir.path().join(format!("{i:03}.png")));
    }
    std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
    let train = list_image_folder(dir.path(), Split::Train).unwrap();
    let test = list_image_folder(dir.path(), Split::Test).unwrap();
    assert_eq!(train.files.len() + test.files.len(), 60);
    assert!(
        !test.files.is_empty() && test.files.len() < 20,
        "{}",
        test.files.len()
    );
    assert!(train.files.iter().all(|f| !test.files.contains(f)));
    assert!(train.files.windows(2).all(|w| w[0] < w[1]), "sorted");
    assert_eq!(train, list_image_folder(dir.path(), Split::Train).unwrap());
    let name = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(train.class_names, [name]);

    let set = image_folder(dir.path(), Split::Train, SQUARE, Some(5)).unwrap();
    assert_eq!((set.len(), set.image_shape()), (5, [3, 4, 4]));
    // The blue plane of each image is its file number: decoded in listing order.
    for (i, f) in train.files.iter().take(5).enumerate() {
        let n: u8 = f.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        assert_eq!(set.image(i)[32], n, "{}", f.display());
    }
}

#[test]
fn class_sub_folders_become_labels_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    for (class, n) in [("cat", 30u8), ("ant", 30), ("bee", 30)] {
        for i in 0..n {
            save(
                &gradient(4, 4, i),
                &dir.path().join(class).join("deep").join(format!("{i}.PNG")),
            );
        }
    }
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let all: Vec<_> = [Split::Train, Split::Test]
        .into_iter()
        .map(|s| list_image_folder(dir.path(), s).unwrap())
        .collect();
    assert_eq!(all[0].class_names, ["ant", "bee", "cat"]);
    for listing in &all {
        for (f, &l) in listing.files.iter().zip(&listing.labels) {
            let class = &listing.class_names[l as usize];
            assert!(f.to_string_lossy().contains(&format!("/{class}/")), "{f:?}");
        }
    }
    assert_eq!(all[0].files.len() + all[1].files.len(), 90);
}

#[test]
fn celeba_layout_follows_the_partition_file() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("img_align_celeba");
    std::fs::create_dir_all(&images).unwrap();
    let mut list = String::new();
    for i in 1..=9u8 {
        let name = format!("{i:06}.jpg");
        let img = RgbImage::from_pixel(178, 218, Rgb([20 * i, 128, 255 - 20 * i]));
        img.save_with_format(images.join(&name), ImageFormat::Jpeg)
            .unwrap();
        list.push_str(&format!(
            "{name} {}\n",
            [0, 0, 0, 1, 2, 0, 2, 1, 0][i as usize - 1]
        ));
    }
    std::fs::write(dir.path().join("list_eval_partition.txt"), &list).unwrap();
    let test = image_folder(dir.path(), Split::Test, FolderShape::CELEBA, None).unwrap();
    assert_eq!((test.len(), test.image_shape()), (2, [3, 64, 64]));
    // 000005.jpg and 000007.jpg: red 100 and 140 (JPEG keeps flat colours within a few levels).
    for (i, red) in [(0, 100i32), (1, 140)] {
        let r = i32::from(test.image(i)[32 * 64 + 32]);
        assert!((r - red).abs() <= 3, "image {i}: red {r}, expected {red}");
    }
    let train = list_image_folder(dir.path(), Split::Train).unwrap();
    let names: Vec<_> = train
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "000001.jpg",
            "000002.jpg",
            "000003.jpg",
            "000006.jpg",
            "000009.jpg"
        ]
    );

    // Kaggle's CSV with its header works the same way.
    std::fs::remove_file(dir.path().join("list_eval_partition.txt")).unwrap();
    let csv = format!("image_id,partition\n{}", list.replace(' ', ","));
    std::fs::write(dir.path().join("list_eval_partition.csv"), csv).unwrap();
    assert_eq!(list_image_folder(dir.path(), Split::Train).unwrap(), train);
}

#[test]
fn bad_folders_and_files_are_named_in_the_error() {
    let err = |dir: &Path, split| {
        image_folder(dir, split, SQUARE, None)
            .unwrap_err()
            .to_string()
    };

    let missing = Path::new("/nonexistent/faces");
    assert!(err(missing, Split::Train).contains("/nonexistent/faces"));

    let empty = tempfile::tempdir().unwrap();
    let e = err(empty.path(), Split::Train);
    assert!(e.contains("no PNG or JPEG images"), "{e}");

    let broken = tempfile::tempdir().unwrap();
    for i in 0..40u8 {
        save(
            &gradient(4, 4, i),
            &broken.path().join(format!("{i:02}.png")),
        );
    }
    // Overwrite one train file with garbage: the message names it.
    let victim = list_image_folder(broken.path(), Split::Train)
        .unwrap()
        .files[3]
        .clone();
    std::fs::write(&victim, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let e = err(broken.path(), Split::Train);
    assert!(
        e.contains(&victim.display().to_string()) && e.contains("cannot decode"),
        "{e}"
    );

    let mixed = tempfile::tempdir().unwrap();
    save(&gradient(4, 4, 0), &mixed.path().join("loose.png"));
    save(&gradient(4, 4, 0), &mixed.path().join("cls").join("a.png"));
    let e = err(mixed.path(), Split::Train);
    assert!(
        e.contains("loose.png") && e.contains("class sub-folders"),
        "{e}"
    );

    let celeba = tempfile::tempdir().unwrap();
    save(&gradient(4, 4, 0), &celeba.path().join("000001.png"));
    let part = celeba.path().join("list_eval_partition.txt");
    std::fs::write(&part, "000001.png 0\n000002.png 0\n").unwrap();
    let e = err(celeba.path(), Split::Train);
    assert!(
        e.contains("000002.png") && e.contains("does not exist"),
        "{e}"
    );
    std::fs::write(&part, "000001.png 7\n").unwrap();
    let e = err(celeba.path(), Split::Train);
    assert!(e.contains("line 1") && e.contains("0, 1 or 2"), "{e}");
    std::fs::write(&part, "000001.png 0\n").unwrap();
    let e = err(celeba.path(), Split::Test);
    assert!(e.contains("no test images"), "{e}");

    let e = FolderShape::from_image_shape([2, 8, 8])
        .unwrap_err()
        .to_string();
    assert!(e.contains("2×8×8"), "{e}");
}
