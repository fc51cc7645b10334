//! CLI commands that talk to the running daemon over its control socket:
//! status, devices, points, read, write, tail, reload, log-level, lwm2m.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value as Json, json};

use super::output::{Style, Table, ago, duration, utc};
use super::{EXIT_FAILED, EXIT_NO_DAEMON};
use crate::control::client::{Client, ClientError, Refused};

/// What a daemon command prints and how.
pub struct Remote<'a> {
    pub socket: &'a Path,
    pub json: bool,
}

impl Remote<'_> {
    fn connect(&self) -> Result<Client, ExitCode> {
        Client::connect(self.socket).map_err(|e| self.unreachable(e))
    }

    fn unreachable(&self, e: ClientError) -> ExitCode {
        if self.json {
            println!(
                "{}",
                json!({"ok": false, "error": {"code": "no_daemon", "message": e.to_string()}})
            );
        } else {
            eprintln!("error: {e}");
        }
        ExitCode::from(EXIT_NO_DAEMON)
    }

    fn refused(&self, r: Refused) -> ExitCode {
        if self.json {
            println!(
                "{}",
                json!({"ok": false, "error": {"code": r.code, "message": r.message}})
            );
        } else {
            eprintln!("error: {}: {}", r.code, r.message);
        }
        ExitCode::from(EXIT_FAILED)
    }

    /// Call `cmd` and print its result with `human`, or as JSON.
    fn call(&self, cmd: &str, args: Json, human: impl FnOnce(&Json, Style)) -> ExitCode {
        let mut client = match self.connect() {
            Ok(c) => c,
            Err(code) => return code,
        };
        match client.call(cmd, args) {
            Err(e) => self.unreachable(e),
            Ok(Err(refused)) => self.refused(refused),
            Ok(Ok(result)) => {
                self.print(&result, human);
                ExitCode::SUCCESS
            }
        }
    }

    pub fn status(&self) -> ExitCode {
        self.call("status", json!({}), |s, style| {
            let mqtt = &s["mqtt"];
            let connected = if mqtt["connected"] == true {
                "connected"
            } else {
                "disconnected"
            };
            println!(
                "gateway   {} (ferrogate {}), up {}",
                s["gateway"].as_str().unwrap_or("?"),
                s["version"].as_str().unwrap_or("?"),
                duration(s["uptime_s"].as_u64().unwrap_or(0))
            );
            println!(
                "mqtt      {} {} since {}{}",
                style.state(connected),
                mqtt["broker"].as_str().unwrap_or("?"),
                ago(mqtt["since_ms"].as_u64()),
                mqtt["last_error"]
                    .as_str()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
            let ob = &s["outbox"];
            let age = ob["oldest_age_ms"]
                .as_u64()
                .map(|ms| duration(ms / 1000))
                .unwrap_or("-".into());
            println!(
                "outbox    {} queued, {} bytes, oldest {}, {} dropped",
                ob["depth"], ob["bytes"], age, ob["dropped"]
            );
            println!(
                "devices   {} of {} online",
                s["devices"]["online"], s["devices"]["total"]
            );
            let sp = &s["sparkplug"];
            if sp.is_object() {
                println!(
                    "sparkplug {} {} bdSeq {} seq {}, primary host {}, {} births, {} rebirth requests, {} deaths, {} held",
                    style.state(if sp["connected"] == true { "connected" } else { "disconnected" }),
                    sp["broker"].as_str().unwrap_or("?"),
                    sp["bd_seq"],
                    sp["seq"],
                    sp["primary_host"].as_str().unwrap_or("?"),
                    sp["node_births"],
                    sp["rebirth_requests"],
                    sp["device_deaths"],
                    sp["held"],
                );
            }
            let mut t = Table::new(&["ADAPTER", "STATE", "DEVICES", "RESTARTS", "LAST ERROR"]);
            for a in s["adapters"].as_array().into_iter().flatten() {
                let state = if a["stalled"] == true {
                    "stalled"
                } else {
                    a["state"].as_str().unwrap_or("?")
                };
                t.row(vec![
                    a["name"].as_str().unwrap_or("?").to_string(),
                    style.state(state),
                    format!("{}/{}", a["devices_online"], a["devices_total"]),
                    a["restarts"].to_string(),
                    a["last_error"].as_str().unwrap_or("-").to_string(),
                ]);
            }
            print!("\n{}", t.render());
            let errors = s["recent_errors"].as_array().cloned().unwrap_or_default();
            if !errors.is_empty() {
                println!("\nrecent errors:");
                for e in errors {
                    println!(
                        "  {}: {}",
                        e["source"].as_str().unwrap_or("?"),
                        style.bad(e["message"].as_str().unwrap_or(""))
                    );
                }
            }
        })
    }

    pub fn devices(&self, adapter: Option<&str>) -> ExitCode {
        self.call("devices", json!({"adapter": adapter}), |list, style| {
            device_table(list, style, ("ADAPTER", "adapter", "?"));
        })
    }

    /// A fresh read. When a read of several points fails (one point is
    /// enough to fail it), each point is read on its own so the tech sees
    /// every good value and, beside them, each failed point with its
    /// error; exit 1 if any failed.
    pub fn read(&self, device: &str, points: &[String]) -> ExitCode {
        let mut client = match self.connect() {
            Ok(c) => c,
            Err(code) => return code,
        };
        let all = match client.call("read", json!({"device": device, "points": points})) {
            Err(e) => return self.unreachable(e),
            Ok(Ok(values)) => {
                self.print(&json!({"values": values, "errors": {}}), print_read);
                return ExitCode::SUCCESS;
            }
            Ok(Err(refused)) => refused,
        };
        let names: Vec<String> = if points.is_empty() {
            match client.call("points", json!({"device": device})) {
                Err(e) => return self.unreachable(e),
                Ok(Ok(map)) => map["points"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["name"].as_str().map(str::to_string))
                    .collect(),
                Ok(Err(_)) => Vec::new(),
            }
        } else {
            points.to_vec()
        };
        if names.len() < 2 {
            return self.refused(all);
        }
        let mut values = serde_json::Map::new();
        let mut errors = serde_json::Map::new();
        for name in names {
            match client.call("read", json!({"device": device, "points": [name]})) {
                Err(e) => return self.unreachable(e),
                Ok(Ok(v)) => values.extend(v.as_object().cloned().unwrap_or_default()),
                Ok(Err(r)) => {
                    errors.insert(name, json!({"code": r.code, "message": r.message}));
                }
            }
        }
        let failed = !errors.is_empty();
        self.print(&json!({"values": values, "errors": errors}), print_read);
        if failed {
            ExitCode::from(EXIT_FAILED)
        } else {
            ExitCode::SUCCESS
        }
    }

    /// A device's point map, from the meta its adapter announced.
    pub fn points(&self, device: &str) -> ExitCode {
        self.call("points", json!({"device": device}), |r, _| {
            let mut t = Table::new(&[
                "POINT",
                "ADDRESS",
                "TYPE",
                "UNIT",
                "WRITABLE",
                "RANGE",
                "DESCRIPTION",
            ]);
            for p in r["points"].as_array().into_iter().flatten() {
                let text = |v: &Json| v.as_str().unwrap_or("-").to_string();
                let range = match (p["min"].as_f64(), p["max"].as_f64()) {
                    (None, None) => "-".to_string(),
                    (min, max) => format!(
                        "{}..{}",
                        min.map(|m| m.to_string()).unwrap_or_default(),
                        max.map(|m| m.to_string()).unwrap_or_default()
                    ),
                };
                t.row(vec![
                    text(&p["name"]),
                    text(&p["address"]),
                    text(&p["type"]),
                    text(&p["unit"]),
                    if p["writable"] == true { "yes" } else { "no" }.into(),
                    range,
                    text(&p["description"]),
                ]);
            }
            print!("{}", t.render());
        })
    }

    /// Print a result as JSON (the `ok` envelope) or for people.
    fn print(&self, result: &Json, human: impl FnOnce(&Json, Style)) {
        if self.json {
            println!("{}", json!({"ok": true, "result": result}));
        } else {
            human(result, Style::detect());
        }
    }

    pub fn write(&self, device: &str, point: &str, value: &str) -> ExitCode {
        // `21.5`, `true`, `"text"` are JSON; anything else is a string.
        let value: Json =
            serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.to_string()));
        self.call(
            "write",
            json!({"device": device, "point": point, "value": value}),
            |values, style| {
                println!("{}", style.good("confirmed by the device:"));
                print_values(values, style);
            },
        )
    }

    /// Any command-topic request, e.g. an LwM2M read of a path.
    pub fn command(&self, device: &str, request: Json) -> ExitCode {
        self.call(
            "command",
            json!({"device": device, "request": request}),
            print_values,
        )
    }

    pub fn reload(&self) -> ExitCode {
        self.call("reload", json!({}), |r, _| {
            println!(
                "reloaded: {} adapters (added: {}, removed: {}), {} devices (devices removed: {})",
                r["adapters"].as_array().map(Vec::len).unwrap_or(0),
                list(&r["added"]),
                list(&r["removed"]),
                r["devices"],
                list(&r["devices_removed"])
            );
            if r["restart_needed_for"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                println!(
                    "note: changes to {} take effect after a restart",
                    list(&r["restart_needed_for"])
                );
            }
        })
    }

    pub fn log_level(&self, level: &str) -> ExitCode {
        self.call("log-level", json!({"level": level}), |r, _| {
            println!("log level now {}", r["level"].as_str().unwrap_or("?"));
        })
    }

    /// The LwM2M server's clients with their security mode (`psk`,
    /// `nosec`).
    pub fn lwm2m_clients(&self) -> ExitCode {
        self.call("devices", json!({"adapter": "lwm2m"}), |list, style| {
            device_table(list, style, ("SECURITY", "security", "-"));
        })
    }

    /// Stream live readings, status changes and events until interrupted.
    pub fn tail(&self, device: Option<&str>, point: Option<&str>) -> ExitCode {
        let mut client = match self.connect() {
            Ok(c) => c,
            Err(code) => return code,
        };
        match client.stream("tail", json!({"device": device, "point": point})) {
            Err(e) => return self.unreachable(e),
            Ok(Err(r)) => return self.refused(r),
            Ok(Ok(())) => {}
        }
        let style = Style::detect();
        loop {
            match client.next_event() {
                Ok(Some(event)) => {
                    if self.json {
                        println!("{}", json!({"ok": true, "result": event}));
                    } else {
                        println!("{}", tail_line(&event, point, style));
                    }
                }
                Ok(None) => return ExitCode::SUCCESS,
                Err(e) => return self.unreachable(e),
            }
        }
    }
}

