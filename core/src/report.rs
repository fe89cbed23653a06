//! `rifle report DIR...`: the paper's kind of tables and figures from run directories.
//! - Tables (markdown and CSV): rows one axis (default `dataset`), columns another (default `method`),
//!   each cell mean ± sample std (n − 1) over the runs that share them (seeds), with the run count. One table
//!   for the final epoch's test accuracy, one for the best epoch's (each labelled), one per probe value.
//!   Regression runs report the test MSE instead of accuracy. Only finished runs count.
//! - Figures (PNG): learning curves (train and test top-1 per epoch, per method: the paper's Fig. 1) and
//!   gradient norms per stage over training from the `grad_norm` probe (Fig. 2).
//!
//! A run's labels come from its `labels.json` (written by `rifle sweep`), else `method` = the pipeline's
//! name and `dataset` = its dataset plugin; `seed` is always known.
use crate::metrics::{self, EpochLine};
use crate::plugin::Record;
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct RunResult {
    pub dir: PathBuf,
    pub labels: BTreeMap<String, String>,
    /// The pipeline's `probes` (records from other plugins, e.g. RIFLE's re-init events, are not tabled).
    pub probes: Vec<String>,
    pub planned_epochs: usize,
    pub epochs: Vec<EpochLine>,
    pub records: Vec<Record>,
}

impl RunResult {
    fn tests(&self) -> impl Iterator<Item = &EpochLine> {
        self.epochs.iter().filter(|e| e.split == "test")
    }
    pub fn finished(&self) -> bool {
        self.tests().count() >= self.planned_epochs && self.planned_epochs > 0
    }
    fn regression(&self) -> bool {
        self.tests().all(|e| e.top1.is_none())
    }
    /// The final epoch's test top-1 (%), or its test MSE for regression.
    pub fn final_value(&self) -> Option<f64> {
        self.tests().last().map(|e| e.top1.map_or(e.loss, |t| 100.0 * t))
    }
    /// The best epoch's test top-1 (%), or the lowest test MSE.
    pub fn best_value(&self) -> Option<f64> {
        if self.regression() {
            self.tests().map(|e| e.loss).reduce(f64::min)
        } else {
            self.tests().filter_map(|e| e.top1).map(|t| 100.0 * t).reduce(f64::max)
        }
    }
}

/// Finds run directories (those with a metrics.jsonl) under each path.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<RunResult>> {
    let mut dirs = Vec::new();
    for p in paths {
        find_runs(p, 4, &mut dirs).with_context(|| format!("cannot read {}", p.display()))?;
    }
    // Sweep order (run directories are prepared in order), then name.
    let written = |d: &PathBuf| std::fs::metadata(d.join("labels.json")).and_then(|m| m.modified()).ok();
    dirs.sort_by(|a, b| written(a).cmp(&written(b)).then(a.cmp(b)));
    dirs.dedup();
    if dirs.is_empty() {
        bail!("no run directories (with metrics.jsonl) under {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    dirs.iter().map(|d| read_run(d)).collect()
}

fn find_runs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    if dir.join("metrics.jsonl").exists() {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    if depth == 0 || !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            find_runs(&path, depth - 1, out)?;
        }
    }
    Ok(())
}

