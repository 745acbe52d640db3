//! The tables, charts and gallery of an evaluation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use cfx_metrics::{CounterfactualSet, Summary, mean_ci};

use super::charts::{Bar, bar_chart, curves};
use super::{EvaluationReport, MemberScore, MethodResult};
use crate::explain::Method;
use crate::explain::figures::{Cell, Grid};

pub(super) fn method_name(m: Method) -> String {
    match m {
        Method::Ecinn => "GEN (ECINN)".into(),
        Method::Gb => "GB".into(),
        Method::Gl => "GL".into(),
        Method::Diffeo => "Diffeo (latent ascent)".into(),
        Method::Pixel => "Pixel ascent".into(),
        Method::C3lt => "C3LT".into(),
    }
}

/// `classifier 10 epochs, 99.13 %` for the classifiers of a suite (members with a test
/// accuracy), joined by `; `.
fn classifiers_line(scores: &[MemberScore]) -> String {
    scores
        .iter()
        .filter_map(|s| {
            let e = s.last.epoch;
            s.last.test_accuracy.map(|a| {
                format!(
                    "{} {e} epoch{}, {:.2} %",
                    s.name,
                    if e == 1 { "" } else { "s" },
                    100.0 * a
                )
            })
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `mean (ci)` with a precision that suits the magnitude.
fn cell(s: &Summary) -> String {
    mean_cell(s.mean, s.ci95)
}

fn mean_cell(mean: Option<f64>, ci95: Option<f64>) -> String {
    let Some(m) = mean else {
        return "–".into();
    };
    let digits = if m.abs() >= 100.0 {
        2
    } else if m.abs() >= 1.0 {
        3
    } else {
        4
    };
    match ci95 {
        Some(c) => format!("{m:.digits$} ({c:.digits$})"),
        None => format!("{m:.digits$}"),
    }
}

fn metric_names(r: &EvaluationReport) -> Vec<(String, String)> {
    r.methods
        .first()
        .map(|m| {
            m.metrics
                .iter()
                .map(|s| {
                    (
                        s.metric.clone(),
                        format!("{} {}", s.metric, s.direction.arrow()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn write_tables(
    out: &Path,
    r: &EvaluationReport,
    sets: &[(Method, CounterfactualSet)],
) -> Result<()> {
    let names = metric_names(r);
    let paper: Vec<&(String, String)> = names
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "Val" | "Prox" | "COUT") && !n.starts_with("kNN"))
        .collect();
    let other: Vec<&(String, String)> = names.iter().filter(|n| !paper.contains(n)).collect();
    let mut md = String::new();
    writeln!(
        md,
        "# Counterfactual evaluation: {}\n\n\
         - data range: {} (every evaluation model was trained in it)\n\
         - test images: the first {} (GB/GL may use fewer: column n; rows \"same n inputs\" score another method again on just those), one random target each, seed {}; GB and GL: {}\n\
         - evaluation models: `{}`{}; IB-INN: `{}` (ECINN's counterfactuals: {} pixels, {})\n\
         - backend: {}; total time {:.1} s\n\
         - mean (95 % CI = 1.96·σ/√n); TCV and Val over all samples, the rest over valid ones (class changed)\n",
        r.dataset,
        r.range_label,
        r.test_images,
        r.seed,
        match r.baseline_target {
            cfx_counterfactual::TargetClass::Other =>
                "any class but the predicted one (alibi's default, as in Paper 4), scored against the class reached",
            cfx_counterfactual::TargetClass::Given => "the same random target",
        },
        r.suite,
        match classifiers_line(&r.suite_models) {
            line if line.is_empty() => line,
            line => format!(" ({line})"),
        },
        r.ibinn.as_deref().unwrap_or("–"),
        r.ecinn_pixels,
        r.ecinn_alpha,
        r.backend,
        r.total_seconds
    )?;
    let mut table = |title: &str, cols: &[&(String, String)]| -> std::fmt::Result {
        writeln!(md, "## {title}\n")?;
        write!(md, "| method | n | valid |")?;
        for (_, h) in cols {
            write!(md, " {h} |")?;
        }
        writeln!(md)?;
        writeln!(md, "|---|---:|---:|{}", "---:|".repeat(cols.len()))?;
        for m in &r.methods {
            write!(md, "| {} | {} | {} |", m.label(), m.samples, m.valid)?;
            for (name, _) in cols {
                let s = m.metrics.iter().find(|s| &s.metric == name);
                write!(md, " {} |", s.map(cell).unwrap_or_else(|| "–".into()))?;
            }
            writeln!(md)?;
        }
        writeln!(md)
    };
    table("Paper 4 metrics", &paper)?;
    table("C3LT and nearest-neighbour metrics", &other)?;
    paired_table(&mut md, r, sets)?;
    writeln!(
        md,
        "## Time\n\n| method | s per counterfactual (generation) | metrics (s) | cached |\n|---|---:|---:|---|"
    )?;
    for m in r.methods.iter().filter(|m| !m.shared_inputs) {
        writeln!(
            md,
            "| {} | {:.5} | {:.1} | {} |",
            m.label(),
            m.seconds_per_counterfactual,
            m.metric_seconds,
            if m.from_cache { "yes" } else { "no" }
        )?;
    }
    let missing: Vec<&MethodResult> = r
        .methods
        .iter()
        .filter(|m| match &m.misses {
            Some(counts) => counts.values().sum::<usize>() > 0,
            None => m.valid < m.samples,
        })
        .collect();
    if !missing.is_empty() {
        writeln!(
            md,
            "\n## Samples without a counterfactual\n\n| method | n | none | why |\n|---|---:|---:|---|"
        )?;
        for m in missing {
            match &m.misses {
                Some(counts) => writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    m.label(),
                    m.samples,
                    counts.values().sum::<usize>(),
                    crate::explain::misses_line(counts)
                )?,
                None => writeln!(
                    md,
                    "| {} | {} | – | not recorded: the cache predates the reasons (--regenerate) |",
                    m.label(),
                    m.samples
                )?,
            }
        }
    }
    let with_settings: Vec<&MethodResult> = r
        .methods
        .iter()
        .filter(|m| !m.shared_inputs && m.settings.is_some())
        .collect();
    if !with_settings.is_empty() {
        writeln!(md, "\n## Settings\n")?;
        for m in with_settings {
            let toml = m.settings.as_deref().unwrap_or_default();
            writeln!(md, "{}:\n\n```toml\n{}```\n", m.label(), toml)?;
        }
    }
    if !r.heatmaps.is_empty() {
        heatmap_table(&mut md, r)?;
    }
    crate::fsutil::write_atomic(&out.join("results.md"), md.as_bytes())?;

    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record([
        "method",
        "metric",
        "direction",
        "scope",
        "n",
        "mean",
        "ci95",
    ])?;
    let rows = r
        .methods
        .iter()
        .map(|m| {
            let name = m.method.name();
            let name = match m.shared_inputs {
                true => format!("{name}:first{}", m.samples),
                false => name.to_string(),
            };
            (name, &m.metrics)
        })
        .chain(r.heatmaps.iter().map(|h| {
            (
                format!("heatmap:{}:{}", h.model.to_lowercase(), h.method.name()),
                &h.metrics,
            )
        }));
    for (name, metrics) in rows {
        for s in metrics {
            w.write_record([
                name.clone(),
                s.metric.clone(),
                format!("{:?}", s.direction).to_lowercase(),
                format!("{:?}", s.scope).to_lowercase(),
                s.n.to_string(),
                s.mean.map(|v| v.to_string()).unwrap_or_default(),
                s.ci95.map(|v| v.to_string()).unwrap_or_default(),
            ])?;
        }
    }
    crate::fsutil::write_atomic(&out.join("results.csv"), &w.into_inner()?)?;
    crate::fsutil::write_json(&out.join("results.json"), r)
}

/// Each method's result over all its inputs (not the rows that score it again on another
/// method's fewer inputs) with its counterfactual set.
fn full_sets<'a>(
    r: &'a EvaluationReport,
    sets: &'a [(Method, CounterfactualSet)],
) -> Vec<(&'a MethodResult, &'a CounterfactualSet)> {
    r.methods
        .iter()
        .filter(|m| !m.shared_inputs)
        .filter_map(|m| {
            sets.iter()
                .find(|(k, _)| *k == m.method)
                .map(|(_, s)| (m, s))
        })
        .collect()
}

/// Each per-sample metric's paired difference A − B between every two methods: the mean and
/// `1.96·σ/√n` of the per-input differences over the test images both scored (for a metric
/// over valid samples, those valid for both). The two methods share each input's difficulty,
/// so where this interval leaves out 0 their order is not the draw of inputs, even when the
/// two means' own intervals overlap.
fn paired_table(
    md: &mut String,
    r: &EvaluationReport,
    sets: &[(Method, CounterfactualSet)],
) -> std::fmt::Result {
    let full = full_sets(r, sets);
    let pairs: Vec<(usize, usize)> = (0..full.len())
        .flat_map(|a| (a + 1..full.len()).map(move |b| (a, b)))
        .collect();
    let by_input = |(m, set): (&MethodResult, &CounterfactualSet), metric: &str| {
        let s = m.metrics.iter().find(|s| s.metric == metric)?;
        (!s.scores.is_empty()).then(|| {
            s.scores
                .iter()
                .map(|&(row, v)| (set.ids[row], v))
                .collect::<BTreeMap<usize, f64>>()
        })
    };
    let mut rows = vec![];
    for (name, head) in metric_names(r) {
        // Each method's scores by test image, once per metric rather than once per pair.
        let scores: Vec<_> = full.iter().map(|&f| by_input(f, &name)).collect();
        let cells: Vec<Option<String>> = pairs
            .iter()
            .map(|&(a, b)| {
                let (x, y) = (scores[a].as_ref()?, scores[b].as_ref()?);
                let d: Vec<f64> = x
                    .iter()
                    .filter_map(|(id, v)| y.get(id).map(|w| v - w))
                    .collect();
                let (m, c) = mean_ci(&d)?;
                Some(format!("{}, n {}", mean_cell(Some(m), Some(c)), d.len()))
            })
            .collect();
        if cells.iter().any(Option::is_some) {
            rows.push((head, cells));
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(
        md,
        "## Paired differences\n\nA − B over the inputs both methods scored (for metrics over \
         valid samples: valid for both); mean (1.96·σ/√n of the differences), n inputs. An \
         interval that leaves out 0 orders the two methods on these inputs.\n"
    )?;
    write!(md, "| metric |")?;
    for &(a, b) in &pairs {
        write!(md, " {} − {} |", full[a].0.label(), full[b].0.label())?;
    }
    writeln!(md, "\n|---|{}", "---:|".repeat(pairs.len()))?;
    for (head, cells) in rows {
        write!(md, "| {head} |")?;
        for c in cells {
            write!(md, " {} |", c.as_deref().unwrap_or("–"))?;
        }
        writeln!(md)?;
    }
    writeln!(md)
}

/// `samples.csv`: one row per method and input (its test-set index, f(x), the target, f(x′),
/// whether it is valid) with each per-sample metric's score, blank where the metric did not
/// see the sample (failures under Paper 4's valid-only rule). With it two methods can be
/// compared input by input, e.g. a paired test of their Oracle agreement on shared inputs,
/// which the means and intervals of `results.csv` cannot give. Population metrics (FID) have
/// no per-sample score and no column.
pub(super) fn write_samples(
    out: &Path,
    r: &EvaluationReport,
    sets: &[(Method, CounterfactualSet)],
) -> Result<()> {
    let full = full_sets(r, sets);
    let mut columns: Vec<&str> = vec![];
    for s in full.iter().flat_map(|(m, _)| &m.metrics) {
        if !s.scores.is_empty() && !columns.contains(&s.metric.as_str()) {
            columns.push(&s.metric);
        }
    }
    let mut w = csv::Writer::from_writer(vec![]);
    let head = [
        "method",
        "test_index",
        "predicted",
        "target",
        "cf_class",
        "valid",
    ];
    w.write_record(head.iter().copied().chain(columns.iter().copied()))?;
    for (m, set) in full {
        let name = m.method.name().to_string();
        let mut cells = vec![vec![String::new(); columns.len()]; set.len()];
        for s in &m.metrics {
            if let Some(c) = columns.iter().position(|&c| c == s.metric) {
                for &(row, v) in &s.scores {
                    cells[row][c] = v.to_string();
                }
            }
        }
        for (row, scores) in cells.into_iter().enumerate() {
            let fixed = [
                name.clone(),
                set.ids[row].to_string(),
                set.predicted[row].to_string(),
                set.targets[row].to_string(),
                set.cf_predicted[row]
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                set.is_valid(row).to_string(),
            ];
            w.write_record(fixed.into_iter().chain(scores))?;
        }
    }
    crate::fsutil::write_atomic(&out.join("samples.csv"), &w.into_inner()?)
}

/// Deletion / insertion (and label-column mass) per explained model and heatmap method.
fn heatmap_table(md: &mut String, r: &EvaluationReport) -> std::fmt::Result {
    let names: Vec<(String, String)> = r.heatmaps[0]
        .metrics
        .iter()
        .map(|s| {
            (
                s.metric.clone(),
                format!("{} {}", s.metric, s.direction.arrow()),
            )
        })
        .collect();
    writeln!(
        md,
        "\n## Heatmaps\n\nPixels ranked by |h| (summed over channels), removed to black (deletion) or \
         inserted into black (insertion), 28 steps; area under the explained model's p(source). \
         Gradient methods attribute logit_p − logit_q; ECINNh is x̂ − x.\n"
    )?;
    write!(md, "| model | method | n |")?;
    for (_, h) in &names {
        write!(md, " {h} |")?;
    }
    writeln!(md, " s per map |")?;
    writeln!(md, "|---|---|---:|{}---:|", "---:|".repeat(names.len()))?;
    for h in &r.heatmaps {
        write!(md, "| {} | {} | {} |", h.model, h.method.name(), h.samples)?;
        for (name, _) in &names {
            let s = h.metrics.iter().find(|s| &s.metric == name);
            write!(md, " {} |", s.map(cell).unwrap_or_else(|| "–".into()))?;
        }
        writeln!(md, " {:.5} |", h.seconds_per_map)?;
    }
    Ok(())
}

/// Bar charts per metric, COUT curves, and the gallery; returns the files written.
pub fn write_figures(
    out: &Path,
    r: &EvaluationReport,
    sets: &[(Method, CounterfactualSet)],
    gallery: usize,
) -> Result<Vec<String>> {
    let charts = out.join("charts");
    std::fs::create_dir_all(&charts)?;
    let mut files = vec![];
    for (name, title) in metric_names(r) {
        let bars: Vec<Bar> = r
            .methods
            .iter()
            .filter_map(|m| {
                let s = m.metrics.iter().find(|s| s.metric == name)?;
                Some(Bar {
                    // The table's label of a shared-inputs row is too wide for a bar.
                    label: match m.shared_inputs {
                        true => format!("{}, same {}", m.method.name(), m.samples),
                        false => m.label(),
                    },
                    mean: s.mean?,
                    ci95: s.ci95,
                })
            })
            .collect();
        if bars.is_empty() {
            continue;
        }
        let file: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let rel = format!("charts/{}.png", file.trim_matches('-'));
        bar_chart(&title, &bars, &out.join(&rel))?;
        files.push(rel);
    }
    let lines: Vec<(String, Vec<f64>)> = r
        .methods
        .iter()
        .filter(|m| !m.shared_inputs)
        .flat_map(|m| {
            m.metrics
                .iter()
                .filter(|s| s.metric == "COUT")
                .flat_map(|s| s.curves.iter())
                .map(|c| (format!("{} {}", m.label(), c.name), c.values.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    if !lines.is_empty() {
        let rel = "charts/cout-curves.png".to_string();
        curves(
            "COUT: explained model's probability along the insertion path",
            ("fraction of the change inserted", "probability"),
            &lines,
            &out.join(&rel),
        )?;
        files.push(rel);
    }
    if gallery > 0
        && let Some((_, first)) = sets.first()
    {
        let [_, h, w] = first.shape;
        let n = gallery.min(first.len());
        let mut rows = vec![
            (0..n)
                .map(|i| Cell::Grey(first.input(i).to_vec()))
                .collect::<Vec<_>>(),
        ];
        for (_, s) in sets {
            rows.push(
                (0..n)
                    // Blank where the method did not see the input or found nothing for it.
                    .map(|i| match s.ids.iter().position(|&id| id == first.ids[i]) {
                        Some(j) if s.cf_predicted[j].is_some() => {
                            Cell::Grey(s.counterfactual(j).to_vec())
                        }
                        _ => Cell::Blank,
                    })
                    .collect(),
            );
        }
        Grid {
            cells: rows,
            h,
            w,
            scale: 3,
        }
        .save(&out.join("gallery.png"))?;
        files.push("gallery.png".into());
    }
    Ok(files)
}
