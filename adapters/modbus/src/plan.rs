//! What each poll cycle sends, as the adapter would run the configuration
//! (`ferrogate modbus plan`): per connection and device, each poll
//! group's requests (function, unit, start, count, the points each
//! serves, the unmapped addresses it bridges) and, on a serial line, the
//! line time of a cycle against its poll period.
//!
//! Addresses a device refuses (exception 2) are learned while it is
//! polled, so a plan built from the configuration has none: it is the
//! first cycle's.

use std::time::Duration;

use ferrogate_sdk::config::{BuildContext, ConfigIssue, Section};

use crate::build::{self, LineSpec};
use crate::planner::ReadRequest;
use crate::transport::{Endpoint, Parity};

/// One connection's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct LinePlan {
    pub connection: String,
    /// `tcp 10.0.0.5:502`, `rtu /dev/ttyUSB0 19200 8E1`, ...
    pub transport: String,
    pub devices: Vec<DevicePlan>,
    /// On a serial line: the share of its time the polls take (1.0: all).
    pub load: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DevicePlan {
    pub device: String,
    pub unit: u8,
    pub groups: Vec<GroupPlan>,
}

/// The points of one poll period and the requests that read them.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    pub period: Duration,
    pub requests: Vec<RequestPlan>,
    /// On a serial line: how long one cycle of these requests takes.
    pub line_time: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequestPlan {
    pub function: u8,
    pub area: &'static str,
    pub start: u16,
    pub count: u16,
    pub points: Vec<String>,
    /// Unmapped address ranges (first, last) the request reads to join
    /// its points.
    pub bridged: Vec<(u16, u16)>,
}

/// The plan of every connection in the `modbus` section (checked as
/// `config check` does: a section with errors has no plan).
pub fn plan(
    section: &Section<'_>,
    ctx: &BuildContext<'_>,
) -> Result<Vec<LinePlan>, Vec<ConfigIssue>> {
    Ok(build::build(section, ctx)?
        .lines
        .iter()
        .map(line_plan)
        .collect())
}

fn line_plan(spec: &LineSpec) -> LinePlan {
    let serial = spec.endpoint.serial();
    let devices: Vec<DevicePlan> = spec
        .devices
        .iter()
        .map(|device| DevicePlan {
            device: device.name.clone(),
            unit: device.unit,
            groups: device
                .groups
                .iter()
                .map(|group| GroupPlan {
                    period: group.period,
                    requests: group
                        .plan
                        .iter()
                        .map(|r| request_plan(&device.points, r))
                        .collect(),
                    line_time: serial.map(|s| {
                        group
                            .plan
                            .iter()
                            .map(|r| build::request_time(spec, s, r))
                            .sum()
                    }),
                })
                .collect(),
        })
        .collect();
    let load = serial.map(|_| {
        devices
            .iter()
            .flat_map(|d| &d.groups)
            .filter_map(|g| Some(g.line_time?.as_secs_f64() / g.period.as_secs_f64()))
            .sum()
    });
    LinePlan {
        connection: spec.name.clone(),
        transport: transport(&spec.endpoint),
        devices,
        load,
    }
}

fn request_plan(points: &[crate::point::Point], r: &ReadRequest) -> RequestPlan {
    let end = u32::from(r.start) + u32::from(r.count);
    let mut covered: Vec<(u32, u32)> = r
        .points
        .iter()
        .filter_map(|&i| points.get(i))
        .map(|p| (u32::from(p.address), p.end()))
        .collect();
    covered.sort_unstable();
    let mut bridged = Vec::new();
    let mut at = u32::from(r.start);
    for (from, to) in covered {
        if from > at {
            bridged.push((at as u16, (from - 1) as u16));
        }
        at = at.max(to);
    }
    if at < end {
        bridged.push((at as u16, (end - 1) as u16));
    }
    RequestPlan {
        function: r.area.read_function(),
        area: r.area.as_str(),
        start: r.start,
        count: r.count,
        points: r
            .points
            .iter()
            .filter_map(|&i| points.get(i))
            .map(|p| p.name.to_string())
            .collect(),
        bridged,
    }
}