fn read_run(dir: &Path) -> Result<RunResult> {
    let (epochs, records) = metrics::read(dir)?;
    let pipeline: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(dir.join("pipeline.yaml")).unwrap_or_default()).unwrap_or_default();
    let mut labels: BTreeMap<String, String> = std::fs::read_to_string(dir.join("labels.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let text = |v: Option<&serde_yaml::Value>| v.and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_u64().map(|n| n.to_string())));
    let dataset = pipeline.get("dataset").and_then(|d| d.as_mapping()).and_then(|m| m.keys().next()).and_then(|k| k.as_str()).map(str::to_string);
    labels.entry("method".into()).or_insert_with(|| text(pipeline.get("name")).filter(|n| !n.is_empty()).unwrap_or_else(|| "run".into()));
    labels.entry("dataset".into()).or_insert_with(|| dataset.unwrap_or_else(|| "-".into()));
    labels.entry("seed".into()).or_insert_with(|| text(pipeline.get("seed")).unwrap_or_else(|| "0".into()));
    let planned_epochs = pipeline.get("epochs").and_then(|e| e.as_u64()).unwrap_or(0) as usize;
    let probes = pipeline
        .get("probes")
        .and_then(|p| p.as_sequence())
        .map(|items| items.iter().filter_map(|i| i.as_mapping().and_then(|m| m.keys().next()).and_then(|k| k.as_str()).map(str::to_string)).collect())
        .unwrap_or_default();
    Ok(RunResult { dir: dir.to_path_buf(), labels, probes, planned_epochs, epochs, records })
}

/// mean, sample standard deviation (undefined, `None`, for fewer than two values), count.
pub fn mean_std(values: &[f64]) -> (f64, Option<f64>, usize) {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n.max(1) as f64;
    let std = (n > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    (mean, std, n)
}

/// A table of cells keyed by (row label, column label).
pub struct Table {
    /// `final`, `best`, or `probe.value` (what `--reference` files name).
    pub key: String,
    pub title: String,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    pub cells: BTreeMap<(String, String), Vec<f64>>,
}

impl Table {
    fn build(key: &str, title: String, runs: &[&RunResult], row: &str, col: &str, value: impl Fn(&RunResult) -> Option<f64>) -> Table {
        let mut cells: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
        let (mut rows, mut cols) = (Vec::new(), Vec::new());
        for r in runs {
            let (rl, cl) = (label(r, row), label(r, col));
            if let Some(v) = value(r) {
                cells.entry((rl.clone(), cl.clone())).or_default().push(v);
                if !rows.contains(&rl) {
                    rows.push(rl);
                }
                if !cols.contains(&cl) {
                    cols.push(cl);
                }
            }
        }
        Table { key: key.to_string(), title, rows, cols, cells }
    }

    fn cell(&self, r: &str, c: &str, precision: usize) -> String {
        match self.cells.get(&(r.to_string(), c.to_string())) {
            Some(v) => {
                let (m, s, n) = mean_std(v);
                match (precision, s) {
                    (0, Some(s)) => format!("{m:.3e} ± {s:.1e} ({n})"),
                    (0, None) => format!("{m:.3e} ({n})"),
                    (_, Some(s)) => format!("{m:.precision$} ± {s:.precision$} ({n})"),
                    (_, None) => format!("{m:.precision$} ({n})"),
                }
            }
            None => "–".into(),
        }
    }

    /// The table; `reference` (column → value) adds a row of published values to compare with.
    pub fn markdown(&self, corner: &str, precision: usize, reference: Option<&(String, BTreeMap<String, f64>)>) -> String {
        let mut out = format!("### {}\n\n| {corner} | {} |\n|---|{}\n", self.title, self.cols.join(" | "), "---|".repeat(self.cols.len()));
        for r in &self.rows {
            let cells: Vec<String> = self.cols.iter().map(|c| self.cell(r, c, precision)).collect();
            out.push_str(&format!("| {r} | {} |\n", cells.join(" | ")));
        }
        if let Some((name, values)) = reference {
            let cells: Vec<String> = self.cols.iter().map(|c| values.get(c).map_or("–".into(), |v| if precision == 0 { format!("{v:.3e}") } else { format!("{v}") })).collect();
            out.push_str(&format!("| *{name}* | {} |\n", cells.join(" | ")));
        }
        out
    }

    pub fn csv(&self, group: &str, w: &mut csv::Writer<Vec<u8>>) -> Result<()> {
        for ((r, c), v) in &self.cells {
            let (m, s, n) = mean_std(v);
            let s = s.map(|s| s.to_string()).unwrap_or_default();
            w.write_record([self.key.as_str(), group, r, c, &m.to_string(), &s, &n.to_string()])?;
        }
        Ok(())
    }
}

fn label(r: &RunResult, axis: &str) -> String {
    r.labels.get(axis).cloned().unwrap_or_else(|| "-".into())
}

/// Published values to print under the tables: `{name: ..., tables: {final: {column: value}, ...}}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub name: String,
    pub tables: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Writes report.md, report.csv and the PNG figures into `out`; returns the markdown.
/// How `rifle report` lays out its tables.
pub struct Layout<'a> {
    pub rows: &'a str,
    pub cols: &'a str,
    /// One set of tables per value of this label (the paper's L2 and L2-SP blocks).
    pub group: Option<&'a str>,
}

pub fn write(paths: &[PathBuf], out: &Path, layout: &Layout, reference: Option<&Path>) -> Result<String> {
    let reference: Option<Reference> = reference
        .map(|p| -> Result<Reference> {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        })
        .transpose()?;
    let (row, col) = (layout.rows, layout.cols);
    let all = collect(paths)?;
    let runs: Vec<&RunResult> = all.iter().filter(|r| r.finished()).collect();
    for axis in [Some(row), Some(col), layout.group].into_iter().flatten() {
        let known: std::collections::BTreeSet<&str> = all.iter().flat_map(|r| r.labels.keys().map(String::as_str)).collect();
        anyhow::ensure!(
            known.contains(axis),
            "no run has the label `{axis}`; the runs' labels are: {}",
            known.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let unfinished = all.len() - runs.len();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut md = format!("## Report: {} finished runs", runs.len());
    if unfinished > 0 {
        md.push_str(&format!(" ({unfinished} unfinished run(s) left out)"));
    }
    md.push_str(&format!("\n\nRows: `{row}`; columns: `{col}`; cells aggregate the other labels (seeds).\n\n"));
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["table", layout.group.unwrap_or("group"), row, col, "mean", "std", "n"])?;
    let mut groups: Vec<String> = Vec::new();
    for r in &runs {
        let g = layout.group.map(|axis| label(r, axis)).unwrap_or_default();
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    for g in &groups {
        let members: Vec<&RunResult> = runs.iter().copied().filter(|r| layout.group.is_none_or(|axis| &label(r, axis) == g)).collect();
        if let Some(axis) = layout.group {
            md.push_str(&format!("## {axis} = {g}\n\n"));
        }
        for (i, t) in tables(&members, row, col).iter().enumerate() {
            let precision = if i >= 2 { 4 } else if members.iter().any(|r| r.regression()) { 0 } else { 2 };
            let published = reference.as_ref().and_then(|r| r.tables.get(&t.key).map(|v| (r.name.clone(), v.clone())));
            md.push_str(&t.markdown(&format!("{row} \\ {col}"), precision, published.as_ref()));
            md.push('\n');
            t.csv(g, &mut csv)?;
        }
    }
    let figures = plot_all(&runs, row, col, out)?;
    if !figures.is_empty() {
        md.push_str("### Figures\n\n");
        for f in &figures {
            md.push_str(&format!("- {}\n", f.display()));
        }
    }
    crate::tensorfile::write_atomic(&out.join("report.md"), md.as_bytes())?;
    crate::tensorfile::write_atomic(&out.join("report.csv"), &csv.into_inner()?)?;
    Ok(md)
}

/// The final-epoch and best-epoch tables, then one per value the pipelines' probes record.
fn tables(runs: &[&RunResult], row: &str, col: &str) -> Vec<Table> {
    let what = if runs.iter().any(|r| r.regression()) { "test MSE" } else { "test top-1 (%)" };
    let mut tables = vec![
        Table::build("final", format!("Final epoch: {what}, mean ± std (runs)"), runs, row, col, RunResult::final_value),
        Table::build("best", format!("Best epoch: {what}, mean ± std (runs)"), runs, row, col, RunResult::best_value),
    ];
    let mut probe_keys: Vec<(String, String)> = runs
        .iter()
        .flat_map(|r| r.records.iter().filter(|rec| r.probes.contains(&rec.probe)).flat_map(|rec| rec.values.keys().map(|k| (rec.probe.clone(), k.clone()))))
        .collect();
    probe_keys.sort();
    probe_keys.dedup();
    for (probe, key) in probe_keys.iter().filter(|(p, _)| p != "grad_norm") {
        let last = |r: &RunResult| r.records.iter().rev().find(|rec| &rec.probe == probe).and_then(|rec| rec.values.get(key).copied());
        tables.push(Table::build(&format!("{probe}.{key}"), format!("Probe `{probe}`: `{key}` at the end of training, mean ± std (runs)"), runs, row, col, last));
    }
    tables
}

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Per-epoch mean over runs of `value` (epochs where no run has a value are left out).
fn curve(runs: &[&RunResult], value: impl Fn(&RunResult) -> Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let mut sums: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
    for r in runs {
        for (x, y) in value(r) {
            let e = sums.entry((x * 1000.0).round() as i64).or_default();
            e.0 += y;
            e.1 += 1;
        }
    }
    sums.into_iter().map(|(x, (s, n))| (x as f64 / 1000.0, s / n as f64)).collect()
}

fn file_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

fn plot_all(runs: &[&RunResult], row: &str, col: &str, out: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    let mut figures = Vec::new();
    let mut rows: Vec<String> = runs.iter().map(|r| label(r, row)).collect();
    rows.dedup();
    rows.sort();
    rows.dedup();
    for rv in &rows {
        let in_row: Vec<&RunResult> = runs.iter().copied().filter(|r| &label(r, row) == rv).collect();
        let mut cols: Vec<String> = in_row.iter().map(|r| label(r, col)).collect();
        cols.sort();
        cols.dedup();
        let mut series = Vec::new();
        for (i, cv) in cols.iter().enumerate() {
            let group: Vec<&RunResult> = in_row.iter().copied().filter(|r| &label(r, col) == cv).collect();
            for (split, dashed) in [("test", false), ("train", true)] {
                let points = curve(&group, |r| r.epochs.iter().filter(|e| e.split == split).filter_map(|e| e.top1.map(|t| ((e.epoch + 1) as f64, 100.0 * t))).collect());
                if !points.is_empty() {
                    series.push(Series { name: format!("{cv} {split}"), color: i, dashed, points });
                }
            }
        }
        if !series.is_empty() {
            let path = out.join(format!("curves-{}.png", file_safe(rv)));
            line_plot(&path, &format!("Learning curves: {rv}"), "epoch", "top-1 (%)", &series, false)?;
            figures.push(path);
        }
        for cv in &cols {
            let group: Vec<&RunResult> = in_row.iter().copied().filter(|r| &label(r, col) == cv).collect();
            let mut keys: Vec<String> = group.iter().flat_map(|r| r.records.iter().filter(|x| x.probe == "grad_norm").flat_map(|x| x.values.keys().cloned())).collect();
            keys.sort();
            keys.dedup();
            let series: Vec<Series> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| Series {
                    name: k.clone(),
                    color: i,
                    dashed: false,
                    points: curve(&group, |r| r.records.iter().filter(|x| x.probe == "grad_norm").filter_map(|x| x.values.get(k).map(|v| (x.step as f64, *v))).collect()),
                })
                .filter(|s| !s.points.is_empty())
                .collect();
            if !series.is_empty() {
                let path = out.join(format!("grad-norms-{}-{}.png", file_safe(rv), file_safe(cv)));
                line_plot(&path, &format!("Gradient norms per stage: {rv}, {cv}"), "step", "Frobenius norm of the gradient", &series, true)?;
                figures.push(path);
            }
        }
    }
    Ok(figures)
}

struct Series {
    name: String,
    color: usize,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

fn line_plot(path: &Path, title: &str, xlabel: &str, ylabel: &str, series: &[Series], log_y: bool) -> Result<()> {
    let (w, h) = (960u32, 540u32);
    let mut buffer = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let ys: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|y| y.is_finite()).collect();
        let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
        let (y0, y1) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| (a.min(y), b.max(y)));
        let pad = ((y1 - y0) * 0.05).max(1e-9);
        let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
        let mut builder = ChartBuilder::on(&root);
        builder.caption(title, ("sans-serif", 24)).margin(12).x_label_area_size(40).y_label_area_size(70);
        let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK, RGBColor(230, 140, 0), RGBColor(120, 60, 160)];
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart.configure_mesh().x_desc(xlabel).y_desc(ylabel).label_style(("sans-serif", 14)).draw()?;
                for s in series {
                    let color = colors[s.color % colors.len()];
                    let style = ShapeStyle { color: color.to_rgba(), filled: false, stroke_width: if s.dashed { 1 } else { 2 } };
                    let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.1.is_finite() && (!log_y || p.1 > 0.0)).collect();
                    chart.draw_series(LineSeries::new(pts.clone(), style))?.label(s.name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
                    if s.dashed {
                        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 2, style)))?;
                    }
                }
                chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).label_font(("sans-serif", 14)).draw()?;
            }};
        }
        if log_y {
            let lo = ys.iter().copied().filter(|y| *y > 0.0).fold(f64::INFINITY, f64::min);
            let lo = if lo.is_finite() { lo * 0.8 } else { 1e-6 };
            draw!(builder.build_cartesian_2d(x0..x1, (lo..(y1 * 1.25).max(lo * 10.0)).log_scale())?);
        } else {
            draw!(builder.build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?);
        }
        root.present()?;
    }
    image::RgbImage::from_raw(w, h, buffer).context("plot buffer")?.save(path).with_context(|| format!("cannot write {}", path.display()))
}
