//! The `[lwm2m.server]` configuration table and its validation: every
//! problem is reported with its file:line:col before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferrogate_sdk::config::{ConfigDuration, ConfigIssue, Section};
use serde::Deserialize;

use ferrogate_dtls::{DtlsListener, ListenerToml};

use crate::path::PathPattern;
use crate::registration::{Caps, ReRegistration};
use crate::registry::{ObjectRegistry, PointNaming};

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum NamingToml {
    #[default]
    Registry,
    Path,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerToml {
    /// Required: no default wildcard.
    bind: Option<String>,
    #[serde(default)]
    device_prefix: String,
    #[serde(default)]
    point_naming: NamingToml,
    #[serde(default)]
    auto_observe: Vec<String>,
    #[serde(default)]
    object_dir: Option<String>,
    #[serde(default = "default_awake")]
    queue_awake: ConfigDuration,
    #[serde(default)]
    re_registration: ReRegistrationToml,
    #[serde(default = "default_forget")]
    forget_after: ConfigDuration,
    #[serde(default = "default_composite_wait")]
    composite_wait: ConfigDuration,
    #[serde(default = "default_max_instances")]
    max_instances: usize,
    #[serde(default = "default_max_observations")]
    max_observations: usize,
    #[serde(default = "default_max_registrations")]
    max_registrations: usize,
    #[serde(default = "default_max_per_network")]
    max_registrations_per_network: usize,
    /// The DTLS listener (absent: none).
    #[serde(default)]
    dtls_bind: Option<String>,
    /// The PSK credentials file, relative to the file naming it.
    #[serde(default)]
    credentials: Option<String>,
    #[serde(default)]
    max_dtls_handshakes: Option<usize>,
    #[serde(default)]
    max_dtls_sessions: Option<usize>,
    #[serde(default)]
    dtls_idle_timeout: Option<ConfigDuration>,
}

fn default_max_registrations() -> usize {
    Caps::default().max_registrations
}

fn default_max_per_network() -> usize {
    Caps::default().max_per_prefix
}

fn default_max_instances() -> usize {
    crate::server::DEFAULT_MAX_INSTANCES
}

fn default_max_observations() -> usize {
    crate::server::DEFAULT_MAX_OBSERVATIONS
}

fn default_composite_wait() -> ConfigDuration {
    ConfigDuration(crate::server::DEFAULT_COMPOSITE_WAIT)
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ReRegistrationToml {
    #[default]
    Allow,
    AfterLifetime,
    Refuse,
}

fn default_forget() -> ConfigDuration {
    ConfigDuration(crate::registration::DEFAULT_FORGET_AFTER)
}

fn default_awake() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(93))
}

/// The validated settings of the LwM2M server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The plain (NoSec) listener; `None` when only DTLS is offered.
    pub bind: Option<SocketAddr>,
    pub dtls: Option<DtlsListener>,
    pub device_prefix: String,
    pub naming: PointNaming,
    pub auto_observe: Vec<PathPattern>,
    pub object_dir: Option<PathBuf>,
    pub queue_awake: Duration,
    pub re_registration: ReRegistration,
    pub forget_after: Duration,
    pub composite_wait: Duration,
    pub max_instances: usize,
    pub max_observations: usize,
    pub caps: Caps,
    pub registry: ObjectRegistry,
    /// Object ids loaded from `object_dir`, for `config check` notes.
    pub loaded_objects: Vec<u16>,
}

