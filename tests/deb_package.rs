//! The .deb (built by `scripts/package`, path in `FERROGATE_DEB`) holds the
//! binary, the hardened unit, the minimal and the annotated reference
//! configuration (nothing under /etc: no conffile, so no upgrade prompt),
//! the examples and profiles, man pages for every page ferrogate(1) refers
//! to, bash/zsh/fish completions, and maintainer scripts that create the
//! `ferrogate` user in `dialout`.
//!
//! As root (CI), an unattended upgrade in a throw-away root: an overlay of
//! this machine's `/` with a tmpfs on top, entered with chroot, so dpkg,
//! adduser and the maintainer scripts are the real ones and nothing
//! reaches the host. The previous release is the new package rewritten to
//! the earlier layout (gateway.toml a conffile under /etc, the unit
//! without --wait-for-config, version 0.0.1).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    let out = cmd.stdin(Stdio::null()).output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
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
        "./usr/share/ferrogate/gateway.toml",
        "./usr/share/doc/ferrogate/gateway.toml",
        "./usr/share/doc/ferrogate/examples/modbus.toml",
        "./usr/share/ferrogate/profiles/energy-meter.toml",
        "./usr/share/doc/ferrogate/grafana-dashboard.json",
        "./usr/share/man/man1/ferrogate.1.gz",
        "./usr/share/man/man1/ferrogate-modbus-scan.1.gz",
        "./usr/share/bash-completion/completions/ferrogate",
        "./usr/share/zsh/vendor-completions/_ferrogate",
        "./usr/share/fish/vendor_completions.d/ferrogate.fish",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} missing from:\n{listing}"
        );
    }
    assert!(
        !listing.lines().any(|l| l.contains(" ./etc/ferrogate/")),
        "nothing under /etc (no conffile prompt on upgrade):\n{listing}"
    );
    let control = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(control.contains("Depends: adduser"), "{control}");

    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-R").arg(&deb).arg(dir.path()));
    let meta = dir.path().join("DEBIAN");
    assert!(
        std::fs::read_to_string(meta.join("conffiles")).map_or(true, |c| c.trim().is_empty()),
        "no conffiles"
    );
    let postinst = std::fs::read_to_string(meta.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system"), "{postinst}");
    assert!(postinst.contains("adduser ferrogate dialout"), "{postinst}");

    // Every page the main man page refers to is shipped.
    let man1 = dir.path().join("usr/share/man/man1");
    let main_page = run(Command::new("zcat").arg(man1.join("ferrogate.1.gz")));
    for reference in main_page.split("ferrogate\\-").skip(1) {
        let Some((name, _)) = reference.split_once("(1)") else {
            continue;
        };
        let page = man1.join(format!("ferrogate-{}.1.gz", name.replace("\\-", "-")));
        assert!(
            page.exists(),
            "ferrogate(1) refers to {page:?}, not shipped"
        );
    }

    let binary = dir.path().join("usr/bin/ferrogate");
    let version = run(Command::new(&binary).arg("--version"));
    assert!(version.starts_with("ferrogate "), "{version}");
    // The annotated reference is valid; the minimal one waits for a gateway_id.
    let etc = dir.path().join("etc-check");
    std::fs::create_dir_all(&etc).unwrap();
    let reference =
        std::fs::read_to_string(dir.path().join("usr/share/doc/ferrogate/gateway.toml")).unwrap();
    std::fs::write(
        etc.join("gateway.toml"),
        reference.replace("/var/lib/ferrogate", "state"),
    )
    .unwrap();
    run(Command::new(&binary)
        .args(["config", "check", "--config"])
        .arg(Path::new(&etc)));
    std::fs::copy(
        dir.path().join("usr/share/ferrogate/gateway.toml"),
        etc.join("gateway.toml"),
    )
    .unwrap();
    let out = Command::new(&binary)
        .args(["config", "check", "--config"])
        .arg(&etc)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway_id"));
}

/// A throw-away root: this machine's `/` as the lower layer of an overlay
/// whose upper layer is a tmpfs; unmounted (and so gone) on drop.
struct ThrowAwayRoot {
    base: tempfile::TempDir,
}

impl ThrowAwayRoot {
    fn new() -> ThrowAwayRoot {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        run(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(b));
        for d in ["upper", "work", "root"] {
            std::fs::create_dir(b.join(d)).unwrap();
        }
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir=/,upperdir={},workdir={}",
                b.join("upper").display(),
                b.join("work").display()
            ))
            .arg(b.join("root")));
        for fs in ["proc", "dev"] {
            run(Command::new("mount")
                .arg("--bind")
                .arg(format!("/{fs}"))
                .arg(b.join("root").join(fs)));
        }
        ThrowAwayRoot { base }
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.base
            .path()
            .join("root")
            .join(inside.trim_start_matches('/'))
    }

    /// Runs `args` chrooted, unattended, with no terminal to answer a prompt.
    fn chroot(&self, args: &[&str]) -> std::process::Output {
        Command::new("chroot")
            .arg(self.path("/"))
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn dpkg(&self, args: &[&str]) -> String {
        let mut all = vec!["dpkg"];
        all.extend_from_slice(args);
        let out = self.chroot(&all);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "dpkg {args:?}: {text}");
        text
    }
}

