//! The run's measurements: `metrics.jsonl` (one JSON object per line: an epoch line per split, and probe
//! records) and `metrics.csv` (the epoch lines as a table), both kept in step.
use crate::plugin::Record;
use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One split's results for one epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochLine {
    pub epoch: usize,
    pub split: String,
    #[serde(deserialize_with = "number_or_null")]
    pub loss: f64,
    /// Top-1 / top-5 accuracy in [0, 1] (classification only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top5: Option<f64>,
    /// Learning rate of the backbone group at the epoch's last step.
    #[serde(deserialize_with = "number_or_null")]
    pub lr: f64,
    #[serde(deserialize_with = "number_or_null")]
    pub lr_head: f64,
    /// The regularizers' penalty Ω(w) at the end of the epoch (train lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub penalty: Option<f64>,
    /// Unreadable images left out (`on_bad_image: skip`) and non-finite steps skipped.
    pub skipped_images: usize,
    pub skipped_steps: usize,
    pub samples: usize,
    #[serde(deserialize_with = "number_or_null")]
    pub seconds: f64,
    #[serde(deserialize_with = "number_or_null")]
    pub images_per_s: f64,
}

/// JSON has no NaN or infinity: serde_json writes them as `null`. They are read back as NaN, so that a
/// diverged evaluation does not make the metrics file unreadable (or a resume drop its lines).
fn number_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// `number_or_null` for a probe record's values.
pub fn numbers_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<std::collections::BTreeMap<String, f64>, D::Error> {
    let values = std::collections::BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(values.into_iter().map(|(k, v)| (k, v.unwrap_or(f64::NAN))).collect())
}

pub const CSV_COLUMNS: &[&str] =
    &["epoch", "split", "loss", "top1", "top5", "lr", "lr_head", "penalty", "skipped_images", "skipped_steps", "samples", "seconds", "images_per_s"];

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    Epoch(EpochLine),
    Probe(Record),
}

pub struct MetricsLog {
    jsonl: PathBuf,
    csv: PathBuf,
    file: std::fs::File,
    lines: usize,
    epochs: Vec<EpochLine>,
}

impl MetricsLog {
    /// Opens the run's metrics, keeping only the first `keep` lines (what the resumed checkpoint had
    /// written; 0 for a new run).
    pub fn open(dir: &Path, keep: usize) -> Result<MetricsLog> {
        let jsonl = dir.join("metrics.jsonl");
        let kept: Vec<String> = match std::fs::read_to_string(&jsonl) {
            Ok(text) => text.lines().take(keep).map(str::to_string).collect(),
            Err(_) => vec![],
        };
        anyhow::ensure!(kept.len() == keep, "{}: has {} lines, the checkpoint expects {keep}", jsonl.display(), kept.len());
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        crate::tensorfile::write_atomic(&jsonl, body.as_bytes())?;
        let epochs = kept.iter().filter_map(|l| serde_json::from_str::<EpochLine>(l).ok().filter(|e| !e.split.is_empty())).collect();
        let file = std::fs::OpenOptions::new().append(true).open(&jsonl).with_context(|| format!("cannot open {}", jsonl.display()))?;
        Ok(MetricsLog { csv: dir.join("metrics.csv"), jsonl, file, lines: keep, epochs })
    }

    pub fn lines(&self) -> usize {
        self.lines
    }

    pub fn epochs(&self) -> &[EpochLine] {
        &self.epochs
    }

    fn append(&mut self, json: String) -> Result<()> {
        writeln!(self.file, "{json}").and_then(|_| self.file.flush()).with_context(|| format!("cannot write {}", self.jsonl.display()))?;
        self.lines += 1;
        Ok(())
    }

    pub fn record(&mut self, record: &Record) -> Result<()> {
        self.append(serde_json::to_string(record)?)
    }

    pub fn epoch(&mut self, line: EpochLine) -> Result<()> {
        self.append(serde_json::to_string(&line)?)?;
        self.epochs.push(line);
        self.write_csv()
    }

    fn write_csv(&self) -> Result<()> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(CSV_COLUMNS)?;
        let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        for e in &self.epochs {
            w.write_record([
                e.epoch.to_string(),
                e.split.clone(),
                e.loss.to_string(),
                opt(e.top1),
                opt(e.top5),
                e.lr.to_string(),
                e.lr_head.to_string(),
                opt(e.penalty),
                e.skipped_images.to_string(),
                e.skipped_steps.to_string(),
                e.samples.to_string(),
                format!("{:.3}", e.seconds),
                format!("{:.1}", e.images_per_s),
            ])?;
        }
        crate::tensorfile::write_atomic(&self.csv, &w.into_inner()?)
    }
}

/// Reads a run's `metrics.jsonl`: its epoch lines and probe records.
pub fn read(dir: &Path) -> Result<(Vec<EpochLine>, Vec<Record>)> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let (mut epochs, mut records) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str::<Line>(line).with_context(|| format!("{}:{}: not a metrics line", path.display(), i + 1))? {
            Line::Epoch(e) => epochs.push(e),
            Line::Probe(r) => records.push(r),
        }
    }
    Ok((epochs, records))
}