/// Read `[lwm2m.server]`; `Ok(None)` when the section is absent.
pub fn settings(section: &Section<'_>) -> Result<Option<Settings>, Vec<ConfigIssue>> {
    if section.is_empty() {
        return Ok(None);
    }
    let mut issues = section.unknown_keys(&["server", "bootstrap"]);
    let node = match section.single("server") {
        Ok(Some(node)) => node,
        // a bootstrap server alone (crate::bootstrap::config)
        Ok(None) if issues.is_empty() && matches!(section.single("bootstrap"), Ok(Some(_))) => {
            return Ok(None);
        }
        Ok(None) => {
            issues.push(ConfigIssue {
                pos: None,
                message: "`[lwm2m]` has no `[lwm2m.server]` table".into(),
                hint: Some("add `[lwm2m.server]` with at least `bind = \"127.0.0.1:5683\"` (or `[lwm2m.bootstrap]` for a bootstrap server)".into()),
            });
            return Err(issues);
        }
        Err(e) => {
            issues.push(e);
            return Err(issues);
        }
    };
    let parsed = match node.parse::<ServerToml>() {
        Ok(p) => p,
        Err(e) => {
            issues.push(e);
            return Err(issues);
        }
    };
    let origin = &parsed.origin;
    let raw = &parsed.value;
    let bind = raw
        .bind
        .as_deref()
        .and_then(|text| match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                issues.push(
                    origin
                        .issue("bind", format!("`{text}` is not a socket address"))
                        .with_hint(
                            "write an address and a port, e.g. \"0.0.0.0:5683\" or \"[::]:5683\"",
                        ),
                );
                None
            }
        });
    if raw.bind.is_none() && raw.dtls_bind.is_none() {
        issues.push(ferrogate_sdk::config::bind_required(
            origin,
            "[lwm2m.server]",
            5683,
        ));
    }
    let dtls = DtlsListener::from_config(
        &ListenerToml {
            dtls_bind: raw.dtls_bind.as_deref(),
            credentials: raw.credentials.as_deref(),
            max_dtls_handshakes: raw.max_dtls_handshakes,
            max_dtls_sessions: raw.max_dtls_sessions,
            dtls_idle_timeout: raw.dtls_idle_timeout,
        },
        origin,
        &mut issues,
    );
    let mut auto_observe = Vec::new();
    for (i, text) in raw.auto_observe.iter().enumerate() {
        match PathPattern::parse(text) {
            Ok(p) => auto_observe.push(p),
            Err(e) => issues.push(
                origin
                    .issue(&format!("auto_observe.{i}"), e.to_string())
                    .with_hint("paths look like \"/3303/*/5700\" or \"/3/0/9\""),
            ),
        }
    }
    for (key, value) in [
        ("max_instances", raw.max_instances),
        ("max_observations", raw.max_observations),
        ("max_registrations", raw.max_registrations),
        (
            "max_registrations_per_network",
            raw.max_registrations_per_network,
        ),
    ] {
        if value == 0 {
            issues.push(origin.issue(key, format!("{key} must be at least 1")));
        }
    }
    if raw.composite_wait.0.is_zero() {
        issues.push(origin.issue("composite_wait", "composite_wait must be longer than 0s"));
    }
    if raw.queue_awake.0.is_zero() {
        issues.push(origin.issue("queue_awake", "queue_awake must be longer than 0s"));
    }
    let mut registry = ObjectRegistry::builtin();
    let mut loaded_objects = Vec::new();
    let object_dir = raw.object_dir.as_ref().map(PathBuf::from);
    if let Some(dir) = &object_dir {
        match registry.load_dir(dir) {
            Ok(ids) => loaded_objects = ids,
            Err(errors) => {
                for e in errors {
                    issues.push(origin.issue("object_dir", format!("object definition {e}")));
                }
            }
        }
    }
    match issues.is_empty() {
        true => Ok(Some(Settings {
            bind,
            dtls,
            device_prefix: raw.device_prefix.clone(),
            naming: match raw.point_naming {
                NamingToml::Registry => PointNaming::Registry,
                NamingToml::Path => PointNaming::Path,
            },
            auto_observe,
            object_dir,
            queue_awake: raw.queue_awake.0,
            re_registration: match raw.re_registration {
                ReRegistrationToml::Allow => ReRegistration::Allow,
                ReRegistrationToml::AfterLifetime => ReRegistration::AfterLifetime,
                ReRegistrationToml::Refuse => ReRegistration::Refuse,
            },
            forget_after: raw.forget_after.0,
            composite_wait: raw.composite_wait.0,
            max_instances: raw.max_instances,
            max_observations: raw.max_observations,
            caps: Caps {
                max_registrations: raw.max_registrations,
                max_per_prefix: raw.max_registrations_per_network,
            },
            registry,
            loaded_objects,
        })),
        false => Err(issues),
    }
}