impl Drop for ThrowAwayRoot {
    fn drop(&mut self) {
        let root = self.base.path().join("root");
        for fs in ["proc", "dev"] {
            let _ = Command::new("umount").arg(root.join(fs)).status();
        }
        let _ = Command::new("umount").arg(&root).status();
        let _ = Command::new("umount").arg(self.base.path()).status();
    }
}

/// The previous release's layout, made from the new package: gateway.toml
/// a conffile under /etc, the unit without --wait-for-config.
fn previous_release(new: &Path, out: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    run(Command::new("dpkg-deb").arg("-R").arg(new).arg(&tree));
    let etc = tree.join("etc/ferrogate");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::copy(
        tree.join("usr/share/doc/ferrogate/gateway.toml"),
        etc.join("gateway.toml"),
    )
    .unwrap();
    std::fs::write(
        tree.join("DEBIAN/conffiles"),
        "/etc/ferrogate/gateway.toml\n",
    )
    .unwrap();
    let control = std::fs::read_to_string(tree.join("DEBIAN/control")).unwrap();
    let control: String = control
        .lines()
        .map(|l| {
            if l.starts_with("Version:") {
                "Version: 0.0.1".to_string()
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(tree.join("DEBIAN/control"), control).unwrap();
    let unit = tree.join("usr/lib/systemd/system/ferrogate.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(&unit, text.replace(" --wait-for-config", "")).unwrap();
    let _ = std::fs::remove_file(tree.join("DEBIAN/md5sums"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Znone", "-b"])
        .arg(&tree)
        .arg(out));
}

#[test]
fn unattended_upgrade_keeps_edits_and_the_outbox_and_purge_cleans_up() {
    let Some(deb) = deb() else { return };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: installing into a throw-away root needs root (CI runs it as root)");
        return;
    }
    let root = ThrowAwayRoot::new();
    // Install an older copy first only if the host does not have ferrogate.
    let status = root.chroot(&["dpkg-query", "-W", "ferrogate"]);
    assert!(
        !status.status.success(),
        "ferrogate is installed on this machine; the test needs a root without it"
    );
    std::fs::create_dir_all(root.path("/tmp/debs")).unwrap();
    previous_release(&deb, &root.path("/tmp/debs/old.deb"));
    std::fs::copy(&deb, root.path("/tmp/debs/new.deb")).unwrap();

    // The previous release, then an integrator's edit and a backlog.
    root.dpkg(&["-i", "/tmp/debs/old.deb"]);
    let config = root.path("/etc/ferrogate/gateway.toml");
    let edited = std::fs::read_to_string(&config)
        .unwrap()
        .replace("site-a-gw1", "plant-7-gw");
    std::fs::write(&config, &edited).unwrap();
    let outbox = root.path("/var/lib/ferrogate/outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    std::fs::write(outbox.join("00000001.seg"), b"backlog").unwrap();

    // The upgrade: no terminal, no --force-conf*: a prompt would fail it.
    let log = root.dpkg(&["-i", "/tmp/debs/new.deb"]);
    assert!(
        !log.contains("Configuration file"),
        "a conffile prompt: {log}"
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        edited,
        "edit kept"
    );
    assert_eq!(
        std::fs::read(outbox.join("00000001.seg")).unwrap(),
        b"backlog",
        "outbox kept"
    );
    let unit =
        std::fs::read_to_string(root.path("/usr/lib/systemd/system/ferrogate.service")).unwrap();
    assert!(unit.contains("--wait-for-config"), "unit updated");

    // Purge: state, the user and our gateway.toml go.
    root.dpkg(&["--purge", "ferrogate"]);
    assert!(!root.path("/var/lib/ferrogate").exists(), "state removed");
    assert!(!config.exists(), "gateway.toml removed");
    assert!(
        !root
            .chroot(&["getent", "passwd", "ferrogate"])
            .status
            .success(),
        "user removed"
    );

    // A fresh install: the minimal gateway.toml, which waits for a gateway_id.
    let log = root.dpkg(&["-i", "/tmp/debs/new.deb"]);
    assert!(log.contains("the service waits until"), "{log}");
    let out = root.chroot(&["ferrogate", "config", "check", "--config", "/etc/ferrogate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing `gateway_id`"));
}
