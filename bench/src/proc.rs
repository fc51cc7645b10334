//! CPU and memory of another process, read from /proc: CPU as % of one core
//! over a window (utime + stime deltas), RSS from VmRSS.

use std::time::{Duration, Instant};

use crate::BenchError;

/// Clock ticks per second of /proc/<pid>/stat times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of `pid` in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| BenchError::Proc(pid, e.to_string()))?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| BenchError::Proc(pid, "no ')' in stat".into()))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime field 14, stime field 15.
    let field = |n: usize| -> Result<f64, BenchError> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| BenchError::Proc(pid, format!("stat field {n}")))
    };
    Ok((field(14)? + field(15)?) / clock_ticks())
}

/// CPU time of `pid`'s live threads in seconds, from each thread's
/// `schedstat` (nanoseconds, where `stat` counts 10 ms ticks): precise
/// enough for a process using well under 1 % of a core, but it misses the
/// time of threads that ended, so use it only for a process whose threads
/// live as long as it does.
pub fn thread_cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| BenchError::Proc(pid, e.to_string()))?;
    let mut ns = 0u64;
    for task in dir.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(ns as f64 / 1e9)
}

/// A `VmRSS`/`VmHWM`-style line of /proc/<pid>/status, in bytes.
pub fn status_bytes(pid: u32, key: &str) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| BenchError::Proc(pid, e.to_string()))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| BenchError::Proc(pid, format!("no {key}")))
}

pub fn rss_bytes(pid: u32) -> Result<u64, BenchError> {
    status_bytes(pid, "VmRSS")
}

/// CPU and RSS of one process over a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// % of one core, averaged over the window.
    pub cpu_pct: f64,
    /// CPU seconds used in the window.
    pub cpu_s: f64,
    /// Mean and maximum RSS seen while sampling, bytes.
    pub rss_mean: u64,
    pub rss_max: u64,
}

/// Samples a process: `start` reads its CPU time, `sample` its RSS (call it
/// about once a second), `finish` gives the usage over the window.
pub struct Sampler {
    pid: u32,
    cpu0: f64,
    t0: Instant,
    rss: Vec<u64>,
}

impl Sampler {
    pub fn start(pid: u32) -> Result<Self, BenchError> {
        Ok(Sampler {
            pid,
            cpu0: cpu_seconds(pid)?,
            t0: Instant::now(),
            rss: vec![rss_bytes(pid)?],
        })
    }

    pub fn sample(&mut self) {
        if let Ok(r) = rss_bytes(self.pid) {
            self.rss.push(r);
        }
    }

    pub fn finish(mut self) -> Result<(Usage, Duration), BenchError> {
        self.sample();
        let cpu_s = cpu_seconds(self.pid)? - self.cpu0;
        let window = self.t0.elapsed();
        let n = self.rss.len().max(1) as u64;
        Ok((
            Usage {
                cpu_pct: 100.0 * cpu_s / window.as_secs_f64(),
                cpu_s,
                rss_mean: self.rss.iter().sum::<u64>() / n,
                rss_max: self.rss.iter().copied().max().unwrap_or(0),
            },
            window,
        ))
    }
}

/// The 1-minute load average, to print next to every number.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
