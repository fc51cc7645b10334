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

        // The same files give the same fingerprints, so a reload that
        // changes nothing restarts nothing.
        let fingerprints = || {
            let loaded = ferrogate::config::load(dir.path(), &ferrogate::kinds::all())
                .unwrap_or_else(|e| panic!("{example:?}: {e:?}"));
            loaded
                .adapters
                .iter()
                .map(|a| (a.name.clone(), a.fingerprint))
                .collect::<Vec<_>>()
        };
        assert_eq!(fingerprints(), fingerprints(), "{example:?}");
    }
}

/// The ten mistakes of an integrator's first directory, in one run: typo'd
/// key, wrong type, bad duration, overlapping registers, missing profile,
/// duplicate device, bad address, wrong enum value, missing file and a
/// TOML syntax error in one file, which hides none of the others. A
/// connection that is defined but invalid gets no false "define it" hint
/// on its devices; a file with another extension in conf.d is reported.
#[test]
fn ten_mistakes_in_one_directory_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "gateway.toml",
        r#"gateway_id = "gw"
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:1883"
password_file = "/nonexistent/ferrogate.pass"
"#,
    );
    write(
        d,
        "conf.d/plant.toml",
        r#"[[modbus.connection]]
name = "plant"
transport = "tcp"
address = "127.0.0.300:502"

[[modbus.device]]
name = "meter-1"
connection = "plant"
unit = 1
profile = "no-such-meter"

[[modbus.device]]
name = "boiler"
connection = "plant"
unit = "one"

[[modbus.device]]
name = "pump"
connection = "plant"
unit = 2
poll = "5 sec"

[[modbus.device]]
name = "tank"
connection = "plant"
unit = 3
polll = "1s"

[[modbus.device]]
name = "chiller"
connection = "plant"
unit = 4

[[modbus.device.point]]
name = "a"
address = 0
type = "u32"

[[modbus.device.point]]
name = "b"
address = 1
type = "u16"

[[modbus.device]]
name = "fan"
connection = "plant"
unit = 5

[[modbus.device.point]]
name = "speed"
address = 0
type = "float"
"#,
    );
    write(
        d,
        "conf.d/site.toml",
        r#"[[modbus.device]]
name = "chiller"
connection = "plant"
unit = 6
"#,
    );
    write(d, "conf.d/broken.toml", "[[modbus.device]\nname = \"x\"\n");
    write(d, "conf.d/old-meters.yaml", "devices: []\n");

    let (code, json) = check(d);
    assert_eq!(code, 1, "{json}");
    let errors = json["error"]["errors"].as_array().unwrap();
    let expected: [Expected; 10] = [
        ("gateway.toml", 6, 17, "/nonexistent/ferrogate.pass"),
        ("plant.toml", 4, 11, "`127.0.0.300` is not an IPv4 address"),
        ("plant.toml", 10, 11, "no-such-meter"),
        ("plant.toml", 15, 8, "invalid type"),
        ("plant.toml", 21, 8, "invalid duration `5 sec`"),
        ("plant.toml", 27, 1, "polll"),
        ("plant.toml", 40, 8, "overlaps point `a`"),
        ("plant.toml", 52, 8, "float"),
        ("site.toml", 2, 8, "device `chiller` is defined twice"),
        ("broken.toml", 1, 17, "expected `]`"),
    ];
    for e in expected {
        assert_reported(errors, e);
    }
    let text = json.to_string();
    assert!(
        !text.contains("define it with"),
        "no false hint for a defined but invalid connection: {text}"
    );
    assert!(
        json["error"]["warnings"]
            .to_string()
            .contains("old-meters.yaml"),
        "non-.toml file reported: {json}"
    );
}

