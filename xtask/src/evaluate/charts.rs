//! PNG charts of an evaluation: one bar chart per metric with 95 % whiskers, and COUT's
//! perturbation curves. Text uses the bundled DejaVu Sans Mono, so no system fonts are needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::element::ErrorBar;
use plotters::prelude::*;

const FONT: &str = "cfx-mono";
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSansMono.ttf");
        // A font that does not parse would be a build defect; charts then fail with a clear
        // message when text is drawn.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, bytes);
    });
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One bar: a method's mean and, where it has one, its 95 % half-width.
pub struct Bar {
    pub label: String,
    pub mean: f64,
    pub ci95: Option<f64>,
}

fn save_rgb(buf: Vec<u8>, (w, h): (u32, u32), path: &Path) -> Result<()> {
    let img = image::RgbImage::from_raw(w, h, buf).context("chart buffer has the wrong size")?;
    let mut png = std::io::Cursor::new(vec![]);
    img.write_to(&mut png, image::ImageFormat::Png)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    crate::fsutil::write_atomic(path, png.get_ref())
}

fn plot_err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("cannot draw {}: {e:?}", path.display())
}

pub fn bar_chart(title: &str, bars: &[Bar], path: &Path) -> Result<()> {
    register_font();
    let size = (120 + 110 * bars.len() as u32, 360);
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    let err = plot_err(path);
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let top = bars
            .iter()
            .map(|b| b.mean + b.ci95.unwrap_or(0.0))
            .fold(0.0f64, f64::max);
        let bottom = bars
            .iter()
            .map(|b| b.mean - b.ci95.unwrap_or(0.0))
            .fold(0.0f64, f64::min);
        let pad = 0.1 * (top - bottom).max(1e-9);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(
                // A range a..b makes segments for a..=b: one per bar.
                (0..bars.len().saturating_sub(1)).into_segmented(),
                (bottom - if bottom < 0.0 { pad } else { 0.0 })..(top + pad),
            )
            .map_err(&err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => {
                    bars.get(*i).map(|b| b.label.clone()).unwrap_or_default()
                }
                _ => String::new(),
            })
            .label_style((FONT, 13))
            .draw()
            .map_err(&err)?;
        for (i, b) in bars.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), b.mean),
                    ],
                    colour.mix(0.8).filled(),
                )))
                .map_err(&err)?;
            if let Some(ci) = b.ci95 {
                chart
                    .draw_series(std::iter::once(ErrorBar::new_vertical(
                        SegmentValue::CenterOf(i),
                        b.mean - ci,
                        b.mean,
                        b.mean + ci,
                        BLACK.stroke_width(2),
                        12,
                    )))
                    .map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
    }
    save_rgb(buf, size, path)
}

/// One line per `(label, values over steps 0..=T)`, drawn over `t/T ∈ [0, 1]`; the y axis spans
/// `[0, 1]` widened to the values.
pub fn curves(
    title: &str,
    (x_label, y_label): (&str, &str),
    lines: &[(String, Vec<f64>)],
    path: &Path,
) -> Result<()> {
    register_font();
    let size = (640u32, 400u32);
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    let err = plot_err(path);
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let steps = lines.iter().map(|(_, v)| v.len()).max().unwrap_or(2).max(2) - 1;
        let values = lines.iter().flat_map(|(_, v)| v.iter().copied());
        let (lo, hi) = values
            .filter(|v| v.is_finite())
            .fold((0.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..1.0f64, lo..hi)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 13))
            .draw()
            .map_err(&err)?;
        for (i, (label, v)) in lines.iter().enumerate() {
            let colour = COLOURS[(i / 2) % COLOURS.len()];
            let style = if i % 2 == 0 {
                colour.stroke_width(2)
            } else {
                colour.mix(0.5).stroke_width(2)
            };
            chart
                .draw_series(LineSeries::new(
                    v.iter()
                        .enumerate()
                        .map(|(t, &y)| (t as f64 / steps as f64, y)),
                    style,
                ))
                .map_err(&err)?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    save_rgb(buf, size, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_written_as_png() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bars.png");
        let bars = [
            Bar {
                label: "ecinn".into(),
                mean: 0.7,
                ci95: Some(0.05),
            },
            Bar {
                label: "gb".into(),
                mean: -0.2,
                ci95: None,
            },
        ];
        bar_chart("COUT ↑", &bars, &p).unwrap();
        let img = image::open(&p).unwrap();
        assert_eq!(img.width(), 340);
        let q = dir.path().join("curves.png");
        curves(
            "COUT",
            ("t", "p"),
            &[
                ("a".into(), vec![0.0, 0.5, 1.0]),
                ("b".into(), vec![1.0, 0.2, 0.0]),
            ],
            &q,
        )
        .unwrap();
        assert!(image::open(&q).is_ok());
    }
}
