//! What COUT's insertion path and the heatmaps' deletion/insertion curves share: an order of
//! the pixels by importance, and the area under a probability curve.

/// Pixel positions (`0..H·W`) by `Σ_c |map|`, largest first; equal values keep raster order,
/// so the order is deterministic. `map` is one `[C, H, W]` image.
pub(crate) fn pixel_order(map: &[f32], [c, h, w]: [usize; 3]) -> Vec<usize> {
    let hw = h * w;
    let importance: Vec<f32> = (0..hw)
        .map(|p| (0..c).map(|ch| map[ch * hw + p].abs()).sum())
        .collect();
    let mut order: Vec<usize> = (0..hw).collect();
    // Stable: ties stay in raster order.
    order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]));
    order
}

/// Area under a curve sampled at `T + 1` evenly spaced steps over `[0, 1]` (trapezoid rule):
/// `(1/T) Σ_{t<T} ½(f_t + f_{t+1})`.
pub(crate) fn curve_area(f: &[f64]) -> f64 {
    let t = (f.len().max(1) - 1).max(1) as f64;
    f.windows(2).map(|w| 0.5 * (w[0] + w[1])).sum::<f64>() / t
}
