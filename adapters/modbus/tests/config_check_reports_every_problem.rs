//! `config check` for Modbus: the shipped example and profiles build, show
//! resolved Modicon addresses and serial line loads; a broken config gets
//! every problem back at once, each with file:line:col.

use ferrogate_modbus::ModbusKind;
use ferrogate_sdk::config::ConfigIssue;
use ferrogate_sdk::testing::build;

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn issues(toml: &str, profiles: &[(&str, &str)]) -> Vec<ConfigIssue> {
    match build(&ModbusKind, toml, profiles) {
        Ok(_) => panic!("config accepted"),
        Err(issues) => issues,
    }
}

/// The issue whose message contains `needle`, with its line.
fn find<'a>(issues: &'a [ConfigIssue], needle: &str) -> &'a ConfigIssue {
    issues
        .iter()
        .find(|i| i.message.contains(needle))
        .unwrap_or_else(|| panic!("no issue about {needle:?} in:\n{}", render(issues)))
}

fn render(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn line(issue: &ConfigIssue) -> usize {
    issue.pos.as_ref().expect("issue has a position").line
}

#[test]
fn the_example_config_and_profiles_build() {
    let example = repo_file("config/examples/modbus.toml");
    let meter = repo_file("config/profiles/energy-meter.toml");
    let vfd = repo_file("config/profiles/vfd.toml");
    let built = match build(
        &ModbusKind,
        &example,
        &[("energy-meter", &meter), ("vfd", &vfd)],
    ) {
        Ok(b) => b,
        Err(issues) => panic!("{}", render(&issues)),
    };
    let names: Vec<&str> = built.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["modbus/line1", "modbus/plc", "modbus/dtu"]);
    let line1 = &built[0];
    let devices: Vec<&str> = line1.devices.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(devices, ["meter-7", "meter-8", "pump-drive"]);
    assert!(line1.devices[0].1.line > 1);
    let notes = line1.notes.join("\n");
    assert!(
        notes.contains("profile energy-meter: voltage_l1: Modicon 30001 = input register 0"),
        "{notes}"
    );
    assert!(
        notes.contains("profile energy-meter: energy_import: Modicon 30343 = input register 342"),
        "{notes}"
    );
    assert!(
        notes.contains("line line1: 19200 baud 8E1, 3 device(s)"),
        "{notes}"
    );
    assert!(
        built[1]
            .notes
            .iter()
            .any(|n| n.contains("press.setpoint: Modicon 40011 = holding register 10")),
        "{:?}",
        built[1].notes
    );
}

#[test]
fn every_problem_is_reported_with_its_position() {
    let toml = r#"[[modbus.connection]]
name = "line1"
transport = "rtu"
port = "/dev/ttyUSB0"
baud = 9600
timeout = "0s"

[[modbus.connection]]
name = "line1"
transport = "tcp"
address = "10.0.0.1:502"

[[modbus.connection]]
name = "net"
transport = "tcp"
address = "10.0.0.1:http"
baud = 9600

[[modbus.device]]
name = "m1"
connection = "line2"
unit = 1
[[modbus.device.point]]
name = "v"
address = 0

[[modbus.device]]
name = "m2"
connection = "line1"
unit = 300
operations = ["read", "reboot"]
[[modbus.device.point]]
name = "a"
address = 0
type = "u32"
[[modbus.device.point]]
name = "b"
address = 1
[[modbus.device.point]]
name = "a"
address = 10
[[modbus.device.point]]
name = "big"
address = 65535
type = "u32"
[[modbus.device.point]]
name = "huge"
address = 70000
[[modbus.device.point]]
name = "text"
address = 200
type = "string"
length = 130
[[modbus.device.point]]
name = "kind"
address = 300
type = "float"
[[modbus.device.point]]
name = "swapped"
address = 310
type = "u32"
order = "BACD"
[[modbus.device.point]]
name = "coil_num"
area = "coil"
address = 0
type = "u16"
[[modbus.device.point]]
name = "ro"
area = "input"
address = 0
writable = true
[[modbus.device.point]]
name = "both"
address = 400
modicon = 40401
[[modbus.device.point]]
name = "bad_ref"
modicon = 20001
[[modbus.device.point]]
name = "nobit"
address = 500
type = "bool"
[[modbus.device.point]]
name = "typo"
address = 510
scael = 2.0

[[modbus.device]]
name = "m1"
connection = "net"
unit = 1
profile = "missing-profile"
"#;
    let issues = issues(
        toml,
        &[("energy-meter", "[[point]]\nname = \"x\"\naddress = 0\n")],
    );
    let all = render(&issues);
    assert_eq!(
        line(find(&issues, "`timeout` must be more than zero")),
        6,
        "{all}"
    );
    assert_eq!(
        line(find(&issues, "connection `line1` is defined twice")),
        9,
        "{all}"
    );
    assert_eq!(
        line(find(&issues, "`http` is not a port number")),
        16,
        "{all}"
    );
    assert_eq!(line(find(&issues, "`baud` applies only to")), 17, "{all}");
    let unknown = find(&issues, "unknown connection `line2`");
    assert_eq!(line(unknown), 21, "{all}");
    assert!(
        unknown.hint.as_deref().unwrap_or("").contains("line1"),
        "{all}"
    );
    assert_eq!(line(find(&issues, "unit 300 is out of range")), 30, "{all}");
    assert_eq!(
        line(find(&issues, "unknown operation `reboot`")),
        31,
        "{all}"
    );
    assert_eq!(
        line(find(&issues, "point `a` is defined twice")),
        40,
        "{all}"
    );
    assert_eq!(
        line(find(&issues, "point `b` overlaps point `a`")),
        37,
        "{all}"
    );
    assert_eq!(line(find(&issues, "beyond 65535")), 44, "{all}");
    assert_eq!(
        line(find(&issues, "address 70000 is out of range")),
        48,
        "{all}"
    );
    assert_eq!(line(find(&issues, "at most 125")), 53, "{all}");
    assert_eq!(line(find(&issues, "unknown variant `float`")), 57, "{all}");
    assert_eq!(line(find(&issues, "unknown variant `BACD`")), 62, "{all}");
    assert_eq!(line(find(&issues, "coils hold one bit")), 67, "{all}");
    assert_eq!(
        line(find(&issues, "input registers cannot be written")),
        72,
        "{all}"
    );
    assert_eq!(
        line(find(&issues, "either `address` or `modicon`")),
        76,
        "{all}"
    );
    assert_eq!(
        line(find(&issues, "Modicon reference 20001 has no area")),
        79,
        "{all}"
    );
    assert_eq!(line(find(&issues, "needs `bit`")), 83, "{all}");
    assert_eq!(line(find(&issues, "unknown field `scael`")), 87, "{all}");
    assert_eq!(
        line(find(&issues, "device `m1` is defined twice")),
        90,
        "{all}"
    );
    for issue in &issues {
        let pos = issue.pos.as_ref().expect("every issue has a position");
        assert_eq!(pos.file.to_str(), Some("conf.d/test.toml"), "{issue}");
    }
}

