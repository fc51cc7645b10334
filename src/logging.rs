//! Log output: structured journald entries (with `adapter` and `device`
//! fields) when systemd captures stderr, plain text on stderr otherwise
//! (coloured only on a terminal).
//! The filter comes from the config (`RUST_LOG` overrides it) and can be
//! changed at run time through [`LogHandle`] (`ferrogate log-level`).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Changes the log filter of the running process.
#[derive(Clone, Default)]
pub struct LogHandle(Option<reload::Handle<EnvFilter, Registry>>);

impl LogHandle {
    /// Replace the filter, e.g. `debug` or `info,ferrogate_modbus=trace`.
    pub fn set(&self, level: &str) -> Result<(), String> {
        let filter = filter(level)?;
        match &self.0 {
            Some(handle) => handle.reload(filter).map_err(|e| e.to_string()),
            None => Err("logging was not initialised by this process".into()),
        }
    }
}

fn filter(level: &str) -> Result<EnvFilter, String> {
    // The embedded demo broker logs every probe connection as an error.
    EnvFilter::try_new(format!("{level},rumqttd=off"))
        .map_err(|e| format!("invalid log level `{level}`: {e}"))
}

/// Whether systemd's journal is on our stderr (systemd.exec(5), $JOURNAL_STREAM).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Colour codes only for a person at a terminal, and not with `NO_COLOR`
/// set (no-color.org): a log file, a pipe or a collector gets plain text.
fn colours_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Install the global subscriber once; later calls return a handle that
/// cannot change anything.
pub fn init(level: &str) -> LogHandle {
    let initial = std::env::var("RUST_LOG")
        .ok()
        .and_then(|env| EnvFilter::try_new(env).ok())
        .or_else(|| filter(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter_layer, handle) = reload::Layer::new(initial);
    let registry = tracing_subscriber::registry().with(filter_layer);
    let journald = if stderr_is_journal() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let installed = match journald {
        Some(layer) => registry.with(layer).try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colours_on_stderr())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    LogHandle(installed.is_ok().then_some(handle))
}
