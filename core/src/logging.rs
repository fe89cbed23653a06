//! Logging: `tracing` to stderr, and to the run directory's `log.txt` once a run has one.
use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use tracing_subscriber::fmt::MakeWriter;

static RUN_LOG: Mutex<Option<File>> = Mutex::new(None);

/// Also send log lines to this file (the run's `log.txt`) from now on.
pub fn tee_to(file: File) {
    *RUN_LOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
}

/// Prints a line to stderr and, once a run has one, to its `log.txt`: how a run ended belongs in its log
/// (an error, a stop by signal), not only on the terminal.
pub fn line(text: &str) {
    let _ = writeln!(Tee, "{text}");
}

pub struct Tee;

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = RUN_LOG.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = f.write_all(buf);
        }
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Tee {
    type Writer = Tee;
    fn make_writer(&'a self) -> Tee {
        Tee
    }
}

/// Installs the subscriber (level from `RIFLE_LOG`, default `info`). Safe to call more than once.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RIFLE_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(Tee).with_target(false).with_ansi(false).try_init();
}