#[test]
fn modbus_addresses_are_checked_like_coap_binds() {
    for (address, fragment) in [
        ("127.0.0.300", "`127.0.0.300` is not an IPv4 address"),
        (":502", "has no host"),
        ("http://10.0.0.5:502", "is a URL"),
        ("10.0.0.5:70000", "is not a port number"),
        ("fd00::5", "needs brackets"),
        ("meter_1.local", "not a host name"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "gateway.toml",
            "gateway_id = \"gw\"\nstate_dir = \"state\"\n",
        );
        write(
            d,
            "conf.d/m.toml",
            &format!(
                "[[modbus.connection]]\nname = \"plant\"\ntransport = \"tcp\"\naddress = \"{address}\"\n"
            ),
        );
        let (code, json) = check(d);
        assert_eq!(code, 1, "{address}: {json}");
        let errors = json["error"]["errors"].as_array().unwrap();
        assert_reported(errors, ("m.toml", 4, 11, fragment));
    }
    // No port: 502, and config check says so (with --verbose).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "gateway.toml",
        "gateway_id = \"gw\"\nstate_dir = \"state\"\n",
    );
    write(
        d,
        "conf.d/m.toml",
        "[[modbus.connection]]\nname = \"plant\"\ntransport = \"tcp\"\naddress = \"10.0.0.5\"\n\n[[modbus.device]]\nname = \"m\"\nconnection = \"plant\"\nunit = 1\n\n[[modbus.device.point]]\nname = \"p\"\naddress = 0\ntype = \"u16\"\n",
    );
    let (code, json) = check(d);
    assert_eq!(code, 0, "{json}");
    assert!(
        json["result"]["notes"].to_string().contains("using 502"),
        "{json}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(["config", "check", "--config"])
        .arg(d)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "one summary line: {text}");
    let out = Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(["config", "check", "--verbose", "--config"])
        .arg(d)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("using 502"));
}

#[test]
fn a_duplicate_key_is_named_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "gateway.toml",
        "gateway_id = \"gw\"\nstate_dir = \"state\"\n",
    );
    write(
        d,
        "conf.d/m.toml",
        "[[modbus.connection]]\nname = \"plant\"\ntransport = \"tcp\"\naddress = \"10.0.0.5:502\"\naddress = \"10.0.0.6\"\n",
    );
    let (code, json) = check(d);
    assert_eq!(code, 1);
    let errors = json["error"]["errors"].as_array().unwrap();
    assert_reported(errors, ("m.toml", 5, 1, "duplicate key `address`"));
}

/// Profiles are found in the config directory's `profiles/`, then in the
/// shipped directory (here `FERROGATE_PROFILE_PATH`, standing in for
/// /usr/share/ferrogate/profiles); `config check --verbose` says which
/// file each came from, and the config directory's copy wins.
#[test]
fn profiles_come_from_the_search_path_and_say_from_where() {
    let shipped = tempfile::tempdir().unwrap();
    let repo_profile =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles/energy-meter.toml");
    std::fs::copy(&repo_profile, shipped.path().join("energy-meter.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "gateway.toml",
        "gateway_id = \"gw\"\nstate_dir = \"state\"\n",
    );
    write(
        d,
        "conf.d/m.toml",
        "[[modbus.connection]]\nname = \"plant\"\ntransport = \"tcp\"\naddress = \"10.0.0.5:502\"\n\n[[modbus.device]]\nname = \"m\"\nconnection = \"plant\"\nunit = 1\nprofile = \"energy-meter\"\n",
    );
    let check_verbose = || {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrogate"))
            .args(["config", "check", "--verbose", "--config"])
            .arg(d)
            .env("FERROGATE_PROFILE_PATH", shipped.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = check_verbose();
    assert_eq!(code, Some(0), "{text}");
    let from_shipped = format!(
        "profile `energy-meter` from {}",
        shipped.path().join("energy-meter.toml").display()
    );
    assert!(text.contains(&from_shipped), "{text}");

    std::fs::create_dir_all(d.join("profiles")).unwrap();
    std::fs::copy(&repo_profile, d.join("profiles/energy-meter.toml")).unwrap();
    let (code, text) = check_verbose();
    assert_eq!(code, Some(0), "{text}");
    let from_config = format!(
        "profile `energy-meter` from {}",
        d.join("profiles/energy-meter.toml").display()
    );
    assert!(
        text.contains(&from_config),
        "the config directory's copy wins: {text}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// The loader is total: TOML-shaped text in a conf.d file, through
    /// every adapter kind's validation, gives adapters or errors, never a
    /// panic (the `config` fuzz target's stable companion).
    #[test]
    fn any_conf_d_file_loads_or_is_refused(
        text in r#"(\[\[?(modbus|coap|lwm2m|serial|simulator)(\.(connection|device|server|point|client))*\]\]?\n|[a-z_]{1,10} = ("[ -~]{0,12}"|-?[0-9]{1,20}|[0-9.]{1,6}|true|\[[0-9, ]{0,10}\])\n){0,12}"#,
    ) {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "gateway.toml", "gateway_id = \"gw\"\nstate_dir = \"state\"\n");
        write(dir.path(), "conf.d/any.toml", &text);
        let _ = ferrogate::config::load(dir.path(), &ferrogate::kinds::all());
    }
}
