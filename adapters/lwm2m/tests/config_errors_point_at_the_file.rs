//! Broken `[lwm2m]` configuration is refused at build time with the
//! file:line:col of each problem, and a good one builds one adapter.

use ferrogate_lwm2m::Lwm2mKind;
use ferrogate_sdk::testing::build;

fn issues(toml: &str) -> Vec<String> {
    match build(&Lwm2mKind, toml, &[]) {
        Ok(_) => panic!("config accepted:\n{toml}"),
        Err(issues) => issues.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn good_config_builds_one_adapter_without_static_devices() {
    let built = build(
        &Lwm2mKind,
        "[lwm2m.server]\nbind = \"127.0.0.1:5683\"\ndevice_prefix = \"lw-\"\npoint_naming = \"path\"\nauto_observe = [\"/3303/*/5700\", \"/3/0/9\"]\nqueue_awake = \"30s\"\n",
        &[],
    )
    .expect("valid");
    assert_eq!(built.len(), 1);
    assert_eq!(built[0].name, "lwm2m");
    assert!(built[0].devices.is_empty());
    assert!(
        built[0].notes.iter().any(|n| n.contains("/3303/*/5700")),
        "{:?}",
        built[0].notes
    );
    assert!(build(&Lwm2mKind, "", &[]).expect("no section").is_empty());
}

#[test]
fn every_problem_has_a_position() {
    let found =
        issues("[lwm2m.server]\nbind = \"localhost\"\nauto_observe = [\"/3303/x\", \"/*/0\"]\n");
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].starts_with("conf.d/test.toml:2:8: `localhost` is not a socket address"),
        "{found:?}"
    );
    assert!(found[1].starts_with("conf.d/test.toml:3:17:"), "{found:?}");
    assert!(found[2].starts_with("conf.d/test.toml:3:28:"), "{found:?}");

    let unknown = issues("[lwm2m.server]\nbind = \"0.0.0.0:5683\"\nlifetime = \"1s\"\n");
    assert!(
        unknown[0].contains("conf.d/test.toml:3:1")
            && unknown[0].contains("unknown field `lifetime`"),
        "{unknown:?}"
    );
    let naming = issues("[lwm2m.server]\npoint_naming = \"fancy\"\n");
    assert!(
        naming[0].contains(":2:16") && naming[0].contains("fancy"),
        "{naming:?}"
    );
    let duration = issues("[lwm2m.server]\nqueue_awake = \"soon\"\n");
    assert!(
        duration[0].contains(":2:15") && duration[0].contains("invalid duration"),
        "{duration:?}"
    );
    let stray = issues("[lwm2m]\nserver = {}\nclients = 3\n");
    assert!(
        stray[0].contains(":3:1") && stray[0].contains("unknown key `lwm2m.clients`"),
        "{stray:?}"
    );
    let missing = issues("[lwm2m]\n");
    assert!(missing[0].contains("[lwm2m.server]"), "{missing:?}");
    // no default wildcard: the bind is written out
    let no_bind = issues("[lwm2m.server]\ndevice_prefix = \"lw-\"\n");
    assert!(
        no_bind[0].contains("`[lwm2m.server]` needs `bind`"),
        "{no_bind:?}"
    );
}

#[test]
fn a_listener_off_loopback_is_warned_about() {
    let notes = |bind: &str| {
        build(
            &Lwm2mKind,
            &format!("[lwm2m.server]\nbind = \"{bind}\"\n"),
            &[],
        )
        .expect("valid")[0]
            .notes
            .clone()
    };
    let open = notes("0.0.0.0:5683");
    assert!(
        open.iter()
            .any(|n| n.starts_with("warning: ") && n.contains("without authentication")),
        "{open:?}"
    );
    assert!(
        !notes("127.0.0.1:5683")
            .iter()
            .any(|n| n.starts_with("warning: "))
    );
}

