//! The `[lwm2m.bootstrap]` table: the bootstrap server's listener and the
//! accounts it hands out (`[lwm2m.bootstrap.default]` for every endpoint,
//! `[[lwm2m.bootstrap.endpoint]]` per endpoint name), every problem with
//! its file:line:col.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrogate_sdk::config::{ConfigDuration, ConfigIssue, Node, Origin};
use serde::Deserialize;

use super::account::{Account, Accounts, Security};
use super::{DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_TIMEOUT};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapToml {
    bind: Option<String>,
    #[serde(default = "default_session_timeout")]
    session_timeout: ConfigDuration,
    #[serde(default = "default_max_sessions")]
    max_sessions: usize,
    // read as nodes below, for their positions
    #[serde(default, rename = "default")]
    _default: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "endpoint")]
    _endpoint: Option<serde::de::IgnoredAny>,
}

fn default_session_timeout() -> ConfigDuration {
    ConfigDuration(DEFAULT_SESSION_TIMEOUT)
}

fn default_max_sessions() -> usize {
    DEFAULT_MAX_SESSIONS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountToml {
    /// Only in `[[lwm2m.bootstrap.endpoint]]`.
    name: Option<String>,
    server_uri: String,
    #[serde(default)]
    security: SecurityToml,
    psk_identity: Option<String>,
    /// Hexadecimal.
    psk_key: Option<String>,
    #[serde(default = "default_short_server_id")]
    short_server_id: u16,
    #[serde(default = "default_lifetime")]
    lifetime: ConfigDuration,
    #[serde(default = "default_binding")]
    binding: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SecurityToml {
    #[default]
    Nosec,
    Psk,
}

fn default_short_server_id() -> u16 {
    1
}

fn default_lifetime() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(300))
}

fn default_binding() -> String {
    "U".into()
}

/// The validated bootstrap server settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BootstrapSettings {
    pub bind: SocketAddr,
    pub session_timeout: Duration,
    pub max_sessions: usize,
    pub accounts: Accounts,
}

/// Reads `[lwm2m.bootstrap]` (its node).
pub fn settings(node: &Node<'_>) -> Result<BootstrapSettings, Vec<ConfigIssue>> {
    let parsed = node.parse::<BootstrapToml>().map_err(|e| vec![e])?;
    let origin = &parsed.origin;
    let mut issues = Vec::new();
    let bind = match parsed.bind.as_deref().map(str::parse::<SocketAddr>) {
        Some(Ok(b)) => Some(b),
        None => {
            issues.push(ferrogate_sdk::config::bind_required(
                origin,
                "[lwm2m.bootstrap]",
                5783,
            ));
            None
        }
        Some(Err(_)) => {
            issues.push(
                origin
                    .issue("bind", "not a socket address")
                    .with_hint("write an address and a port, e.g. \"0.0.0.0:5783\""),
            );
            None
        }
    };
    if parsed.max_sessions == 0 {
        issues.push(origin.issue("max_sessions", "max_sessions must be at least 1"));
    }
    if parsed.session_timeout.0.is_zero() {
        issues.push(origin.issue("session_timeout", "session_timeout must be longer than 0s"));
    }
    let mut accounts = Accounts::default();
    if let Some(default) = node.get("default") {
        if let Some((None, account)) = account(&default, false, &mut issues) {
            accounts.default = Some(Arc::new(account));
        }
    }
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    for entry in node
        .get("endpoint")
        .map(|n| n.elements())
        .unwrap_or_default()
    {
        let Some((Some((name, origin)), account)) = account(&entry, true, &mut issues) else {
            continue;
        };
        if seen.insert(name.clone(), ()).is_some() {
            issues.push(origin.issue("name", format!("endpoint `{name}` is listed twice")));
            continue;
        }
        accounts.by_endpoint.insert(name, Arc::new(account));
    }
    if node.get("default").is_none() && node.get("endpoint").is_none() {
        issues.push(
            node.issue("the bootstrap server has no account to hand out")
                .with_hint(
                    "add `[lwm2m.bootstrap.default]` (for every endpoint) or \
             `[[lwm2m.bootstrap.endpoint]]` entries with `name` and `server_uri`",
                ),
        );
    }
    match (bind, issues.is_empty()) {
        (Some(bind), true) => Ok(BootstrapSettings {
            bind,
            session_timeout: parsed.session_timeout.0,
            max_sessions: parsed.max_sessions,
            accounts,
        }),
        _ => Err(issues),
    }
}

