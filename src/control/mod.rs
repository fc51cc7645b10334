//! The local control socket: a Unix socket speaking versioned JSON lines,
//! used by the `ferrogate` CLI against the running daemon.
//!
//! Protocol version 1. Each connection carries requests, one JSON object per
//! line: `{"v":1,"cmd":"status"}`. Each request gets one response line,
//! `{"v":1,"ok":true,"result":...}` or `{"v":1,"ok":false,"error":{"code",
//! "message"}}`. `tail` answers `{"v":1,"ok":true,"stream":true}` and then
//! one `{"v":1,"event":...}` line per live message until the client hangs
//! up. Commands (`read`, `write`, `command`) go through the same router as
//! MQTT requests.
//!
//! | cmd | arguments | result |
//! |---|---|---|
//! | `status` | | gateway, version, uptime, MQTT, outbox, adapters, devices, recent errors |
//! | `devices` | `adapter`? | `[{name, adapter, state, reason, last_seen, last_error}]` |
//! | `read` | `device`, `points`? | `{point: value}` (a fresh read) |
//! | `write` | `device`, `point`, `value` | `{point: value}` as the device confirmed |
//! | `command` | `device`, `request` (a cmd-topic request object) | the command's values |
//! | `tail` | `device`?, `point`? | a stream of `{kind, adapter, device, payload}` |
//! | `reload` | | `{adapters, devices}` or an error listing config problems |
//! | `log-level` | `level` | `{level}` |

pub mod client;
pub mod server;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u64 = 1;
