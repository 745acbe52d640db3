//! The pack kernel against `pack_by_cat` on the CPU: parts of every rank, contiguous, permuted
//! and sliced, with and without gaps, in fewer and more parts than one launch takes.
//! `cargo test -p cfx-linalg --features wgpu --test pack` (llvmpipe will do) or
//! `--features cuda`.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::FloatTensor;
use burn_flex::Flex;
use cfx_linalg::pack::{ALIGN, pack_by_cat, pack_cube};

mod common;

use common::{Gpu, random_values};

/// How a part is seen: as stored, permuted (its row-major order is not its memory order), or
/// a slice that begins inside its buffer.
#[derive(Debug, Clone, Copy)]
enum View {
    Stored,
    Permuted,
    Sliced,
}

/// Part `k`: rank 1 to 4, a few to a few hundred values, seen through `view`.
fn part<B: Backend>(k: usize, view: View, dev: &B::Device) -> FloatTensor<B> {
    let rank = 1 + k % 4;
    let dims: Vec<usize> = (0..rank).map(|d| 1 + (k * 7 + d * 3) % 6).collect();
    let mut stored = dims.clone();
    if let View::Sliced = view {
        stored[0] += 2;
    }
    let n: usize = stored.iter().product();
    let data = TensorData::new(random_values(n, k as u64 + 1), stored.clone());
    let t: Tensor<B, 1> =
        Tensor::<B, 1>::from_data(TensorData::new(data.to_vec::<f32>().unwrap(), [n]), dev);
    fn shaped<B: Backend, const D: usize>(
        t: Tensor<B, 1>,
        s: &[usize],
        view: View,
        d0: usize,
    ) -> FloatTensor<B> {
        let t: Tensor<B, D> = t.reshape::<D, _>(<[usize; D]>::try_from(s).unwrap());
        let t = match view {
            View::Stored => t,
            View::Permuted => t.flip([0]).swap_dims(0, D - 1),
            View::Sliced => t.narrow(0, 1, d0),
        };
        t.into_primitive().tensor()
    }
    let d0 = dims[0];
    match rank {
        1 => shaped::<B, 1>(t, &stored, view, d0),
        2 => shaped::<B, 2>(t, &stored, view, d0),
        3 => shaped::<B, 3>(t, &stored, view, d0),
        _ => shaped::<B, 4>(t, &stored, view, d0),
    }
}

/// Where part `k` goes, given where the part before it ends.
type Place = fn(usize, usize) -> usize;

/// `count` parts, part `k` placed at `place(k, end)` where the part before it ends at `end`,
/// and `tail` zeros after the last.
fn case(count: usize, place: Place, tail: usize) -> Result<(), String> {
    let views = [View::Stored, View::Permuted, View::Sliced];
    let gpu_dev = Default::default();
    let cpu_dev = Default::default();
    let mut gpu_parts = vec![];
    let mut cpu_parts = vec![];
    let mut offsets = vec![];
    let mut end = 0;
    for k in 0..count {
        let view = views[k % 3];
        let g = part::<Gpu>(k, view, &gpu_dev);
        let c = part::<Flex>(k, view, &cpu_dev);
        let len = burn::tensor::TensorMetadata::shape(&c).num_elements();
        offsets.push(place(k, end));
        end = offsets[k] + len;
        gpu_parts.push(g);
        cpu_parts.push(c);
    }
    let total = end + tail;
    let read = |t: Tensor<_, 1>| t.into_data().to_vec::<f32>().unwrap();
    let got: Vec<f32> = read(Tensor::<Gpu, 1>::from_primitive(TensorPrimitive::Float(
        pack_cube(gpu_parts, &offsets, total),
    )));
    let want: Vec<f32> =
        Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(pack_by_cat::<Flex>(
            cpu_parts, &offsets, total,
        )))
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    if got == want {
        Ok(())
    } else {
        let first = got.iter().zip(&want).position(|(a, b)| a != b);
        Err(format!(
            "{count} parts, total {total}: first difference at {first:?} of {}",
            want.len()
        ))
    }
}

#[test]
fn kernel_matches_cat() {
    let cases: [(usize, Place, usize); 6] = [
        (1, |_, end| end, 0),
        (1, |_, end| end + 3, 5),
        (16, |k, end| end + k % 3, 1),
        (17, |_, end| end, 0),
        (41, |k, end| end + (k * 5) % 128, 127),
        // The optimiser's layout: every part starts at a multiple of the alignment.
        (40, |_, end| end.next_multiple_of(ALIGN), 100),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|&(count, gap, tail)| case(count, gap, tail).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A part longer than its share of one launch's cubes (4 095 cubes of 256 units): the units
/// loop over the rest.
#[test]
fn a_part_longer_than_its_cubes_is_copied_whole() {
    let n = 4095 * 256 + 1000;
    let values = random_values(n, 9);
    let gpu =
        Tensor::<Gpu, 1>::from_data(TensorData::new(values.clone(), [n]), &Default::default());
    let small = Tensor::<Gpu, 1>::from_data([1.0, 2.0], &Default::default());
    let out = pack_cube(
        vec![
            small.into_primitive().tensor(),
            gpu.into_primitive().tensor(),
        ],
        &[0, 5],
        n + 8,
    );
    let got = Tensor::<Gpu, 1>::from_primitive(TensorPrimitive::Float(out))
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let mut want = vec![1.0, 2.0, 0.0, 0.0, 0.0];
    want.extend(values);
    want.extend([0.0; 3]);
    assert!(
        got == want,
        "first difference at {:?}",
        got.iter().zip(&want).position(|(a, b)| a != b)
    );
}