#[test]
fn profile_points_are_checked_in_the_profile_file() {
    let toml = "[[modbus.connection]]\nname = \"c\"\ntransport = \"tcp\"\naddress = \"h\"\n\
                [[modbus.device]]\nname = \"d\"\nconnection = \"c\"\nunit = 1\nprofile = \"meter\"\n\
                [[modbus.device]]\nname = \"e\"\nconnection = \"c\"\nunit = 2\nprofile = \"nope\"\n\
                [[modbus.device]]\nname = \"f\"\nconnection = \"c\"\nunit = 3\nprofile = \"meter\"\n";
    let profile = "[[point]]\nname = \"x\"\naddress = 0\ntype = \"f32\"\n[[point]]\nname = \"y\"\naddress = 1\n";
    let issues = issues(toml, &[("meter", profile)]);
    let overlap = find(&issues, "point `y` overlaps point `x`");
    let pos = overlap.pos.as_ref().unwrap();
    assert_eq!(
        (pos.file.to_str(), pos.line),
        (Some("profiles/meter.toml"), 6)
    );
    let missing = find(&issues, "unknown profile `nope`");
    assert!(missing.hint.as_deref().unwrap_or("").contains("meter"));
}

#[test]
fn a_line_that_cannot_carry_its_poll_periods_is_refused() {
    let mut toml = String::from(
        "[[modbus.connection]]\nname = \"slow\"\ntransport = \"rtu\"\nport = \"/dev/ttyS0\"\nbaud = 1200\n",
    );
    for unit in 1..=4 {
        toml.push_str(&format!(
            "[[modbus.device]]\nname = \"d{unit}\"\nconnection = \"slow\"\nunit = {unit}\npoll = \"200ms\"\n\
             [[modbus.device.point]]\nname = \"block\"\naddress = 0\ntype = \"bytes\"\nlength = 60\n"
        ));
    }
    let issues = issues(&toml, &[]);
    let load = find(&issues, "serial line `slow` would need");
    assert_eq!(line(load), 5, "{}", render(&issues));
    let cycle = find(&issues, "device `d1`: one poll cycle takes about");
    assert!(
        cycle
            .message
            .contains("longer than its poll period of 200ms"),
        "{}",
        cycle.message
    );
}

#[test]
fn the_adapter_kind_key_is_modbus_and_an_empty_section_builds_nothing() {
    use ferrogate_sdk::AdapterKind;
    assert_eq!(ModbusKind.key(), "modbus");
    let built =
        build(&ModbusKind, "[other]\nx = 1\n", &[]).unwrap_or_else(|i| panic!("{}", render(&i)));
    assert!(built.is_empty());
    let issues = issues("[modbus]\nconnections = []\n", &[]);
    assert!(
        find(&issues, "unknown key `modbus.connections`")
            .hint
            .is_some()
    );
}

