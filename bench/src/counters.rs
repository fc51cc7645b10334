//! Counts that host load moves little: system calls and, where the VM
//! exposes a PMU, instructions retired by the process under test over a
//! window, read with `perf stat` attached to its pid. Without `perf` (or
//! without the permission to trace, or without a PMU) a count is `None`
//! and printed as "n/a"; % CPU is still measured from /proc.

use std::process::{Child, Command, Stdio};

/// The two events: the syscall tracepoint works on any kernel with
/// tracing (as root, or with `perf_event_paranoid` ≤ -1); `instructions`
/// needs hardware counters, which many VMs do not pass through.
const EVENTS: &str = "raw_syscalls:sys_enter,instructions";

/// Totals over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub syscalls: Option<u64>,
    pub instructions: Option<u64>,
}

/// A `perf stat` attached to one process for the length of a window.
pub struct PerfStat {
    child: Option<Child>,
}

impl PerfStat {
    /// Attaches to `pid`; never fails (a missing `perf` gives no counts).
    pub fn start(pid: u32) -> PerfStat {
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-e", EVENTS, "-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok();
        PerfStat { child }
    }

    /// Stops counting (SIGINT, as perf expects) and reads the totals.
    pub fn finish(self) -> Counts {
        let Some(child) = self.child else {
            return Counts::default();
        };
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        match child.wait_with_output() {
            Ok(out) => parse(&String::from_utf8_lossy(&out.stderr)),
            Err(_) => Counts::default(),
        }
    }
}

/// Reads `perf stat -x ,` output: `value,unit,event,...` per line, with
/// `<not supported>` or `<not counted>` in place of a value it lacks.
fn parse(out: &str) -> Counts {
    let mut c = Counts::default();
    for line in out.lines() {
        let mut fields = line.split(',');
        let (Some(value), Some(_unit), Some(event)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        match event.trim() {
            "raw_syscalls:sys_enter" => c.syscalls = Some(value),
            e if e.starts_with("instructions") => c.instructions = Some(value),
            _ => {}
        }
    }
    c
}

impl Counts {
    /// Syscalls and instructions per `unit` (e.g. per delivered value).
    pub fn per(&self, units: f64) -> PerUnit {
        let f = |n: Option<u64>| n.filter(|_| units > 0.0).map(|n| n as f64 / units);
        PerUnit {
            syscalls: f(self.syscalls),
            instructions: f(self.instructions),
        }
    }
}

/// [`Counts`] divided by what was delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerUnit {
    pub syscalls: Option<f64>,
    pub instructions: Option<f64>,
}

impl std::fmt::Display for PerUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
        write!(
            f,
            "syscalls={} instructions={}",
            show(self.syscalls),
            show(self.instructions)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counts_and_skips_unsupported_events() {
        let out = "\
            104,,raw_syscalls:sys_enter,1834130,100.00,,\n\
            <not supported>,,instructions,0,100.00,,\n";
        assert_eq!(
            parse(out),
            Counts {
                syscalls: Some(104),
                instructions: None
            }
        );
        let both = "5,,raw_syscalls:sys_enter,1,100.00,,\n9000,,instructions:u,1,100.00,,\n";
        assert_eq!(parse(both).instructions, Some(9000));
    }

    #[test]
    fn missing_counts_print_as_not_available() {
        let c = Counts {
            syscalls: Some(25),
            instructions: None,
        };
        assert_eq!(c.per(10.0).to_string(), "syscalls=2.5000 instructions=n/a");
        assert_eq!(c.per(0.0).syscalls, None);
    }
}
