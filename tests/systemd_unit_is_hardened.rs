//! The shipped unit is a hardened `Type=notify` service with a watchdog:
//! `systemd-analyze security --offline=yes` rates its exposure 2.5 or lower.

use std::path::Path;
use std::process::Command;

fn unit_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/ferrogate.service")
}

#[test]
fn unit_declares_notify_watchdog_and_directories() {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=ferrogate",
        "ConfigurationDirectory=ferrogate",
        "User=ferrogate",
        "SupplementaryGroups=dialout",
        "ExecStart=/usr/bin/ferrogate run --config /etc/ferrogate --wait-for-config",
        "DeviceAllow=char-ttyS rw",
        "DeviceAllow=char-ttyAMA rw",
        "DeviceAllow=char-ttymxc rw",
        "DeviceAllow=char-ttySC rw",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-ttyACM rw",
        "LimitNOFILE=4096",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "missing {line}");
    }
}

#[test]
fn exposure_is_at_most_2_5() {
    let Ok(out) = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(unit_path())
        .output()
    else {
        eprintln!("systemd-analyze not installed; exposure not checked here");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure line in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in `{line}`"));
    assert!(score <= 2.5, "exposure {score} > 2.5: {line}");
}
