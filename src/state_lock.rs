//! One daemon per state directory: `{state_dir}/ferrogate.lock`, held with
//! an exclusive `flock` for the daemon's life and holding its pid. A second
//! daemon on the same directory refuses to start (it would share the
//! outbox and the MQTT client id) and names the holder. The kernel drops
//! the lock when the holder exits, also on SIGKILL, so a stale file never
//! blocks a restart.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "ferrogate.lock";

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "state directory {dir} is in use by another ferrogate ({holder}): stop it, or give this gateway its own state_dir"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StateLock {
    /// Take the lock of `state_dir` (created if missing) and write our pid.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "pid unknown".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(LockError::Held {
                dir: state_dir.to_path_buf(),
                holder,
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateLock::acquire(&state).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(
            std::fs::read_to_string(state.join(LOCK_FILE))
                .unwrap()
                .trim(),
            pid
        );
        // flock locks belong to the open file: a second open is refused
        // even within one process.
        let err = StateLock::acquire(&state).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {pid}")), "{err}");
        assert!(err.contains("in use by another ferrogate"), "{err}");
        drop(first);
        StateLock::acquire(&state).unwrap();
    }
}
