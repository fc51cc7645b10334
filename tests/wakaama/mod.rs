//! The live Eclipse Wakaama LwM2M clients of the end-to-end tests: found
//! (an environment variable, or `target/peers`, where
//! `shared/peers/build-wakaama` builds them; scripts/test does it once per
//! run) and started as child processes fed commands on stdin, their output
//! in a file that is shown when a test fails. Without a client a test
//! skips with the reason, and fails in CI (`CI=true`).
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// `target/peers/<name>` (or the binary `env` names), built there by the
/// Wakaama build script when missing; `None` (skip) outside CI when it
/// cannot be built.
pub fn peer(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/peers");
    let bin = out.join(name);
    if bin.is_file() {
        return Some(bin);
    }
    let script = [
        root.join("../shared/peers/build-wakaama"),
        root.join("../../shared/peers/build-wakaama"),
    ]
    .into_iter()
    .find(|p| p.is_file());
    let why = match script {
        None => "the Wakaama build script shared/peers/build-wakaama was not found".to_string(),
        Some(script) => match Command::new("bash").arg(&script).arg(&out).status() {
            Ok(s) if s.success() && bin.is_file() => return Some(bin),
            Ok(s) => format!("{} failed ({s})", script.display()),
            Err(e) => format!("cannot run {}: {e}", script.display()),
        },
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the live Wakaama tests cannot run in CI: {why}");
    }
    eprintln!("skipping: {why} (set {env} to a built {name})");
    None
}

/// A running Wakaama client.
pub struct Wakaama {
    child: Child,
    stdin: ChildStdin,
    log: PathBuf,
    /// The client's own UDP port.
    pub port: u16,
}

impl Wakaama {
    /// `bin -4 -n NAME -h 127.0.0.1 -p SERVER_PORT -l PORT` and `args`
    /// (`-t 300` a lifetime, `-b` bootstrap, `-i ID -s HEXKEY` DTLS PSK).
    pub fn start(bin: &Path, dir: &Path, name: &str, server_port: u16, args: &[&str]) -> Wakaama {
        let port = super::common::free_udp_port_below_ephemeral();
        let log = dir.join(format!("{name}-{port}.log"));
        let out = File::create(&log).expect("client log");
        let err = out.try_clone().expect("client log");
        let mut child = Command::new(bin)
            .args(["-4", "-n", name, "-h", "127.0.0.1"])
            .args(["-p", &server_port.to_string()])
            .args(["-l", &port.to_string()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn lwm2mclient");
        let stdin = child.stdin.take().expect("stdin");
        Wakaama {
            child,
            stdin,
            log,
            port,
        }
    }

    /// One command line on its stdin (`change /3/0/9 50`, `update 123`, `quit`).
    pub fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("client stdin");
        self.stdin.flush().expect("client stdin");
    }

    /// SIGKILL: the client vanishes without de-registering.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Wakaama {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.output());
        }
    }
}
