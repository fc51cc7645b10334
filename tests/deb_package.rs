//! The .deb (built by `scripts/package`, path in `FERROGATE_DEB`) holds the
//! binary, the hardened unit, the default configuration as a conffile, the
//! examples and profiles, and maintainer scripts that create the
//! `ferrogate` user in `dialout`; the shipped config passes `config check`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deb() -> Option<PathBuf> {
    let path = std::env::var_os("FERROGATE_DEB").map(PathBuf::from);
    if path.is_none() {
        eprintln!(
            "FERROGATE_DEB not set: scripts/test builds the package and runs this test with it"
        );
    }
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn package_contains_what_a_gateway_box_needs() {
    let Some(deb) = deb() else { return };
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/ferrogate",
        "./usr/lib/systemd/system/ferrogate.service",
        "./etc/ferrogate/gateway.toml",
        "./usr/share/doc/ferrogate/examples/modbus.toml",
        "./usr/share/ferrogate/profiles/energy-meter.toml",
        "./usr/share/doc/ferrogate/grafana-dashboard.json",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} missing from:\n{listing}"
        );
    }
    let control = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(control.contains("Depends: adduser"), "{control}");

    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-R").arg(&deb).arg(dir.path()));
    let meta = dir.path().join("DEBIAN");
    let conffiles = std::fs::read_to_string(meta.join("conffiles")).unwrap();
    assert!(conffiles.contains("/etc/ferrogate/gateway.toml"));
    let postinst = std::fs::read_to_string(meta.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system"), "{postinst}");
    assert!(postinst.contains("adduser ferrogate dialout"), "{postinst}");
    assert!(
        postinst.contains("systemctl") || postinst.contains("deb-systemd-helper"),
        "{postinst}"
    );

    let binary = dir.path().join("usr/bin/ferrogate");
    let version = run(Command::new(&binary).arg("--version"));
    assert!(version.starts_with("ferrogate "), "{version}");
    // The shipped default configuration is valid as installed.
    let etc = dir.path().join("etc/ferrogate");
    let text = std::fs::read_to_string(etc.join("gateway.toml")).unwrap();
    std::fs::write(
        etc.join("gateway.toml"),
        text.replace("/var/lib/ferrogate", "state"),
    )
    .unwrap();
    run(Command::new(&binary)
        .args(["config", "check", "--config"])
        .arg(Path::new(&etc)));
}
