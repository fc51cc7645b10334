//! The report-by-exception stage on a non-Modbus adapter, end to end: a
//! simulated device with a `[[report]]` entry, the daemon, a real
//! mosquitto. An unchanged point comes back only as a heartbeat, a fast
//! point at most once per `min_interval` with its latest value, and `seq`
//! still grows by one per message. Mistakes in `[[report]]` are named with
//! their positions.

mod common;
mod daemon;

use std::time::Duration;

use common::{Mosquitto, Subscriber};
use daemon::{ConfigDir, Daemon, simulated_device};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_device_is_reported_by_exception() {
    let broker = Mosquitto::start();
    let devices = format!(
        "{}\n[[report]]\ndevice = \"pump-1\"\nreport_on_change = true\nmax_interval = \"1s\"\n\n\
         [[report.point]]\nname = \"count\"\nmin_interval = \"400ms\"\n",
        simulated_device("pump-1", "50ms")
    );
    let config = ConfigDir::new("gw-rbe", broker.port, "5", &devices);
    let sub = Subscriber::start(broker.port, "ferrogate/gw-rbe/devices/pump-1/telemetry").await;
    let _gw = Daemon::start(config.path());
    let topic = "ferrogate/gw-rbe/devices/pump-1/telemetry";
    // Three heartbeats of the setpoint that never changes.
    sub.wait_for(topic, Duration::from_secs(30), |_| {
        sub.on(topic)
            .iter()
            .filter(|m| m.json()["values"].get("setpoint").is_some())
            .count()
            >= 3
    })
    .await;
    let msgs: Vec<serde_json::Value> = sub.on(topic).iter().map(|m| m.json()).collect();
    let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (seqs[0]..seqs[0] + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "seq counts messages, without gaps");

    let at = |name: &str| -> Vec<(u64, f64)> {
        msgs.iter()
            .filter_map(|m| Some((m["ts"].as_u64()?, m["values"].get(name)?.as_f64()?)))
            .collect()
    };
    let setpoint = at("setpoint");
    for pair in setpoint.windows(2) {
        // `ts` is the ms wall clock; the stage runs on instants.
        assert!(
            pair[1].0 - pair[0].0 >= 990,
            "setpoint again after {} ms",
            pair[1].0 - pair[0].0
        );
        assert_eq!(pair[0].1, pair[1].1);
    }
    let count = at("count");
    assert!(count.len() >= 3, "{count:?}");
    for pair in count.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= 390,
            "count again after {} ms",
            pair[1].0 - pair[0].0
        );
        // The latest value wins: the counter moved on by several periods.
        assert!(pair[1].1 >= pair[0].1 + 2.0, "{count:?}");
    }
}

#[test]
fn report_table_mistakes_are_named_with_their_position() {
    let devices = format!(
        "{}\n[[report]]\ndevice = \"pump-1\"\ndeadband = 1.0\n\n\
         [[report]]\ndevice = \"pump-9\"\nreport_on_change = true\n\n\
         [[report]]\ndevice = \"pump-9\" # again\nreport_on_change = true\n\n\
         [[report]]\ndevice = \"other\"\nreport_on_change = true\ndeadband_percent = -2.0\nspan = 10.0\n\n\
         [[report.point]]\nname = \"x\"\nmin_interval = \"2s\"\nmax_interval = \"1s\"\nheartbeat = true\n",
        simulated_device("pump-1", "1s")
    );
    // The 1-based line of the first line of the file containing `text`.
    let line_of = |text: &str| -> usize {
        devices
            .lines()
            .position(|l| l.contains(text))
            .unwrap_or_else(|| panic!("{text:?} not in the config"))
            + 1
    };
    let config = ConfigDir::new("gw-rbe-bad", 1, "5", &devices);
    let issues = match ferrogate::config::load(config.path(), &ferrogate::kinds::all()) {
        Ok(_) => panic!("accepted"),
        Err(issues) => issues,
    };
    let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    let find = |needle: &str| -> usize {
        let issue = issues
            .iter()
            .find(|i| i.message.contains(needle))
            .unwrap_or_else(|| panic!("no issue about {needle:?} in {text:#?}"));
        issue.pos.as_ref().expect("position").line
    };
    assert_eq!(
        find("but not `report_on_change = true`"),
        line_of("[[report]]")
    );
    assert_eq!(find("[[report]] for `pump-9` twice"), line_of("# again"));
    assert_eq!(
        find("`deadband_percent` must be zero or more"),
        line_of("= -2.0")
    );
    assert_eq!(
        find("unknown field `heartbeat`"),
        line_of("heartbeat = true")
    );
}
