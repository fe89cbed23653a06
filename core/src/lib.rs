//! rifle: fine-tuning pretrained CNNs from YAML pipelines, with RIFLE and the methods it is compared to as
//! plugins. The training loop is in `engine.rs`; the plugin traits in `plugin.rs`; the registry in
//! `registry.rs`; pipelines in `config/`.
pub mod amp;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod convert;
pub mod data;
pub mod dynamic;
pub mod engine;
pub mod extras;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod params;
pub mod plugin;
pub mod predict;
pub mod pth;
pub mod registry;
pub mod report;
pub mod summary;
pub mod sweep;
pub mod tensorfile;
pub mod weights;

/// The built-in plugins, one file each under the repository's `plugins/<kind>/<name>.rs`.
#[path = "../../plugins/mod.rs"]
pub mod plugins;

// Re-exported for `register_plugin!` and `export_plugins!` in plugin crates.
pub use inventory;
pub use tch;

pub use params::{Param, Params};
pub use registry::{Built, Kind};
