//! The `rifle` command line.
use crate::config::{self, Loaded};
use crate::engine::{RunOptions, Summary, Trainer};
use crate::registry::{self, Kind};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "rifle", version, about = "Fine-tune pretrained CNNs from YAML pipelines (RIFLE, ICML 2020, and the methods it is compared to)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a pipeline (or resume a run).
    Run {
        /// The pipeline file (optional with --resume: the run's own pipeline.yaml is used).
        pipeline: Option<PathBuf>,
        /// Override a key: --set optimizer.lr=0.1 (typed as YAML).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Run directory (default: <output.dir>/<name>-<time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in this directory from its last checkpoint.
        #[arg(long, value_name = "RUN_DIR")]
        resume: Option<PathBuf>,
        /// Load a dynamic plugin library.
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
    },
    /// Check a pipeline (plugins, parameters, paths) without loading data or weights.
    Validate {
        pipeline: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
        /// Print the resolved pipeline.
        #[arg(long)]
        print: bool,
    },
    /// List the registered plugins (built-in and loaded) with their parameters.
    Plugins {
        /// Only this kind (backbone, dataset, augment, regularizer, scheduler, strategy, probe).
        kind: Option<String>,
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
    },
    /// Run a sweep (a base pipeline × axes); finished runs are skipped, interrupted ones resumed.
    Sweep { file: PathBuf },
    /// Tables (mean ± std over seeds) and figures from run directories.
    Report {
        dirs: Vec<PathBuf>,
        /// Where report.md, report.csv and the PNG figures go (default: the first directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The label that makes the table rows.
        #[arg(long, default_value = "dataset")]
        rows: String,
        /// The label that makes the table columns.
        #[arg(long, default_value = "method")]
        cols: String,
        /// One set of tables per value of this label (e.g. `regularizer` for the paper's L2 / L2-SP blocks).
        #[arg(long)]
        group: Option<String>,
        /// Published values to print under the tables (YAML: {name, tables: {final|best|probe.value: {column: value}}}).
        #[arg(long)]
        reference: Option<PathBuf>,
    },
    /// Time the training step on one fixed batch (`train`, data loading excluded) or the training loader
    /// alone (`loader`); prints one JSON line. `make bench` compares both with PyTorch.
    Bench {
        pipeline: PathBuf,
        #[arg(long, value_enum, default_value = "train")]
        what: crate::bench::What,
        /// Untimed steps (or batches) first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Timed steps (or batches).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
    },
    /// Classify images with a trained run or a pipeline plus weights.
    Predict {
        /// A run directory, or a pipeline file.
        model: PathBuf,
        images: Vec<PathBuf>,
        /// Weights file (default: the run's best checkpoint, or the pipeline's `weights`).
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Print the raw logits as JSON instead of the top classes.
        #[arg(long)]
        logits: bool,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Convert a Caffe ResNet (.caffemodel) into a safetensors file for the `resnet` backbone.
    Convert {
        /// The .caffemodel file.
        input: PathBuf,
        /// The safetensors file to write (not needed with --list).
        #[arg(required_unless_present = "list")]
        output: Option<PathBuf>,
        /// The `resnet` arch preset the weights must fit.
        #[arg(long, default_value = "resnet50_1by2")]
        arch: String,
        /// The mean the Caffe model subtracts from 0-255 pixels, in its B,G,R order.
        #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [104.0, 117.0, 123.0])]
        mean_bgr: Vec<f32>,
        /// Names of the head's outputs, in order (recorded in the file; `rifle predict` prints them).
        #[arg(long, value_delimiter = ',')]
        classes: Vec<String>,
        /// Only list the layers (name, type, blob shapes).
        #[arg(long)]
        list: bool,
    },
    /// One line per run: final and best test top-1, wall time, directory.
    Summary {
        #[arg(required = true)]
        runs: Vec<PathBuf>,
    },
}