#[test]
fn report_by_exception_mistakes_are_named() {
    let toml = "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\n\n\
        [[modbus.device]]\nname = \"a\"\nconnection = \"plc\"\nunit = 1\nreport_on_change = true\n\
        deadband = 1.0\ndeadband_percent = 2.0\n\
        [[modbus.device.point]]\nname = \"p\"\naddress = 0\nspan = 100.0\n\
        [[modbus.device.point]]\nname = \"q\"\naddress = 1\ndeadband_percent = -1.0\n\
        [[modbus.device.point]]\nname = \"r\"\naddress = 2\nmin_interval = \"10s\"\nmax_interval = \"1s\"\n\n\
        [[modbus.device]]\nname = \"b\"\nconnection = \"plc\"\nunit = 2\nmax_interval = \"0s\"\n\
        [[modbus.device.point]]\nname = \"s\"\naddress = 0\ntype = \"bool\"\narea = \"coil\"\ndeadband_percent = 1.0\n";
    let issues = issues(toml, &[]);
    assert_eq!(line(find(&issues, "not both")), 12);
    assert_eq!(line(find(&issues, "`span` is what")), 16);
    assert_eq!(
        line(find(&issues, "`deadband_percent` must be zero or more")),
        20
    );
    assert_eq!(line(find(&issues, "the heartbeat could never be kept")), 24);
    assert_eq!(
        line(find(&issues, "`max_interval` must be more than zero")),
        31
    );
    assert_eq!(
        line(find(&issues, "`deadband_percent` applies only to numeric")),
        37
    );
}

#[test]
fn ascii_connections_are_checked_like_the_others() {
    let toml = "[[modbus.connection]]\nname = \"a\"\ntransport = \"ascii\"\naddress = \"10.0.0.1:502\"\n\n\
        [[modbus.connection]]\nname = \"b\"\ntransport = \"ascii-over-tcp\"\nbaud = 9600\n";
    let issues = issues(toml, &[]);
    assert_eq!(line(find(&issues, "needs `port`, the serial device")), 3);
    assert_eq!(line(find(&issues, "`address` is for TCP")), 4);
    assert_eq!(
        line(find(&issues, "`baud` applies only to a serial line")),
        9
    );
    assert_eq!(line(find(&issues, "a TCP connection needs `address")), 8);
}

#[test]
fn dial_in_connections_need_a_listener_and_an_identity() {
    let toml = "[[modbus.connection]]\nname = \"a\"\ntransport = \"dial-in\"\nlisten = \"9001\"\nbaud = 9600\n\n\
        [[modbus.connection]]\nname = \"b\"\ntransport = \"dial-in\"\nlisten = \"0.0.0.0:9002\"\nregistration = \"X\"\npeer = \"10.0.0.1\"\n\n\
        [[modbus.connection]]\nname = \"c\"\ntransport = \"tcp\"\naddress = \"10.0.0.1\"\nregistration = \"X\"\n";
    let issues = issues(toml, &[]);
    assert_eq!(
        line(find(&issues, "`listen` must be an IP address and port")),
        4
    );
    assert_eq!(line(find(&issues, "`baud` does not apply to a dial-in")), 5);
    assert_eq!(line(find(&issues, "needs `registration`")), 3);
    assert_eq!(line(find(&issues, "not both")), 12);
    assert_eq!(line(find(&issues, "`registration` applies only to")), 18);
}

#[test]
fn a_profile_gives_its_devices_report_defaults() {
    let profile = "description = \"tank\"\nreport_on_change = true\ndeadband_percent = 5.0\nmax_interval = \"10m\"\n\n\
        [[point]]\nname = \"level\"\naddress = 0\n";
    let toml = "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\n\n\
        [[modbus.device]]\nname = \"a\"\nconnection = \"plc\"\nunit = 1\nprofile = \"tank\"\n\n\
        [[modbus.device]]\nname = \"b\"\nconnection = \"plc\"\nunit = 2\nprofile = \"tank\"\ndeadband = 1.0\nmax_interval = \"1m\"\n";
    let built =
        build(&ModbusKind, toml, &[("tank", profile)]).unwrap_or_else(|i| panic!("{}", render(&i)));
    let policies = &built[0].policies;
    use ferrogate_sdk::report::Deadband;
    use std::time::Duration;
    let a = &policies["a"].report;
    assert!(a.on_change);
    assert_eq!(a.deadband, Deadband::Percent(5.0));
    assert_eq!(a.max_interval, Some(Duration::from_secs(600)));
    let b = &policies["b"].report;
    assert!(b.on_change, "from the profile");
    assert_eq!(b.deadband, Deadband::Absolute(1.0), "the device's own wins");
    assert_eq!(b.max_interval, Some(Duration::from_secs(60)));

    let bad = "deadbnd = 1.0\n[[point]]\nname = \"level\"\naddress = 0\n";
    let issues = issues(toml, &[("tank", bad)]);
    let issue = find(&issues, "unknown field `deadbnd`");
    assert_eq!(
        issue
            .pos
            .as_ref()
            .map(|p| p.file.display().to_string())
            .as_deref(),
        Some("profiles/tank.toml")
    );
}