type Named = Option<(String, Origin)>;

/// One account table; `named` tables must have a valid `name`.
fn account(
    node: &Node<'_>,
    named: bool,
    issues: &mut Vec<ConfigIssue>,
) -> Option<(Named, Account)> {
    let parsed = match node.parse::<AccountToml>() {
        Ok(p) => p,
        Err(e) => {
            issues.push(e);
            return None;
        }
    };
    let origin = parsed.origin.clone();
    let raw = parsed.value;
    let before = issues.len();
    let name = match (named, raw.name) {
        (true, Some(name)) => {
            if let Err(e) = ferrogate_sdk::name::check_device_name(&name) {
                issues.push(origin.issue("name", format!("endpoint name refused: {e}")));
            }
            Some((name, origin.clone()))
        }
        (true, None) => {
            issues.push(origin.issue("name", "an endpoint entry needs `name`"));
            None
        }
        (false, Some(_)) => {
            issues.push(
                origin
                    .issue("name", "the default account has no `name`")
                    .with_hint("list named endpoints as `[[lwm2m.bootstrap.endpoint]]`"),
            );
            None
        }
        (false, None) => None,
    };
    let secure = raw.server_uri.starts_with("coaps://");
    if !secure && !raw.server_uri.starts_with("coap://") {
        issues.push(
            origin
                .issue(
                    "server_uri",
                    "the server URI must start with coap:// or coaps://",
                )
                .with_hint("e.g. \"coap://192.0.2.10:5683\""),
        );
    }
    let security = match raw.security {
        SecurityToml::Nosec => {
            if secure {
                issues.push(
                    origin
                        .issue("server_uri", "a coaps:// server needs `security = \"psk\"`")
                        .with_hint("or give a coap:// URI"),
                );
            }
            Security::NoSec
        }
        SecurityToml::Psk => {
            if !secure {
                issues.push(origin.issue("server_uri", "PSK security needs a coaps:// URI"));
            }
            let identity = raw.psk_identity.unwrap_or_default().into_bytes();
            if identity.is_empty() {
                issues.push(origin.issue("psk_identity", "PSK security needs `psk_identity`"));
            }
            let key = raw
                .psk_key
                .as_deref()
                .map(|k| ferrogate_sdk::hex::decode(k.trim()));
            let key = match key {
                Some(Some(k)) if !k.is_empty() => k,
                _ => {
                    issues.push(
                        origin
                            .issue("psk_key", "PSK security needs `psk_key` as hexadecimal")
                            .with_hint("e.g. psk_key = \"0123456789abcdef\""),
                    );
                    Vec::new()
                }
            };
            Security::Psk { identity, key }
        }
    };
    let lifetime = u32::try_from(raw.lifetime.0.as_secs()).unwrap_or(0);
    if lifetime == 0 {
        issues.push(origin.issue("lifetime", "lifetime must be 1 s to 2^32-1 s"));
    }
    if raw.binding.is_empty() || !raw.binding.chars().all(|c| "UTSNQ".contains(c)) {
        issues.push(
            origin
                .issue(
                    "binding",
                    format!("`{}` is not an LwM2M binding", raw.binding),
                )
                .with_hint("U (UDP), UQ (UDP, queue mode), T, S or N"),
        );
    }
    (issues.len() == before).then_some((
        name,
        Account {
            server_uri: raw.server_uri,
            security,
            short_server_id: raw.short_server_id,
            lifetime,
            binding: raw.binding,
        },
    ))
}
