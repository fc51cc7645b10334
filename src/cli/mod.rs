//! The command-line front ends: `config check`, the daemon commands over
//! the control socket ([`remote`]), and their output ([`output`]).
//!
//! Exit codes: 0 success; 1 the operation failed (invalid configuration, a
//! command the device or daemon refused); 2 usage error; 3 the daemon could
//! not be reached (not running, or no permission on its socket).

pub mod coap;
pub mod connect;
pub mod modbus;
pub mod output;
pub mod remote;

use std::path::Path;
use std::process::ExitCode;

use ferrogate_sdk::config::ConfigIssue;

use crate::config;

/// Exit code for an invalid configuration.
pub const EXIT_INVALID_CONFIG: u8 = 1;
/// Exit code for an operation that failed (the daemon or device refused it).
pub const EXIT_FAILED: u8 = 1;
/// Exit code when the daemon cannot be reached.
pub const EXIT_NO_DAEMON: u8 = 3;

/// What `config check` does besides validating.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Print the notes too.
    pub verbose: bool,
    /// Then try the broker and every device, waiting at most this long.
    pub connect: Option<std::time::Duration>,
}

/// `ferrogate config check`: 0 when valid, 1 with every error otherwise. A
/// valid configuration prints warnings and one summary line; the notes
/// only with `verbose` (always in JSON). With `connect`, a valid
/// configuration is then tried ([`connect::check`]).
pub fn config_check(dir: &Path, options: CheckOptions, json: bool) -> ExitCode {
    let verbose = options.verbose;
    let ignored: Vec<String> = config::ignored_files(dir)
        .iter()
        .map(|p| {
            format!(
                "warning: {} is not read: only *.toml files are (rename it or move it out)",
                p.display()
            )
        })
        .collect();
    if !json {
        for warning in &ignored {
            println!("{warning}");
        }
    }
    match config::load(dir, &crate::kinds::all()) {
        Ok(loaded) => {
            let devices: usize = loaded.adapters.iter().map(|a| a.devices.len()).sum();
            if let (Some(timeout), true) = (options.connect, json) {
                return connect::check(loaded, timeout, json);
            }
            if json {
                let out = serde_json::json!({"ok": true, "result": {
                    "files": loaded.files,
                    "adapters": loaded.adapters.iter().map(|a| &a.name).collect::<Vec<_>>(),
                    "devices": devices,
                    "notes": loaded.notes,
                    "warnings": ignored,
                }});
                println!("{out}");
            } else {
                for note in &loaded.notes {
                    // Warnings (`nosec_exposure`) come with their own prefix.
                    if note.starts_with("warning: ") {
                        println!("{note}");
                    } else if verbose {
                        println!("note: {note}");
                    }
                }
                println!(
                    "{}: configuration ok ({} files, {} adapters, {} devices)",
                    dir.display(),
                    loaded.files.len(),
                    loaded.adapters.len(),
                    devices
                );
                if let Some(timeout) = options.connect {
                    return connect::check(loaded, timeout, json);
                }
            }
            ExitCode::SUCCESS
        }
        Err(issues) => {
            if json {
                let errors: Vec<_> = issues.iter().map(issue_json).collect();
                let message = format!(
                    "{} error{}",
                    issues.len(),
                    if issues.len() == 1 { "" } else { "s" }
                );
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": {
                        "code": "invalid_config",
                        "message": message,
                        "errors": errors,
                        "warnings": ignored,
                    }})
                );
            } else {
                for issue in &issues {
                    eprintln!("error: {issue}");
                }
                eprintln!(
                    "{}: {} error{}",
                    dir.display(),
                    issues.len(),
                    if issues.len() == 1 { "" } else { "s" }
                );
            }
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}

fn issue_json(issue: &ConfigIssue) -> serde_json::Value {
    serde_json::json!({
        "file": issue.pos.as_ref().map(|p| p.file.display().to_string()),
        "line": issue.pos.as_ref().map(|p| p.line),
        "col": issue.pos.as_ref().map(|p| p.col),
        "message": issue.message,
        "hint": issue.hint,
    })
}