fn transport(endpoint: &Endpoint) -> String {
    let serial = |kind: &str, s: &crate::transport::SerialSettings| {
        let parity = match s.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        format!(
            "{kind} {} {} {}{parity}{}",
            s.path, s.baud, s.data_bits, s.stop_bits
        )
    };
    match endpoint {
        Endpoint::Tcp { address } => format!("tcp {address}"),
        Endpoint::RtuOverTcp { address } => format!("rtu-over-tcp {address}"),
        Endpoint::AsciiOverTcp { address } => format!("ascii-over-tcp {address}"),
        Endpoint::Serial(s) => serial("rtu", s),
        Endpoint::AsciiSerial(s) => serial("ascii", s),
        Endpoint::DialIn(d) => format!(
            "dial-in on {}, {} framing, known by {}",
            d.listen,
            if d.framing == crate::transport::Framing::Tcp {
                "tcp"
            } else {
                "rtu"
            },
            match &d.identity {
                crate::transport::Identity::Registration(r) =>
                    format!("registration `{}`", String::from_utf8_lossy(r)),
                crate::transport::Identity::Peer(ip) => format!("source address {ip}"),
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of `toml`'s connections, through the same build as the
    /// adapter.
    fn plans(toml: &str) -> Vec<LinePlan> {
        let file = ferrogate_sdk::config::SourceFile::new("conf.d/t.toml", toml.to_string());
        let doc = file.parse().expect("toml");
        let root = ferrogate_sdk::config::Node::new(&file, &doc);
        let section = Section::new("modbus", root.get("modbus").into_iter().collect());
        plan(&section, &BuildContext::default()).expect("valid")
    }

    #[test]
    fn requests_points_and_bridged_gaps() {
        let plans = plans(
            "[[modbus.connection]]\nname = \"bus\"\ntransport = \"rtu\"\nport = \"/dev/ttyS0\"\nbaud = 9600\n\n\
             [[modbus.device]]\nname = \"m\"\nconnection = \"bus\"\nunit = 7\npoll = \"1s\"\nmax_gap = 4\n\
             [[modbus.device.point]]\nname = \"a\"\naddress = 0\n\
             [[modbus.device.point]]\nname = \"b\"\naddress = 3\ntype = \"u32\"\n\
             [[modbus.device.point]]\nname = \"far\"\naddress = 100\n\
             [[modbus.device.point]]\nname = \"c\"\narea = \"coil\"\naddress = 2\n\
             [[modbus.device.point]]\nname = \"slow\"\narea = \"input\"\naddress = 0\npoll = \"10s\"\n",
        );
        let line = &plans[0];
        assert_eq!(line.transport, "rtu /dev/ttyS0 9600 8E1");
        let device = &line.devices[0];
        assert_eq!((device.device.as_str(), device.unit), ("m", 7));
        let fast = &device.groups[0];
        assert_eq!(fast.period, Duration::from_secs(1));
        type Summary<'a> = (u8, u16, u16, Vec<&'a str>, Vec<(u16, u16)>);
        let summary: Vec<Summary<'_>> = fast
            .requests
            .iter()
            .map(|r| {
                (
                    r.function,
                    r.start,
                    r.count,
                    r.points.iter().map(String::as_str).collect(),
                    r.bridged.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, 2, 1, vec!["c"], vec![]),
                (3, 0, 5, vec!["a", "b"], vec![(1, 2)]),
                (3, 100, 1, vec!["far"], vec![]),
            ]
        );
        assert_eq!(device.groups[1].period, Duration::from_secs(10));
        // At 9600 baud 8E1 (11 bits a character) each read is its request
        // (8 characters) and answer (5 + data), 3.5 characters of frame gap
        // and the 10 ms default response time: 101.6 ms in all.
        let char_time = 11.0 / 9600.0;
        let expected: f64 = [(1u16, true), (5, false), (1, false)]
            .iter()
            .map(|&(count, bits)| {
                let data = if bits { 1.0 } else { f64::from(count) * 2.0 };
                (13.0 + data + 3.5) * char_time + 0.010
            })
            .sum();
        let total = fast.line_time.expect("a serial line").as_secs_f64();
        assert!((total - expected).abs() < 1e-6, "{total} vs {expected}");
        let load = line.load.expect("a serial line");
        let slow = device.groups[1].line_time.unwrap().as_secs_f64() / 10.0;
        assert!((load - (total + slow)).abs() < 1e-6, "{load}");
    }

    #[test]
    fn tcp_lines_have_no_line_time() {
        let plans = plans(
            "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"10.0.0.5\"\n\n\
             [[modbus.device]]\nname = \"p\"\nconnection = \"plc\"\nunit = 1\n\
             [[modbus.device.point]]\nname = \"v\"\naddress = 0\n",
        );
        assert_eq!(plans[0].transport, "tcp 10.0.0.5:502");
        assert_eq!(plans[0].load, None);
        assert_eq!(plans[0].devices[0].groups[0].line_time, None);
    }
}
