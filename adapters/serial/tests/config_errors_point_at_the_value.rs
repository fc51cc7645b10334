//! Broken serial configuration is refused at build, before any I/O, with
//! every problem at its file:line:col, and a poll period the line cannot
//! carry at its baud rate is one of them.

use ferrogate_sdk::config::ConfigIssue;
use ferrogate_sdk::testing::build;
use ferrogate_serial::SerialKind;

fn rejected(toml: &str) -> Vec<ConfigIssue> {
    match build(&SerialKind, toml, &[]) {
        Ok(_) => panic!("config accepted:\n{toml}"),
        Err(issues) => issues,
    }
}

fn at(issues: &[ConfigIssue], needle: &str) -> (usize, usize) {
    let issue = issues
        .iter()
        .find(|i| i.message.contains(needle))
        .unwrap_or_else(|| panic!("no issue mentioning `{needle}` in {issues:#?}"));
    let pos = issue.pos.as_ref().expect("issue has a position");
    assert!(pos.file.ends_with("conf.d/test.toml"));
    (pos.line, pos.col)
}

const GOOD: &str = r#"
[[serial.device]]
name = "scale"
port = "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0"
[serial.device.parser]
kind = "regex"
pattern = '^(?P<w>[0-9.]+)$'
[[serial.device.point]]
name = "w"
"#;

#[test]
fn a_good_device_builds_with_its_name_and_position() {
    let built = build(&SerialKind, GOOD, &[]).unwrap();
    assert_eq!(built.len(), 1);
    assert_eq!(built[0].name, "serial/scale");
    assert_eq!(built[0].devices[0].0, "scale");
    assert_eq!(built[0].devices[0].1.line, 3);
}

#[test]
fn every_bad_value_is_reported_where_it_is() {
    let toml = r#"
[[serial.device]]
name = "a"
port = "/dev/ttyUSB0"
stop_bits = 3
[serial.device.framing]
kind = "start_end"
start = 0x02
end = 0x02
[serial.device.parser]
kind = "regex"
pattern = '^(?P<w>[0-9.]+'
[[serial.device.point]]
name = "w"

[[serial.device]]
name = "b"
port = "/dev/ttyUSB1"
[serial.device.parser]
kind = "regex"
pattern = '^(?P<w>[0-9.]+)$'
[[serial.device.point]]
name = "weight"
[[serial.device.point]]
name = "w"
type = "u64"
scale = 0.1
[[serial.device.command]]
name = "tare"
template = "T {value:.2}\r"
type = "i64"
reply = "(OK"
"#;
    let issues = rejected(toml);
    assert_eq!(at(&issues, "stop_bits"), (5, 13));
    assert_eq!(at(&issues, "distinct"), (8, 9));
    assert_eq!(at(&issues, "invalid regex"), (12, 11));
    assert_eq!(at(&issues, "no field `weight`"), (23, 8));
    assert_eq!(at(&issues, "scale and offset"), (27, 9));
    assert_eq!(at(&issues, "precision"), (30, 12));
    let reply = issues
        .iter()
        .filter(|i| i.message.contains("invalid regex"))
        .count();
    assert_eq!(
        reply, 2,
        "the bad reply pattern is reported too: {issues:#?}"
    );
    let hint = issues
        .iter()
        .find(|i| i.message.contains("no field"))
        .and_then(|i| i.hint.clone())
        .unwrap();
    assert!(hint.contains("available: w"), "{hint}");
}

#[test]
fn unknown_keys_and_bad_enums_are_positioned() {
    let issues = rejected(
        "[[serial.device]]\nname = \"a\"\nport = \"/dev/x\"\nparity = \"mark\"\n[serial.device.parser]\nkind = \"json\"\n",
    );
    assert_eq!(at(&issues, "mark"), (4, 10));

    let issues = issues_of_typo();
    assert_eq!(at(&issues, "unknown field `baudrate`"), (4, 1));

    let issues = rejected("[serial]\ndevices = []\n");
    assert_eq!(at(&issues, "serial.devices"), (2, 1));
}