fn list(v: &Json) -> String {
    let items: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn print_values(values: &Json, _style: Style) {
    let mut t = Table::new(&["POINT", "VALUE"]);
    for (k, v) in values.as_object().into_iter().flatten() {
        t.row(vec![k.clone(), v.to_string()]);
    }
    print!("{}", t.render());
}

/// Good values, then the points that failed with their error.
fn print_read(result: &Json, style: Style) {
    let mut t = Table::new(&["POINT", "VALUE"]);
    for (k, v) in result["values"].as_object().into_iter().flatten() {
        t.row(vec![k.clone(), v.to_string()]);
    }
    for (k, e) in result["errors"].as_object().into_iter().flatten() {
        let error = format!(
            "{}: {}",
            e["code"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        );
        t.row(vec![k.clone(), style.bad(&format!("failed ({error})"))]);
    }
    print!("{}", t.render());
}

/// One live message: its time (the device's `ts`, else now) and what it says.
fn tail_line(event: &Json, point: Option<&str>, style: Style) -> String {
    let ts = event["payload"]["ts"]
        .as_u64()
        .unwrap_or_else(|| ferrogate_sdk::Timestamp::now().0);
    format!(
        "{}  {}",
        style.dim(&utc(ts)),
        tail_text(event, point, style)
    )
}

fn tail_text(event: &Json, point: Option<&str>, style: Style) -> String {
    let p = &event["payload"];
    let kind = event["kind"].as_str().unwrap_or("?");
    let device = event["device"].as_str().unwrap_or("?");
    match kind {
        "telemetry" => {
            let mut parts: Vec<String> = p["values"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| point.is_none_or(|pt| pt == k.as_str()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            parts.extend(
                p["errors"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| point.is_none_or(|pt| pt == k.as_str()))
                    .map(|(k, v)| style.bad(&format!("{k}!{}", v.as_str().unwrap_or("?")))),
            );
            format!("{device}  {}", parts.join(" "))
        }
        "status" => format!(
            "{device}  {} {}",
            style.state(p["state"].as_str().unwrap_or("?")),
            p["reason"]
                .as_str()
                .map(|r| style.dim(r))
                .unwrap_or_default()
        ),
        "lagged" => style.warn(&format!(
            "… {} messages missed (terminal too slow)",
            event["missed"]
        )),
        other => format!("{device}  {other} {}", style.dim(&p.to_string())),
    }
}

/// The devices reply as a table: name, one column of the caller's choice
/// (heading, reply key, what to show when it is absent), state, last seen
/// and the last error (an offline device's reason first).
fn device_table(list: &Json, style: Style, second: (&str, &str, &str)) {
    let (heading, key, absent) = second;
    let mut t = Table::new(&["DEVICE", heading, "STATE", "LAST SEEN", "LAST ERROR"]);
    for d in list.as_array().into_iter().flatten() {
        t.row(vec![
            d["name"].as_str().unwrap_or("?").to_string(),
            d[key].as_str().unwrap_or(absent).to_string(),
            style.state(d["state"].as_str().unwrap_or("unknown")),
            ago(d["last_seen"].as_u64()),
            match d["state"].as_str() {
                Some("offline") => d["reason"].as_str().or(d["last_error"].as_str()),
                _ => d["last_error"].as_str(),
            }
            .unwrap_or("-")
            .to_string(),
        ]);
    }
    print!("{}", t.render());
}
