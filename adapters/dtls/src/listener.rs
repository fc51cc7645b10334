//! The configuration of a DTLS listener, shared by the CoAP ingest server
//! and the LwM2M server: the keys each of their tables takes
//! (`dtls_bind`, `credentials`, `max_dtls_handshakes`, `max_dtls_sessions`,
//! `dtls_idle_timeout`) and their validation, every problem at its
//! file:line:col.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ferrogate_sdk::config::{ConfigDuration, ConfigIssue, Origin};

use crate::credentials::Credentials;
use crate::sessions::SessionLimits;

/// The DTLS keys as written (each table deserializes them itself, so
/// their positions are kept).
#[derive(Debug, Clone, Default)]
pub struct ListenerToml<'a> {
    pub dtls_bind: Option<&'a str>,
    pub credentials: Option<&'a str>,
    pub max_dtls_handshakes: Option<usize>,
    pub max_dtls_sessions: Option<usize>,
    pub dtls_idle_timeout: Option<ConfigDuration>,
}

/// A validated DTLS listener.
#[derive(Debug, Clone)]
pub struct DtlsListener {
    pub bind: SocketAddr,
    pub credentials_path: PathBuf,
    /// Keys redacted in `Debug`, which still changes with every key (the
    /// adapter's fingerprint: a reload with changed keys restarts it).
    pub credentials: Arc<Credentials>,
    pub limits: SessionLimits,
    /// About the credentials file, for `config check` notes.
    pub warnings: Vec<String>,
}

impl DtlsListener {
    /// Validate the keys of `table` (e.g. `[lwm2m.server]`); `None` when
    /// `dtls_bind` is not written. `credentials` is relative to the file
    /// that names it.
    pub fn from_config(
        raw: &ListenerToml<'_>,
        origin: &Origin,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<DtlsListener> {
        let bind = raw
            .dtls_bind
            .and_then(|text| match text.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    issues.push(
                        origin
                            .issue("dtls_bind", format!("`{text}` is not a socket address"))
                            .with_hint("write an address and a port, e.g. \"0.0.0.0:5684\""),
                    );
                    None
                }
            });
        let credentials = match (raw.credentials, raw.dtls_bind) {
            (Some(file), Some(_)) => {
                let at = origin.field("credentials");
                let path = at
                    .file
                    .parent()
                    .map_or_else(|| PathBuf::from(file), |dir| dir.join(file));
                match Credentials::load(&path, at) {
                    Ok(loaded) => Some((path, loaded)),
                    Err(e) => {
                        issues.extend(e);
                        None
                    }
                }
            }
            (None, Some(_)) => {
                issues.push(
                    origin
                        .issue("dtls_bind", "a DTLS listener needs `credentials`")
                        .with_hint(
                            "credentials = \"psk.toml\": a file of [[psk]] endpoint, identity, key_hex",
                        ),
                );
                None
            }
            (Some(_), None) => {
                issues.push(
                    origin
                        .issue(
                            "credentials",
                            "`credentials` without `dtls_bind`: no listener would use them",
                        )
                        .with_hint("add dtls_bind = \"0.0.0.0:5684\""),
                );
                None
            }
            (None, None) => None,
        };
        let defaults = SessionLimits::default();
        let limits = SessionLimits {
            max_handshakes: raw.max_dtls_handshakes.unwrap_or(defaults.max_handshakes),
            max_sessions: raw.max_dtls_sessions.unwrap_or(defaults.max_sessions),
            idle_timeout: raw.dtls_idle_timeout.map_or(defaults.idle_timeout, |d| d.0),
        };
        for (key, value) in [
            ("max_dtls_handshakes", limits.max_handshakes),
            ("max_dtls_sessions", limits.max_sessions),
        ] {
            if value == 0 {
                issues.push(origin.issue(key, format!("{key} must be at least 1")));
            }
        }
        if limits.idle_timeout.is_zero() {
            issues.push(origin.issue(
                "dtls_idle_timeout",
                "dtls_idle_timeout must be longer than 0s",
            ));
        }
        let (bind, (path, loaded)) = bind.zip(credentials)?;
        Some(DtlsListener {
            bind,
            credentials_path: path,
            credentials: Arc::new(loaded.credentials),
            limits,
            warnings: loaded.warnings,
        })
    }
}
