//! `ferrogate config check` reports every mistake in a config directory at
//! once, each at its file:line:col with a message saying what is wrong, and
//! exits non-zero; a valid directory exits 0.

use std::path::Path;
use std::process::Command;

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn check(dir: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(["config", "check", "--json", "--config"])
        .arg(dir)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "config check printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap(), json)
}

/// (file suffix, line, col, message fragment)
type Expected = (&'static str, usize, usize, &'static str);

fn assert_reported(errors: &[serde_json::Value], (file, line, col, fragment): Expected) {
    let found = errors.iter().any(|e| {
        e["file"].as_str().is_some_and(|f| f.ends_with(file))
            && e["line"] == line
            && e["col"] == col
            && e["message"].as_str().is_some_and(|m| m.contains(fragment))
    });
    assert!(
        found,
        "expected {file}:{line}:{col} `{fragment}` among:\n{}",
        serde_json::to_string_pretty(errors).unwrap()
    );
}

#[test]
fn every_mistake_is_reported_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "gateway.toml",
        r#"gateway_id = "site/a"
state_dir = "state"
colour = "blue"

[mqtt]
url = "http://broker:1883"
keep_alive = 30
reconnect_min = "5 sec"
hostname = "x"
qos = 2

[outbox]
fsync = "sometimes"

[supervisor]
restart_backoff_min = "2m"
restart_backoff_max = "1m"
"#,
    );
    write(
        d,
        "conf.d/a.toml",
        r#"[[simulator.device]]
name = "boiler"

[[simulator.device.point]]
name = "t"
waveform = "triangle"

[[simulator.device]]
name = "meter"
period = "soon"
"#,
    );
    write(
        d,
        "conf.d/b.toml",
        r#"[[simulator.device]]
name = "pump"

[[simulator.device.point]]
name = "flow"
waveform = "sine"
min = 10.0
max = 1.0

[[simulator.device]]
name = "pump"

[[modbsu.device]]
name = "x"
"#,
    );
    write(d, "conf.d/c.toml", "[[simulator.device]]\nname = \n");

    let (code, json) = check(d);
    assert_ne!(code, 0);
    assert_eq!(json["ok"], false);
    let errors = json["error"]["errors"].as_array().unwrap();
    let expected: [Expected; 10] = [
        (
            "gateway.toml",
            1,
            14,
            "invalid gateway_id `site/a`: it must not contain `/`",
        ),
        ("gateway.toml", 3, 1, "unknown key `colour`"),
        ("gateway.toml", 9, 1, "unknown field `hostname`"),
        ("gateway.toml", 13, 9, "unknown variant `sometimes`"),
        ("gateway.toml", 15, 1, "restart_backoff_min is greater"),
        ("a.toml", 6, 12, "unknown variant `triangle`"),
        ("a.toml", 10, 10, "invalid duration `soon`"),
        ("b.toml", 7, 7, "min (10) is greater than max (1)"),
        ("b.toml", 13, 3, "unknown adapter kind `modbsu`"),
        ("c.toml", 2, 8, ""),
    ];
    for e in expected {
        assert_reported(errors, e);
    }
}

#[test]
fn duplicate_device_names_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "gateway.toml", "gateway_id = \"gw\"\n");
    write(
        d,
        "conf.d/a.toml",
        "[[simulator.device]]\nname = \"pump\"\n",
    );
    write(
        d,
        "conf.d/b.toml",
        "[[simulator.device]]\nname = \"ok\"\n\n[[simulator.device]]\nname = \"pump\"\n",
    );
    let (code, json) = check(d);
    assert_ne!(code, 0);
    let errors = json["error"]["errors"].as_array().unwrap();
    assert_reported(errors, ("b.toml", 5, 8, "duplicate device name `pump`"));
    let dup = errors
        .iter()
        .find(|x| {
            x["message"]
                .as_str()
                .unwrap_or("")
                .contains("duplicate device")
        })
        .expect("duplicate reported");
    assert!(
        dup["hint"].as_str().unwrap().contains("a.toml:2:8"),
        "{dup}"
    );
}

#[test]
fn mqtt_table_mistakes_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "gateway.toml",
        r#"gateway_id = "gw"

[mqtt]
url = "http://broker:1883"
qos = 2
reconnect_min = "5 sec"
"#,
    );
    let (code, json) = check(d);
    assert_ne!(code, 0);
    let errors = json["error"]["errors"].as_array().unwrap();
    assert_reported(errors, ("gateway.toml", 6, 17, "unknown unit `sec`"));

    write(
        d,
        "gateway.toml",
        r#"gateway_id = "gw"

[mqtt]
url = "http://broker:1883"
qos = 2
hostname = "x"
"#,
    );
    let (_, json) = check(d);
    let errors = json["error"]["errors"].as_array().unwrap();
    assert_reported(errors, ("gateway.toml", 6, 1, "unknown field `hostname`"));

    write(
        d,
        "gateway.toml",
        "gateway_id = \"gw\"\n\n[mqtt]\nurl = \"http://broker:1883\"\nqos = 2\n",
    );
    let (_, json) = check(d);
    let errors = json["error"]["errors"].as_array().unwrap();
    assert_reported(errors, ("gateway.toml", 4, 7, "unsupported broker url"));
    assert_reported(errors, ("gateway.toml", 5, 7, "qos 2 is not supported"));
}

#[test]
fn missing_gateway_toml_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let (code, json) = check(dir.path());
    assert_ne!(code, 0);
    let err = &json["error"]["errors"][0];
    assert!(err["message"].as_str().unwrap().contains("gateway.toml"));
    assert!(err["hint"].as_str().unwrap().contains("conf.d"));
}

#[test]
fn the_shipped_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let (code, json) = check(&root.join("demo"));
    assert_eq!(code, 0, "config/demo: {json}");

    // The annotated reference gateway.toml, with each adapter example in
    // conf.d and the shipped profiles.
    let mut examples: Vec<_> = std::fs::read_dir(root.join("examples"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    examples.sort();
    let mut cases = vec![None];
    cases.extend(examples.into_iter().map(Some));
    for example in cases {
        let dir = tempfile::tempdir().unwrap();
        let reference = std::fs::read_to_string(root.join("gateway.toml")).unwrap();
        write(
            dir.path(),
            "gateway.toml",
            &reference.replace("/var/lib/ferrogate", "state"),
        );
        if let Some(example) = &example {
            let text = std::fs::read_to_string(example).unwrap();
            write(dir.path(), "conf.d/example.toml", &text);
        }
        for profile in std::fs::read_dir(root.join("profiles"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(profile.path()).unwrap();
            write(
                dir.path(),
                &format!("profiles/{}", profile.file_name().to_string_lossy()),
                &text,
            );
        }
        let (code, json) = check(dir.path());
        assert_eq!(code, 0, "{example:?}: {json}");
    }
}