pub fn load(pipeline: &Path, set: &[String], plugins: &[PathBuf]) -> Result<Loaded> {
    config::load(pipeline, set, plugins).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs a command; returns the process exit code.
pub fn main(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run { pipeline, set, out, resume, plugins } => {
            let summary = run(pipeline.as_deref(), &set, out, resume, &plugins)?;
            Ok(if summary.interrupted { 130 } else { 0 })
        }
        Command::Validate { pipeline, set, plugins, print } => {
            let loaded = load(&pipeline, &set, &plugins)?;
            loaded.build_plugins()?;
            if print {
                print!("{}", loaded.resolved);
            }
            eprintln!("{}: ok", pipeline.display());
            Ok(0)
        }
        Command::Plugins { kind, plugins } => {
            for lib in &plugins {
                crate::dynamic::load(lib)?;
            }
            for lib in crate::dynamic::from_env()? {
                crate::dynamic::load(&lib)?;
            }
            print!("{}", list_plugins(kind.as_deref().map(Kind::parse).transpose()?));
            Ok(0)
        }
        Command::Sweep { file } => crate::sweep::main(&file),
        Command::Report { dirs, out, rows, cols, group, reference } => {
            let Some(first) = dirs.first() else { bail!("give at least one run or sweep directory") };
            let out = out.unwrap_or_else(|| first.clone());
            print!("{}", crate::report::write(&dirs, &out, &crate::report::Layout { rows: &rows, cols: &cols, group: group.as_deref() }, reference.as_deref())?);
            eprintln!("report written to {}", out.display());
            Ok(0)
        }
        Command::Bench { pipeline, what, warmup, steps, set, plugins } => {
            let report = crate::bench::run(&load(&pipeline, &set, &plugins)?, what, warmup, steps)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(0)
        }
        Command::Predict { model, images, weights, top_k, logits, set } => {
            print!("{}", crate::predict::predict(&model, &images, weights.as_deref(), top_k, logits, &set)?);
            Ok(0)
        }
        Command::Convert { input, output, arch, mean_bgr, classes, list } => {
            if list {
                print!("{}", crate::convert::caffe::describe(&crate::convert::read_caffe(&input)?));
                return Ok(0);
            }
            let output = output.context("give the output file")?;
            let mean_bgr: [f32; 3] = mean_bgr.try_into().map_err(|v: Vec<f32>| anyhow::anyhow!("--mean-bgr takes three values (B,G,R), got {}", v.len()))?;
            print!("{}", crate::convert::caffe(&input, &output, &crate::convert::CaffeOptions { arch: &arch, mean_bgr, classes })?);
            Ok(0)
        }
        Command::Summary { runs } => {
            print!("{}", crate::summary::table(&runs)?);
            Ok(0)
        }
    }
}

/// `rifle plugins`: every plugin with its parameters.
pub fn list_plugins(only: Option<Kind>) -> String {
    let mut out = String::new();
    for kind in Kind::ALL.into_iter().filter(|k| only.is_none_or(|o| o == *k)) {
        out.push_str(&format!("{kind}:\n"));
        for e in registry::entries().into_iter().filter(|e| e.spec.kind == kind) {
            let source = if e.source == registry::Source::BuiltIn { String::new() } else { format!("  [{}]", e.source) };
            out.push_str(&format!("  {} — {}{source}\n", e.spec.name, e.spec.doc));
            for p in e.spec.params {
                let default = match p.default_value() {
                    Some(v) => v.to_string(),
                    None if p.default == crate::params::Default::Required => "required".into(),
                    None => "unset".into(),
                };
                out.push_str(&format!("      {:<22} {:<28} {:<12} {}\n", p.name, p.type_name(), default, p.doc));
            }
            out.push_str(&format!("      example: {}: {}\n", e.spec.name, e.spec.example));
        }
    }
    out
}

