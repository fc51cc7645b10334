//! `ferrogate config check --connect`: the configuration tried once against
//! the real broker and devices, like Telegraf's `--test`. It connects to
//! the broker (with a client id of its own, so a running gateway is not
//! pushed off, and disconnects cleanly), runs the adapters until every
//! configured device has answered one poll or failed, and reports each. No
//! outbox, no control socket, no metrics, nothing published.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use ferrogate_sdk::{DeviceState, Uplink};
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::LoadedConfig;
use crate::gateway::Core;
use crate::north::config::BrokerAddr;
use crate::north::link::{Link, LinkEvent, LinkOptions};
use crate::supervisor::Backoff;

/// What one device said first.
enum Answer {
    Read { values: Json, errors: Json },
    Offline(String),
}

/// Run the check; 0 when the broker and every device answered.
pub fn check(loaded: LoadedConfig, timeout: Duration, as_json: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (broker, devices) = runtime.block_on(async {
        let broker = connect_broker(&loaded, timeout).await;
        let devices = poll_devices(loaded, timeout).await;
        (broker, devices)
    });
    let mut failed = broker.is_err();
    let mut rows = Vec::new();
    for (device, answer) in &devices {
        let row = match answer {
            Some(Answer::Read { values, errors }) => {
                failed |= errors.as_object().is_some_and(|e| !e.is_empty());
                json!({"device": device, "ok": errors.as_object().is_none_or(|e| e.is_empty()), "values": values, "errors": errors})
            }
            Some(Answer::Offline(reason)) => {
                failed = true;
                json!({"device": device, "ok": false, "error": reason})
            }
            None => {
                failed = true;
                json!({"device": device, "ok": false, "error": format!("no answer within {timeout:?}")})
            }
        };
        rows.push(row);
    }
    if as_json {
        let broker = match &broker {
            Ok(url) => json!({"url": url, "ok": true}),
            Err(e) => json!({"ok": false, "error": e}),
        };
        let result = json!({"broker": broker, "devices": rows});
        if failed {
            println!(
                "{}",
                json!({"ok": false, "error": {"code": "connect_failed", "message": "the broker or a device did not answer", "result": result}})
            );
        } else {
            println!("{}", json!({"ok": true, "result": result}));
        }
    } else {
        match &broker {
            Ok(url) => println!("broker  {url}: connected"),
            Err(e) => println!("broker  failed: {e}"),
        }
        for row in &rows {
            let device = row["device"].as_str().unwrap_or("?");
            if let Some(e) = row["error"].as_str() {
                println!("device  {device}: failed: {e}");
                continue;
            }
            let values: Vec<String> = row["values"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let errors: Vec<String> = row["errors"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("?")))
                .collect();
            let verdict = if errors.is_empty() {
                "ok"
            } else {
                "failed points"
            };
            println!("device  {device}: {verdict}: {}", values.join(" "));
            for e in errors {
                println!("          {e}");
            }
        }
    }
    if failed {
        ExitCode::from(super::EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

async fn connect_broker(loaded: &LoadedConfig, timeout: Duration) -> Result<String, String> {
    let mqtt = &loaded.gateway.mqtt;
    if mqtt.url == "embedded" {
        return Ok("embedded (started with the gateway)".into());
    }
    let addr = BrokerAddr::parse(&mqtt.url)?;
    let tls = if addr.tls {
        Some(
            crate::north::tls::client_config(&mqtt.tls.clone().unwrap_or_default())
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let password = crate::north::password(mqtt).map_err(|e| e.to_string())?;
    let credentials = mqtt.username.clone().map(|u| {
        (
            u,
            password.unwrap_or(crate::north::link::Secret(String::new())),
        )
    });
    let check_id = format!("ferrogate-check-{}", std::process::id());
    let mut link = Link::open(&LinkOptions {
        addr,
        version: mqtt.version,
        will_topic: format!("{check_id}/will"),
        client_id: check_id,
        keep_alive: mqtt.keep_alive.0,
        credentials,
        tls,
        max_packet_size: mqtt.max_packet_size,
        inflight: mqtt.inflight,
        will_payload: Vec::new(),
        session_expiry: Duration::ZERO,
    });
    let outcome = tokio::time::timeout(timeout, async {
        loop {
            match link.next().await {
                LinkEvent::Connected => return Ok(()),
                LinkEvent::Closed(reason) => return Err(reason),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
    if outcome.is_ok() {
        link.disconnect().await;
    }
    outcome
        .map(|()| mqtt.url.clone())
        .map_err(|e| format!("{}: {e}", mqtt.url))
}

/// Run the adapters until each declared device answered once (or went
/// offline), at most `timeout`; then stop them.
async fn poll_devices(loaded: LoadedConfig, timeout: Duration) -> BTreeMap<String, Option<Answer>> {
    let mut answers: BTreeMap<String, Option<Answer>> = loaded
        .adapters
        .iter()
        .flat_map(|a| a.devices.iter().map(|(d, _)| (d.clone(), None)))
        .collect();
    if answers.is_empty() {
        return answers;
    }
    let gw = &loaded.gateway;
    let backoff = Backoff {
        min: gw.supervisor.restart_backoff_min.0,
        max: gw.supervisor.restart_backoff_max.0,
    };
    let (tx, mut rx) = mpsc::channel(1024);
    let stop = CancellationToken::new();
    let core = Core::start(
        loaded.adapters,
        gw.commands.clone(),
        backoff,
        tx,
        stop.clone(),
    );
    let deadline = tokio::time::Instant::now() + timeout;
    while answers.values().any(Option::is_none) {
        let Ok(Some(envelope)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        let Some(slot) = answers.get_mut(envelope.uplink.device()) else {
            continue;
        };
        if slot.is_some() {
            continue;
        }
        match &envelope.uplink {
            Uplink::Telemetry(t) => {
                let mut values = serde_json::Map::new();
                let mut errors = serde_json::Map::new();
                for r in &t.readings {
                    match &r.value {
                        Ok(v) => values.insert(r.point.to_string(), v.to_json()),
                        Err(e) => errors.insert(r.point.to_string(), e.to_string().into()),
                    };
                }
                *slot = Some(Answer::Read {
                    values: values.into(),
                    errors: errors.into(),
                });
            }
            Uplink::Status(s) if s.state == DeviceState::Offline => {
                *slot = Some(Answer::Offline(
                    s.reason.clone().unwrap_or_else(|| "offline".into()),
                ));
            }
            _ => {}
        }
    }
    stop.cancel();
    drop(rx);
    let _ = tokio::time::timeout(Duration::from_secs(5), core.join()).await;
    answers
}
