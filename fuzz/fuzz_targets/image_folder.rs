//! An image folder built from arbitrary bytes — a partition file and one image file — loaded
//! as a split: an error naming the problem or a set of the asked shape, never a panic.
#![no_main]

use cfx_datasets::Split;
use cfx_datasets::image_folder::{FolderShape, image_folder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let (partition, image) = rest.split_at(usize::from(cut).min(rest.len()));
    let dir = std::env::temp_dir().join(format!("cfx-fuzz-folder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("img_align_celeba")).unwrap();
    // Odd first bytes leave the partition file out: the hash split of a flat folder instead.
    if cut % 2 == 0 {
        std::fs::write(dir.join("list_eval_partition.txt"), partition).unwrap();
    }
    std::fs::write(dir.join("img_align_celeba").join("000001.png"), image).unwrap();
    let shape = FolderShape {
        channels: 3,
        size: 8,
    };
    for split in [Split::Train, Split::Test] {
        if let Ok(set) = image_folder(&dir, split, shape, None) {
            assert_eq!(set.image_shape(), [3, 8, 8]);
        }
    }
});