/// `rifle run`: trains, handling SIGINT/SIGTERM (the first stops at the next step with a resumable
/// checkpoint, a second exits at once).
pub fn run(pipeline: Option<&Path>, set: &[String], out: Option<PathBuf>, resume: Option<PathBuf>, plugins: &[PathBuf]) -> Result<Summary> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let progress_bar = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let options = RunOptions { out, resume: resume.is_some(), stop: stop.clone(), progress_bar };
    let (loaded, dir) = match &resume {
        Some(dir) => {
            let recorded = dir.join("pipeline.yaml");
            anyhow::ensure!(dir.is_dir(), "--resume {}: no such directory", dir.display());
            anyhow::ensure!(recorded.exists(), "{}: not a run directory (no pipeline.yaml)", dir.display());
            // A resumed run continues its recorded pipeline; anything else would make pipeline.yaml lie. The
            // device is where it runs, not what it computes (a sweep resumes a run on whichever GPU is free).
            anyhow::ensure!(
                set.iter().all(|s| s.starts_with("device=")) && options.out.is_none(),
                "--resume continues {} exactly as recorded: --out and --set (other than device=) do not apply (start a new run with the changed pipeline instead)",
                recorded.display()
            );
            let loaded = load(&recorded, set, plugins)?;
            if let Some(p) = pipeline {
                let given = load(p, set, plugins)?;
                if given.resolved != loaded.resolved {
                    bail!("{} differs from the run's recorded pipeline {}; resume without a pipeline argument", p.display(), recorded.display());
                }
            }
            (loaded, dir.clone())
        }
        None => {
            let Some(p) = pipeline else { bail!("give a pipeline file, or --resume RUN_DIR") };
            let loaded = load(p, set, plugins)?;
            // A device that is not there fails before a run directory exists.
            crate::engine::device(&loaded.pipeline.device)?;
            let dir = match &options.out {
                Some(dir) => {
                    refuse_finished_or_started_run(dir)?;
                    dir.clone()
                }
                None => new_run_dir(&loaded, p)?,
            };
            (loaded, dir)
        }
    };
    execute(&loaded, &dir, &options)
}

/// Creates `<output.dir>/<name>-<time>`, exclusively: runs started in the same second get `-2`, `-3`, ...
fn new_run_dir(loaded: &Loaded, pipeline: &Path) -> Result<PathBuf> {
    let name = if loaded.pipeline.name.is_empty() {
        pipeline.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into())
    } else {
        loaded.pipeline.name.clone()
    };
    let parent = PathBuf::from(&loaded.pipeline.output.dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
    let mut n = 1;
    loop {
        let dir = parent.join(if n == 1 { format!("{name}-{stamp}") } else { format!("{name}-{stamp}-{n}") });
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(e).with_context(|| format!("cannot create run directory {}", dir.display())),
        }
    }
}

/// A new run never writes over one that has trained: `--out` may name a new or empty folder, or one whose
/// run stopped before its first epoch line and checkpoint (a sweep's prepared folder, a failed start).
fn refuse_finished_or_started_run(dir: &Path) -> Result<()> {
    let metrics = std::fs::metadata(dir.join("metrics.jsonl")).map(|m| m.len() > 0).unwrap_or(false);
    let checkpoints = std::fs::read_dir(dir.join("checkpoints")).map(|mut d| d.next().is_some()).unwrap_or(false);
    anyhow::ensure!(
        !metrics && !checkpoints,
        "{} already holds a run (metrics or checkpoints); continue it with `rifle run --resume {}`, or choose another --out",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// Builds and trains a loaded pipeline in `dir`.
pub fn execute(loaded: &Loaded, dir: &Path, options: &RunOptions) -> Result<Summary> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create run directory {}", dir.display()))?;
    if let Ok(file) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("log.txt")) {
        crate::logging::tee_to(file);
    }
    let device = crate::engine::device(&loaded.pipeline.device)?;
    tracing::info!("rifle {}: device {device:?}, run directory {}", env!("CARGO_PKG_VERSION"), dir.display());
    let mut trainer = Trainer::build(loaded, dir, options.resume)?;
    let total = (trainer.epochs * trainer.train.steps_per_epoch()) as u64;
    let bar = options.progress_bar.then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps, {per_sec}, ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let summary = trainer.fit(&options.stop, bar.as_ref());
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = summary?;
    if summary.interrupted || options.stop.load(Ordering::Relaxed) {
        crate::logging::line(&format!("stopped; resume with: rifle run --resume {}", summary.dir.display()));
    } else {
        let pct = |v: Option<f64>| v.map(|x| format!("{:.2}%", 100.0 * x)).unwrap_or_else(|| "-".into());
        eprintln!(
            "done in {:.1}s: final test top-1 {}, best {} (epoch {}); run directory {}",
            summary.seconds,
            pct(summary.final_top1),
            pct(summary.best_top1),
            summary.best_epoch.map(|e| (e + 1).to_string()).unwrap_or_else(|| "-".into()),
            summary.dir.display()
        );
    }
    Ok(summary)
}