#[test]
fn object_xml_directory_is_loaded_and_its_errors_reported() {
    let dir = std::env::temp_dir().join(format!("ferrogate-lwm2m-objects-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("3424.xml"),
        "<LWM2M><Object><Name>Water Meter</Name><ObjectID>3424</ObjectID><MultipleInstances>Multiple</MultipleInstances><Resources><Item ID=\"1\"><Name>Cumulated water volume</Name><Operations>R</Operations><MultipleInstances>Single</MultipleInstances><Type>Float</Type><Units>m3</Units></Item></Resources></Object></LWM2M>",
    )
    .expect("write xml");
    let toml = format!(
        "[lwm2m.server]\nobject_dir = \"{}\"\nbind = \"127.0.0.1:5683\"\n",
        dir.display()
    );
    let built = build(&Lwm2mKind, &toml, &[]).expect("valid");
    assert!(
        built[0]
            .notes
            .iter()
            .any(|n| n.starts_with("1 object definitions loaded")),
        "{:?}",
        built[0].notes
    );

    std::fs::write(
        dir.join("broken.xml"),
        "<LWM2M><Object><Name>x</Name></Object></LWM2M>",
    )
    .expect("write xml");
    let found = issues(&toml);
    assert!(
        found[0].contains(":2:14")
            && found[0].contains("broken.xml")
            && found[0].contains("ObjectID"),
        "{found:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let missing = issues(
        "[lwm2m.server]\nbind = \"127.0.0.1:5683\"\nobject_dir = \"/nonexistent/ferrogate-objects\"\n",
    );
    assert!(missing[0].contains("cannot read directory"), "{missing:?}");
}

#[test]
fn a_bootstrap_server_builds_an_instance_of_its_own() {
    let built = build(
        &Lwm2mKind,
        "[lwm2m.server]\nbind = \"127.0.0.1:5683\"\n\
         [lwm2m.bootstrap]\nbind = \"127.0.0.1:5783\"\n\
         [lwm2m.bootstrap.default]\nserver_uri = \"coap://127.0.0.1:5683\"\n\
         [[lwm2m.bootstrap.endpoint]]\nname = \"meter-1\"\nserver_uri = \"coaps://127.0.0.1:5684\"\n\
         security = \"psk\"\npsk_identity = \"meter-1\"\npsk_key = \"00112233\"\n",
        &[],
    )
    .expect("valid");
    let names: Vec<&str> = built.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["lwm2m", "lwm2m/bootstrap"]);
    assert!(
        built[1].notes[0].contains("1 endpoint account(s) and a default"),
        "{:?}",
        built[1].notes
    );
    // a bootstrap server alone is a configuration too
    let alone = build(
        &Lwm2mKind,
        "[lwm2m.bootstrap]\nbind = \"127.0.0.1:5783\"\n[lwm2m.bootstrap.default]\nserver_uri = \"coap://10.0.0.1:5683\"\n",
        &[],
    )
    .expect("valid");
    assert_eq!(alone.len(), 1);
}

#[test]
fn bootstrap_account_mistakes_are_each_reported_with_a_position() {
    let found = issues(
        "[lwm2m.bootstrap]\nbind = \"127.0.0.1:5783\"\n\
         [[lwm2m.bootstrap.endpoint]]\nname = \"a\"\nserver_uri = \"coaps://h:5684\"\n\
         [[lwm2m.bootstrap.endpoint]]\nname = \"b\"\nserver_uri = \"coap://h:5683\"\nsecurity = \"psk\"\npsk_key = \"xyz\"\n\
         [[lwm2m.bootstrap.endpoint]]\nname = \"a\"\nserver_uri = \"http://h\"\nbinding = \"W\"\n",
    );
    let has = |pos: &str, text: &str| {
        assert!(
            found.iter().any(|f| f.contains(pos) && f.contains(text)),
            "no {pos} {text} in {found:?}"
        )
    };
    has(":5:14", "needs `security = \"psk\"`");
    has(":8:14", "PSK security needs a coaps:// URI");
    has(":6:1", "needs `psk_identity`");
    has(":10:11", "`psk_key` as hexadecimal");
    has(":13:14", "coap:// or coaps://");
    has(":14:11", "not an LwM2M binding");
    assert_eq!(found.len(), 6, "{found:?}");
    let empty = issues("[lwm2m.bootstrap]\nbind = \"127.0.0.1:5783\"\n");
    assert!(empty[0].contains("no account to hand out"), "{empty:?}");
    let unknown = issues("[lwm2m.bootstrap]\nbind = \"127.0.0.1:5783\"\nport = 1\n");
    assert!(unknown[0].contains("unknown field `port`"), "{unknown:?}");
}

#[test]
fn dtls_needs_credentials_and_their_mistakes_point_into_their_file() {
    let alone = issues("[lwm2m.server]\ndtls_bind = \"127.0.0.1:5684\"\n");
    assert!(
        alone[0].contains(":2:13") && alone[0].contains("needs `credentials`"),
        "{alone:?}"
    );
    let dir = std::env::temp_dir().join(format!("ferrogate-lwm2m-psk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("psk.toml");
    std::fs::write(
        &file,
        "[[psk]]\nendpoint = \"a\"\nidentity = \"a\"\nkey_hex = \"0g\"\n",
    )
    .unwrap();
    let config = format!(
        "[lwm2m.server]\ndtls_bind = \"127.0.0.1:5684\"\ncredentials = \"{}\"\n",
        file.display()
    );
    let bad = issues(&config);
    assert!(
        bad[0].starts_with(&format!("{}:4:11:", file.display())) && bad[0].contains("hex"),
        "{bad:?}"
    );
    // a good file: DTLS only, no NoSec listener
    std::fs::write(
        &file,
        "[[psk]]\nendpoint = \"a\"\nidentity = \"a\"\nkey_hex = \"00ff\"\n",
    )
    .unwrap();
    let built = build(&Lwm2mKind, &config, &[]).expect("valid");
    let notes = built[0].notes.join("\n");
    assert!(
        notes.contains("coaps://127.0.0.1:5684") && !notes.contains("NoSec"),
        "{notes}"
    );
    assert!(!notes.contains("00ff"), "{notes}");
    let _ = std::fs::remove_dir_all(&dir);
}
