//! `rifle summary RUN_DIR...`: one line per run, read back from the run directory (its `pipeline.yaml` and
//! `metrics.jsonl`), so it works on finished, stopped and old runs alike.
use crate::metrics;
use anyhow::{Context, Result};
use std::path::Path;

/// One run's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub name: String,
    /// The regularizers and strategies, e.g. `l2 + rifle` (`-` for none).
    pub method: String,
    pub final_top1: Option<f64>,
    /// Best test top-1 and its epoch (1-based).
    pub best: Option<(f64, usize)>,
    pub epochs: usize,
    /// Training plus evaluation time, summed over the epoch lines.
    pub seconds: f64,
}

/// Plugin names of a pipeline list section (`[{l2: {...}}, rifle]`).
fn plugin_names(section: Option<&serde_yaml::Value>) -> Vec<String> {
    let items = section.and_then(|v| v.as_sequence()).cloned().unwrap_or_default();
    items
        .iter()
        .filter_map(|item| match item {
            serde_yaml::Value::String(s) => Some(s.clone()),
            serde_yaml::Value::Mapping(m) => m.keys().next().and_then(|k| k.as_str()).map(str::to_string),
            _ => None,
        })
        .collect()
}

pub fn read(dir: &Path) -> Result<RunSummary> {
    let pipeline_file = dir.join("pipeline.yaml");
    let text = std::fs::read_to_string(&pipeline_file).with_context(|| format!("{}: not a run directory (no pipeline.yaml)", dir.display()))?;
    let pipeline: serde_yaml::Value = serde_yaml::from_str(&text).with_context(|| format!("{}: not valid YAML", pipeline_file.display()))?;
    let mut methods = plugin_names(pipeline.get("regularizers"));
    methods.extend(plugin_names(pipeline.get("strategies")));
    let (epochs, _) = metrics::read(dir)?;
    let tests: Vec<&metrics::EpochLine> = epochs.iter().filter(|e| e.split == "test").collect();
    let best = tests.iter().filter_map(|e| e.top1.map(|t| (t, e.epoch + 1))).fold(None, |best: Option<(f64, usize)>, (t, e)| match best {
        Some((b, _)) if b >= t => best,
        _ => Some((t, e)),
    });
    Ok(RunSummary {
        name: pipeline.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string(),
        method: if methods.is_empty() { "-".into() } else { methods.join(" + ") },
        final_top1: tests.last().and_then(|e| e.top1),
        best,
        epochs: tests.len(),
        seconds: epochs.iter().map(|e| e.seconds).sum(),
    })
}

/// The table `rifle summary` prints.
pub fn table(dirs: &[impl AsRef<Path>]) -> Result<String> {
    let pct = |t: f64| format!("{:.2}%", 100.0 * t);
    let mut rows = vec![["run", "method", "final top-1", "best top-1 (epoch)", "epochs", "time", "directory"].map(String::from)];
    for dir in dirs {
        let dir = dir.as_ref();
        let s = read(dir)?;
        rows.push([
            s.name,
            s.method,
            s.final_top1.map(pct).unwrap_or_else(|| "-".into()),
            s.best.map(|(t, e)| format!("{} ({e})", pct(t))).unwrap_or_else(|| "-".into()),
            s.epochs.to_string(),
            format!("{:.1}s", s.seconds),
            dir.display().to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..7).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    Ok(rows
        .iter()
        .map(|r| {
            let cells: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect())
}
