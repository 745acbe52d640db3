//! PNG figures in the layout of the papers: grids of grey images and signed heatmaps.

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};

/// One cell of a figure grid.
#[derive(Debug, Clone)]
pub enum Cell {
    /// Unit-space grey pixels (clamped to [0, 1] for display), `h·w` values.
    Grey(Vec<f32>),
    /// Signed values `x̂ − x`, drawn blue (negative) – white – red (positive), scaled by the
    /// figure's largest magnitude.
    Heat(Vec<f32>),
    /// Signed values on their own colour scale (their largest magnitude), for grids that put
    /// different methods side by side.
    HeatOwn(Vec<f32>),
    /// Unit-space colour pixels, channel-major (`3·h·w` values: all red, then green, blue).
    Rgb(Vec<f32>),
    Blank,
}

/// A grid of `rows × cols` cells of `h × w` pixels, magnified `scale` times.
pub struct Grid {
    pub cells: Vec<Vec<Cell>>,
    pub h: usize,
    pub w: usize,
    pub scale: usize,
}

const GAP: usize = 2;

impl Grid {
    /// The largest |value| over all heatmap cells (the colour scale, reported beside the PNG).
    pub fn heat_scale(&self) -> f32 {
        self.cells
            .iter()
            .flatten()
            .filter_map(|c| match c {
                Cell::Heat(v) => v.iter().map(|x| x.abs()).reduce(f32::max),
                _ => None,
            })
            .fold(1e-6, f32::max)
    }

    pub fn render(&self) -> RgbImage {
        let rows = self.cells.len();
        let cols = self.cells.iter().map(Vec::len).max().unwrap_or(0);
        let (ch, cw) = (self.h * self.scale, self.w * self.scale);
        let width = (cols * (cw + GAP) + GAP) as u32;
        let height = (rows * (ch + GAP) + GAP) as u32;
        let mut img = RgbImage::from_pixel(width.max(1), height.max(1), Rgb([128, 128, 128]));
        let heat = self.heat_scale();
        for (r, row) in self.cells.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                let (x0, y0) = (GAP + c * (cw + GAP), GAP + r * (ch + GAP));
                let own = match cell {
                    Cell::HeatOwn(v) => v.iter().map(|x| x.abs()).fold(1e-12, f32::max),
                    _ => heat,
                };
                for py in 0..ch {
                    for px in 0..cw {
                        let i = (py / self.scale) * self.w + px / self.scale;
                        let colour = match cell {
                            Cell::Grey(v) => {
                                let g = (v[i].clamp(0.0, 1.0) * 255.0).round() as u8;
                                Rgb([g, g, g])
                            }
                            Cell::Heat(v) | Cell::HeatOwn(v) => diverging(v[i] / own),
                            Cell::Rgb(v) => {
                                let plane = self.h * self.w;
                                let c = |k: usize| {
                                    (v[k * plane + i].clamp(0.0, 1.0) * 255.0).round() as u8
                                };
                                Rgb([c(0), c(1), c(2)])
                            }
                            Cell::Blank => continue,
                        };
                        img.put_pixel((x0 + px) as u32, (y0 + py) as u32, colour);
                    }
                }
            }
        }
        img
    }

    /// Unit-space images `[N, C, H, W]` (C = 1 or 3, flattened row-major) as a grid of `cols`
    /// columns, magnified `scale` times.
    pub fn of_images(pixels: &[f32], [n, c, h, w]: [usize; 4], cols: usize, scale: usize) -> Self {
        let size = c * h * w;
        let cells = (0..n)
            .map(|i| {
                let v = pixels[i * size..(i + 1) * size].to_vec();
                if c == 3 {
                    Cell::Rgb(v)
                } else {
                    Cell::Grey(v[..h * w].to_vec())
                }
            })
            .collect::<Vec<_>>()
            .chunks(cols.max(1))
            .map(<[Cell]>::to_vec)
            .collect();
        Self { cells, h, w, scale }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let img = self.render();
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .with_context(|| format!("cannot encode {}", path.display()))?;
        crate::fsutil::write_atomic(path, &bytes)
    }
}

/// `t ∈ [-1, 1]` to blue – white – red.
fn diverging(t: f32) -> Rgb<u8> {
    let t = t.clamp(-1.0, 1.0);
    let fade = |a: f32| (255.0 * (1.0 - a)).round() as u8;
    if t >= 0.0 {
        Rgb([255, fade(t), fade(t)])
    } else {
        Rgb([fade(-t), fade(-t), 255])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_layout_and_colours() {
        let g = Grid {
            cells: vec![
                vec![Cell::Grey(vec![0.0, 1.0, 0.5, 2.0]), Cell::Blank],
                vec![
                    Cell::Heat(vec![-0.5, 0.0, 0.25, 0.5]),
                    Cell::Grey(vec![0.0; 4]),
                ],
            ],
            h: 2,
            w: 2,
            scale: 3,
        };
        assert_eq!(g.heat_scale(), 0.5);
        let img = g.render();
        assert_eq!(
            img.dimensions(),
            (2 * 6 + 3 * GAP as u32, 2 * 6 + 3 * GAP as u32)
        );
        assert_eq!(img.get_pixel(2, 2), &Rgb([0, 0, 0]));
        assert_eq!(img.get_pixel(2 + 3, 2), &Rgb([255, 255, 255]));
        let heat_y = (2 + 6 + 2) as u32;
        assert_eq!(img.get_pixel(2, heat_y), &Rgb([0, 0, 255]), "-max is blue");
        assert_eq!(
            img.get_pixel(5, heat_y),
            &Rgb([255, 255, 255]),
            "0 is white"
        );
        assert_eq!(
            img.get_pixel(5, heat_y + 3),
            &Rgb([255, 0, 0]),
            "+max is red"
        );
        assert_eq!(
            img.get_pixel(10, 2),
            &Rgb([128, 128, 128]),
            "blank keeps the background"
        );
    }

    #[test]
    fn own_scale_heat_cells_saturate_at_their_own_maximum() {
        // A large shared-scale cell does not wash out a small own-scale one.
        let g = Grid {
            cells: vec![vec![
                Cell::Heat(vec![10.0, 0.0, 0.0, 0.0]),
                Cell::HeatOwn(vec![0.0, -0.01, 0.0, 0.0]),
            ]],
            h: 2,
            w: 2,
            scale: 1,
        };
        let img = g.render();
        assert_eq!(img.get_pixel(2, 2), &Rgb([255, 0, 0]));
        assert_eq!(img.get_pixel(2 + 2 + GAP as u32 + 1, 2), &Rgb([0, 0, 255]));
    }
}