fn issues_of_typo() -> Vec<ConfigIssue> {
    rejected(
        "[[serial.device]]\nname = \"a\"\nport = \"/dev/x\"\nbaudrate = 9600\n[serial.device.parser]\nkind = \"json\"\n",
    )
}

#[test]
fn duplicate_devices_and_shared_ports() {
    let twice = format!(
        "{GOOD}{}",
        GOOD.replace("name = \"scale\"", "name = \"scale\"\n")
    );
    let issues = rejected(&twice);
    assert_eq!(at(&issues, "duplicate serial device"), (12, 8));

    let shared = format!(
        "{GOOD}{}",
        GOOD.replace("name = \"scale\"", "name = \"scale2\"")
    );
    let issues = rejected(&shared);
    let (line, _) = at(&issues, "already used");
    assert_eq!(line, 13);
}

#[test]
fn poll_period_too_short_for_the_baud_rate() {
    // 5-byte query + up to 258 reply bytes at 10 bits/char and 1200 baud is
    // about 2.2 s: a 1 s poll cannot be kept.
    let toml = r#"
[[serial.device]]
name = "slow"
port = "/dev/ttyS0"
baud = 1200
mode = "poll"
poll = "1s"
query = "READ\r"
[serial.device.parser]
kind = "key_value"
[[serial.device.point]]
name = "t"
"#;
    let issues = rejected(toml);
    let issue = issues
        .iter()
        .find(|i| i.message.contains("poll period"))
        .unwrap();
    assert_eq!(issue.pos.as_ref().unwrap().line, 7);
    assert!(issue.message.contains("2191 ms"), "{}", issue.message);
    assert!(issue.hint.as_ref().unwrap().contains("max_frame"));

    // The same line with a realistic reply size fits, and the load is noted.
    let fits = toml.replace(
        "[serial.device.parser]",
        "[serial.device.framing]\nmax_frame = 40\n[serial.device.parser]",
    );
    let built = build(&SerialKind, &fits, &[]).unwrap();
    assert!(
        built[0].notes[0].contains("every 1000 ms at 1200 baud"),
        "{:?}",
        built[0].notes
    );

    // Parity and a second stop bit make each character longer: 47 bytes
    // at 12 bits per character.
    let eight_e_2 = fits.replace(
        "baud = 1200",
        "baud = 1200\nparity = \"even\"\nstop_bits = 2\ndata_bits = 8",
    );
    let built = build(&SerialKind, &eight_e_2, &[]).unwrap();
    assert!(
        built[0].notes[0].contains("470.0 ms"),
        "{:?}",
        built[0].notes
    );
}

#[test]
fn mode_mismatches() {
    let issues = rejected(&GOOD.replace("name = \"scale\"", "name = \"scale\"\nmode = \"poll\""));
    assert!(
        issues
            .iter()
            .any(|i| i.message.contains("needs a non-zero `poll`"))
    );
    let issues = rejected(&GOOD.replace("name = \"scale\"", "name = \"scale\"\nquery = \"R\""));
    assert!(
        issues
            .iter()
            .any(|i| i.message.contains("apply only to mode = \"poll\""))
    );
}

#[test]
fn a_length_offset_no_prefix_can_carry_is_refused() {
    let toml = GOOD.replace(
        "[serial.device.parser]",
        "[serial.device.framing]\nkind = \"length_prefix\"\nlength_offset = 9223372036854775807\n[serial.device.parser]",
    );
    let issues = rejected(&toml);
    let (line, _) = at(&issues, "length_offset 9223372036854775807 is out of range");
    assert_eq!(line, 7);
    let ok = GOOD.replace(
        "[serial.device.parser]",
        "[serial.device.framing]\nkind = \"length_prefix\"\nlength_offset = -65535\n[serial.device.parser]",
    );
    build(&SerialKind, &ok, &[]).expect("an offset within a 2-byte prefix builds");
}
