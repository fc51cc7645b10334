//! Simulator processes: the harness runs its own simulators as child
//! processes (this binary with another subcommand), so their CPU is not
//! counted as the gateway's and they can hold more sockets than one
//! process may open.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::BenchError;

pub struct Helper {
    child: Child,
}

impl Helper {
    /// Runs `ferrogate-bench <args>` and waits for its `ready` line.
    pub fn spawn(args: &[String]) -> Result<Helper, BenchError> {
        Self::spawn_with(args, |_| {})
    }

    /// Like [`Helper::spawn`], handing every later line of its output to
    /// `on_line` (on a thread of its own).
    pub fn spawn_with(
        args: &[String],
        mut on_line: impl FnMut(&str) + Send + 'static,
    ) -> Result<Helper, BenchError> {
        let exe = std::env::current_exe().map_err(|e| BenchError::Io("current_exe".into(), e))?;
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError::Io(format!("spawn {args:?}"), e))?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Gateway("helper has no stdout".into()))?;
        let mut lines = BufReader::new(out).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("ready") => break,
                Some(Ok(_)) => continue,
                _ => {
                    let _ = child.kill();
                    return Err(BenchError::Gateway(format!(
                        "helper {args:?} ended before ready"
                    )));
                }
            }
        }
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                on_line(&line);
            }
        });
        Ok(Helper { child })
    }
}

impl Helper {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
