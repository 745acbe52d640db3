//! Times `cfx_linalg::conv_flex` with the samples' matrix products grouped by column count
//! (`set_min_columns`) against one product per sample, layer by layer: the DCGAN's transposed
//! and plain convolutions (batch 64, ngf = ndf = 64) and the IB-INN's subnet convolutions
//! (batch 128). One forward and backward pass each; the settings in turn, round after round,
//! so that a slow spell of the machine hits all of them. docs/results.md, "Small planes
//! grouped into one product".
//!
//! `cargo run --release -p cfx-flows --example conv_groups` (`COLUMNS=1,64,256` picks the
//! settings, the first being the baseline of the last column)

use std::time::Instant;

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use cfx_linalg::conv_flex::{conv_transpose2d_flex, conv2d_flex, set_min_columns};

type B = Autodiff<Flex>;

const ROUNDS: usize = 9;

#[path = "shared/timing.rs"]
mod timing;
use timing::{median, touch_grads};

#[path = "shared/ibinn_convs.rs"]
mod ibinn_convs;
use ibinn_convs::IBINN_CONVS;

/// One layer: the input's shape, the weight's, stride, padding, and whether it is transposed.
#[derive(Clone, Copy)]
struct Layer {
    name: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    stride: usize,
    pad: usize,
    transposed: bool,
}

const fn up(name: &'static str, n: usize, c_in: usize, c_out: usize, size: usize) -> Layer {
    let (stride, pad) = if size == 1 { (1, 0) } else { (2, 1) };
    Layer {
        name,
        x: [n, c_in, size, size],
        w: [c_in, c_out, 4, 4],
        stride,
        pad,
        transposed: true,
    }
}

const fn down(name: &'static str, n: usize, c_in: usize, c_out: usize, size: usize) -> Layer {
    Layer {
        name,
        x: [n, c_in, size, size],
        w: [c_out, c_in, 4, 4],
        stride: 2,
        pad: 1,
        transposed: false,
    }
}

const DCGAN: [Layer; 9] = [
    up("G 100→512, 1×1 → 4×4", 64, 100, 512, 1),
    up("G 512→256, 4×4 → 8×8", 64, 512, 256, 4),
    up("G 256→128, 8×8 → 16×16", 64, 256, 128, 8),
    up("G 128→64, 16×16 → 32×32", 64, 128, 64, 16),
    Layer {
        name: "G 64→1, 1×1 kernel, crop to 28×28",
        x: [64, 64, 32, 32],
        w: [64, 1, 1, 1],
        stride: 1,
        pad: 2,
        transposed: true,
    },
    down("D 1→64, 28×28 → 14×14", 64, 1, 64, 28),
    down("D 64→128, 14×14 → 7×7", 64, 64, 128, 14),
    down("D 128→256, 7×7 → 3×3", 64, 128, 256, 7),
    down("D 256→1, 3×3 → 1×1", 64, 256, 1, 3),
];

/// One forward and backward pass, in ms.
fn once(l: &Layer, x: &Tensor<B, 4>, w: &Tensor<B, 4>) -> f64 {
    let (x, w) = (
        x.clone().detach().require_grad(),
        w.clone().detach().require_grad(),
    );
    let t = Instant::now();
    let y = if l.transposed {
        let o = ConvTransposeOptions::new([l.stride; 2], [l.pad; 2], [0, 0], [1, 1], 1);
        conv_transpose2d_flex::<NoCheckpointing>(x.clone(), w.clone(), None, o)
    } else {
        let o = ConvOptions::new([l.stride; 2], [l.pad; 2], [1, 1], 1);
        conv2d_flex::<NoCheckpointing>(x.clone(), w.clone(), None, o)
    };
    let grads = y.sum().backward();
    touch_grads(&grads, &[&x, &w]);
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let columns: Vec<usize> = std::env::var("COLUMNS")
        .unwrap_or_else(|_| "1,64,128,256,512".into())
        .split(',')
        .map(|v| v.trim().parse().expect("COLUMNS: comma-separated integers"))
        .collect();
    let ibinn = IBINN_CONVS.map(|(ci, co, s, k)| Layer {
        name: "IB-INN",
        x: [128, ci, s, s],
        w: [co, ci, k, k],
        stride: 1,
        pad: k / 2,
        transposed: false,
    });
    let d = Default::default();
    let normal = Distribution::Normal(0.0, 1.0);
    let head: Vec<String> = columns.iter().map(|c| format!("{c} columns")).collect();
    println!(
        "| layer | input | {} | {} / {} |",
        head.join(" | "),
        head.last().unwrap(),
        head[0]
    );
    println!("| --- | --- |{}", " ---: |".repeat(columns.len() + 1));
    let (mut totals_dcgan, mut totals_ibinn) = (vec![0.0; columns.len()], vec![0.0; columns.len()]);
    for l in DCGAN.iter().chain(ibinn.iter()) {
        let x = Tensor::<B, 4>::random(l.x, normal, &d);
        let w = Tensor::<B, 4>::random(l.w, normal, &d);
        let mut times = vec![Vec::new(); columns.len()];
        for round in 0..=ROUNDS {
            for (t, &c) in times.iter_mut().zip(&columns) {
                set_min_columns(c);
                let ms = once(l, &x, &w);
                if round > 0 {
                    t.push(ms);
                }
            }
        }
        let med: Vec<f64> = times.into_iter().map(median).collect();
        let totals = if l.name == "IB-INN" {
            &mut totals_ibinn
        } else {
            &mut totals_dcgan
        };
        totals.iter_mut().zip(&med).for_each(|(t, m)| *t += m);
        let name = if l.name == "IB-INN" {
            format!("IB-INN {}→{}, {}×{}", l.x[1], l.w[0], l.w[2], l.w[3])
        } else {
            l.name.to_string()
        };
        let cells: Vec<String> = med.iter().map(|m| format!("{m:.2} ms")).collect();
        println!(
            "| {name} | {:?} | {} | {:.2} |",
            l.x,
            cells.join(" | "),
            med.last().unwrap() / med[0]
        );
    }
    for (what, totals) in [
        ("DCGAN, all layers", totals_dcgan),
        ("IB-INN, one of each", totals_ibinn),
    ] {
        let cells: Vec<String> = totals.iter().map(|m| format!("{m:.2} ms")).collect();
        println!(
            "| **{what}** | | {} | {:.2} |",
            cells.join(" | "),
            totals.last().unwrap() / totals[0]
        );
    }
}
