//! Broken `[coap]` configurations are refused at build, every problem with
//! its file:line:col; the annotated example builds.

use ferrogate_coap::CoapKind;
use ferrogate_sdk::testing;

fn issues(toml: &str) -> Vec<(usize, String)> {
    match testing::build(&CoapKind, toml, &[]) {
        Ok(_) => panic!("config accepted:\n{toml}"),
        Err(issues) => issues
            .into_iter()
            .map(|i| (i.pos.as_ref().map(|p| p.line).unwrap_or(0), i.to_string()))
            .collect(),
    }
}

#[test]
fn example_config_builds() {
    let text = include_str!("../../../config/examples/coap.toml");
    let built = testing::build(&CoapKind, text, &[]).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(built.len(), 1);
    assert_eq!(built[0].name, "coap");
    let devices: Vec<&str> = built[0].devices.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(devices, vec!["meter-7", "boiler-2"]);
    assert!(
        built[0]
            .notes
            .iter()
            .any(|n| n.contains("boiler-2: 2 polled, 1 observed")),
        "{:?}",
        built[0].notes
    );
}

#[test]
fn the_ingest_bind_is_required_and_a_wildcard_is_warned_about() {
    let missing = issues("[coap.server]\nallow = [\"lab-*\"]\n");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].1.contains("`[coap.server]` needs `bind`")
            && missing[0].1.contains("127.0.0.1:5683"),
        "{missing:?}"
    );
    let warning = |bind: &str| -> Vec<String> {
        let built = testing::build(
            &CoapKind,
            &format!("[coap.server]\nbind = \"{bind}\"\n"),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        built[0]
            .notes
            .iter()
            .filter(|n| n.starts_with("warning: "))
            .cloned()
            .collect()
    };
    let open = warning("0.0.0.0:5683");
    assert!(
        open.len() == 1 && open[0].contains("without authentication"),
        "{open:?}"
    );
    assert_eq!(warning("[::]:5683").len(), 1);
    assert!(warning("127.0.0.1:5683").is_empty());
    assert!(warning("[::1]:5683").is_empty());
}

#[test]
fn no_coap_section_builds_nothing() {
    assert!(
        testing::build(&CoapKind, "[other]\nx = 1\n", &[])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn every_problem_is_reported_where_it_is() {
    let toml = r#"[coap.server]
bind = "localhost"
paths = ["/{point}"]
allow = [""]

[coap.protocol]
block_size = 1000
ack_random_factor = 0.5

[[coap.device]]
name = "a"
address = "10.0.0.1"

[[coap.device]]
name = "b"

[[coap.device.resource]]
path = "temp"
type = "float"

[[coap.device]]
name = "a"
address = "10.0.0.2:5683"
"#;
    let found = issues(toml);
    let expect = [
        (2, "not an IP address and port"),
        (3, "{device}"),
        (4, "must not be empty"),
        (7, "not a CoAP block size"),
        (8, "between 1.0 and 4.0"),
        (12, "not an IP address and port"),
        (18, "must start with `/`"),
        (18, "needs an `address`"),
        (19, "unknown type `float`"),
        (22, "defined twice"),
    ];
    for (line, text) in expect {
        assert!(
            found.iter().any(|(l, m)| *l == line && m.contains(text)),
            "missing line {line} `{text}` in {found:#?}"
        );
    }
}

#[test]
fn unknown_keys_and_bad_values() {
    let found = issues("[coap.server]\nbind = \"0.0.0.0:5683\"\nport = 5683\n");
    assert!(
        found
            .iter()
            .any(|(l, m)| *l == 3 && m.contains("unknown field `port`")),
        "{found:?}"
    );
    let found = issues("[coap]\nservers = {}\n");
    assert!(
        found
            .iter()
            .any(|(l, m)| *l == 2 && m.contains("coap.servers")),
        "{found:?}"
    );
    let found = issues(
        "[[coap.device]]\nname = \"x\"\naddress = \"10.0.0.1:5683\"\n[[coap.device.resource]]\npath = \"/t\"\nmode = \"watch\"\nperiod = \"soon\"\n",
    );
    assert!(
        found.iter().any(|(l, m)| *l == 6 && m.contains("watch")),
        "{found:?}"
    );
}
