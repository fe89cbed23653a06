//! Loading pretrained weights into a model. Policy (docs/reliability.md):
//! - formats: safetensors, PyTorch `.pth/.pt` (zip and legacy), chosen by content, not extension;
//! - the configured key prefixes (`module.` by default) are stripped; `num_batches_tracked` is ignored;
//! - a head whose shape differs (another class count) is skipped and logged: the new head stays;
//! - any other shape mismatch is an error naming the key and both shapes;
//! - tensors matching `exclude` prefixes are not loaded (a new last layer of the same shape);
//! - fp16/bf16/f64 values are converted to the model's dtype (the model never changes dtype);
//! - missing and unexpected keys are listed; a file that matches no key is an error, not a random start.
use crate::config::Weights;
use crate::model::Net;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use tch::Tensor;

/// What loading did.
#[derive(Debug, Default, PartialEq)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    /// Model tensors the file did not have.
    pub missing: Vec<String>,
    /// File tensors the model does not have.
    pub unexpected: Vec<String>,
    /// Head tensors skipped because their shape differs.
    pub skipped_head: Vec<String>,
    /// Model tensors left at their initialisation by `weights.exclude`.
    pub excluded: Vec<String>,
}

/// Named tensors from a weights file of any supported format.
pub fn read_any(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let mut magic = [0u8; 8];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).with_context(|| format!("cannot open weights {}", path.display()))?;
        let n = f.read(&mut magic).with_context(|| format!("cannot read weights {}", path.display()))?;
        if n == 0 {
            bail!("weights file {} is empty (0 bytes)", path.display());
        }
    }
    if magic.starts_with(b"PK") || magic[0] == 0x80 {
        crate::pth::read(path)
    } else {
        Ok(crate::tensorfile::read(path).with_context(|| format!("weights {}: not a PyTorch checkpoint either", path.display()))?.0)
    }
}

pub fn strip(name: &str, prefixes: &[String]) -> String {
    let mut name = name;
    while let Some(rest) = prefixes.iter().find_map(|p| name.strip_prefix(p.as_str()).filter(|_| !p.is_empty())) {
        name = rest;
    }
    name.to_string()
}

/// Loads `config.path` into `net` by the policy above and records which tensors came from it.
pub fn load(net: &mut Net, config: &Weights) -> Result<LoadReport> {
    let clock = std::time::Instant::now();
    let path = Path::new(&config.path);
    let file: BTreeMap<String, Tensor> = read_any(path)?
        .into_iter()
        .map(|(k, v)| (strip(&k, &config.strip_prefix), v))
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect();
    if file.is_empty() {
        bail!("weights {} contain no tensors", path.display());
    }
    let mut report = LoadReport::default();
    for (name, target) in net.state() {
        if config.exclude.iter().any(|prefix| name.starts_with(prefix.as_str())) {
            report.excluded.push(name);
            continue;
        }
        let Some(value) = file.get(&name) else {
            report.missing.push(name);
            continue;
        };
        if value.size() != target.size() {
            if net.is_head(&name) {
                report.skipped_head.push(name.clone());
                continue;
            }
            bail!("weights {}: `{name}` has shape {:?} in the file but {:?} in the model", path.display(), value.size(), target.size());
        }
        net.assign(&name, value)?;
        report.loaded.push(name);
    }
    let model: std::collections::BTreeSet<String> = net.state().into_iter().map(|(n, _)| n).collect();
    report.unexpected = file.keys().filter(|k| !model.contains(*k)).cloned().collect();
    if !report.excluded.is_empty() {
        tracing::info!("weights: kept {} excluded tensor(s) at initialisation: {}", report.excluded.len(), list(&report.excluded.iter().collect::<Vec<_>>()));
    }
    if report.loaded.is_empty() {
        let sample = |v: Vec<&String>| v.into_iter().take(4).cloned().collect::<Vec<_>>().join(", ");
        bail!(
            "weights {}: no tensor matches the model, refusing to train from a random start. The file has keys like [{}]; the model expects [{}]. \
             Set `weights.strip_prefix` if the file's keys carry a wrapper prefix",
            path.display(),
            sample(file.keys().collect()),
            sample(model.iter().collect())
        );
    }
    for name in &report.skipped_head {
        tracing::info!("weights: kept the new head: `{name}` has shape {:?} in the file", file[name].size());
    }
    let head_missing = |n: &&String| !net.is_head(n);
    let missing: Vec<&String> = report.missing.iter().filter(head_missing).collect();
    if !missing.is_empty() {
        tracing::warn!("weights: {} model tensor(s) not in the file (kept at initialisation): {}", missing.len(), list(&missing));
    }
    if !report.unexpected.is_empty() {
        tracing::warn!("weights: {} tensor(s) in the file unused by the model: {}", report.unexpected.len(), list(&report.unexpected.iter().collect::<Vec<_>>()));
    }
    tracing::info!("weights: loaded {} tensors from {} in {:.2}s", report.loaded.len(), path.display(), clock.elapsed().as_secs_f64());
    net.pretrained = report.loaded.iter().filter(|n| !net.is_head(n)).cloned().collect();
    Ok(report)
}

fn list(names: &[&String]) -> String {
    let shown: Vec<&str> = names.iter().take(8).map(|s| s.as_str()).collect();
    let more = if names.len() > 8 { format!(" and {} more", names.len() - 8) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}
