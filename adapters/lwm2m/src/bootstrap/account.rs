//! What the bootstrap server gives a client: one device-management server
//! account (the Security and Server object instances, LwM2M 1.1 Appendix
//! E.1 and E.2), per endpoint name or a default for every other endpoint.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::path::Path;
use crate::value::ResourceValue;

/// How the client is to secure its connection to the server.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Security {
    /// Security Mode 3: plain UDP.
    NoSec,
    /// Security Mode 0: DTLS with a pre-shared key.
    Psk { identity: Vec<u8>, key: Vec<u8> },
}

/// Keys never appear in logs or `config check` output.
impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Security::NoSec => f.write_str("NoSec"),
            Security::Psk { identity, .. } => f
                .debug_struct("Psk")
                .field("identity", &String::from_utf8_lossy(identity))
                .field("key", &"<redacted>")
                .finish(),
        }
    }
}

impl Security {
    /// The Security Mode resource (/0/x/2).
    fn mode(&self) -> i64 {
        match self {
            Security::Psk { .. } => 0,
            Security::NoSec => 3,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Security::Psk { .. } => "psk",
            Security::NoSec => "nosec",
        }
    }
}

/// One device-management server account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    /// `coap://host:port` or `coaps://host:port`.
    pub server_uri: String,
    pub security: Security,
    pub short_server_id: u16,
    /// Registration lifetime, seconds.
    pub lifetime: u32,
    /// Binding mode, e.g. `U` or `UQ`.
    pub binding: String,
}

impl Account {
    /// The Security instance `instance`: Server URI (0), Bootstrap-Server
    /// false (1), Security Mode (2), identity (3), server public key (4,
    /// empty), secret key (5), Short Server ID (10).
    pub fn security_values(&self, instance: u16) -> Vec<(Path, ResourceValue)> {
        let (identity, key) = match &self.security {
            Security::Psk { identity, key } => (identity.clone(), key.clone()),
            Security::NoSec => (Vec::new(), Vec::new()),
        };
        at(
            0,
            instance,
            vec![
                (0, ResourceValue::String(self.server_uri.clone())),
                (1, ResourceValue::Boolean(false)),
                (2, ResourceValue::Integer(self.security.mode())),
                (3, ResourceValue::Opaque(identity)),
                (4, ResourceValue::Opaque(Vec::new())),
                (5, ResourceValue::Opaque(key)),
                (10, ResourceValue::Integer(i64::from(self.short_server_id))),
            ],
        )
    }

    /// The Server instance 0: Short Server ID (0), Lifetime (1),
    /// Notification Storing false (6), Binding (7).
    pub fn server_values(&self) -> Vec<(Path, ResourceValue)> {
        at(
            1,
            0,
            vec![
                (0, ResourceValue::Integer(i64::from(self.short_server_id))),
                (1, ResourceValue::Integer(i64::from(self.lifetime))),
                (6, ResourceValue::Boolean(false)),
                (7, ResourceValue::String(self.binding.clone())),
            ],
        )
    }
}

fn at(
    object: u16,
    instance: u16,
    resources: Vec<(u16, ResourceValue)>,
) -> Vec<(Path, ResourceValue)> {
    resources
        .into_iter()
        .filter_map(|(id, v)| Some((Path::new(&[object, instance, id])?, v)))
        .collect()
}

/// Accounts by endpoint name, and the one for every other endpoint (none:
/// unknown endpoints are refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Accounts {
    pub by_endpoint: BTreeMap<String, Arc<Account>>,
    pub default: Option<Arc<Account>>,
}

impl Accounts {
    pub fn for_endpoint(&self, endpoint: &str) -> Option<Arc<Account>> {
        self.by_endpoint
            .get(endpoint)
            .or(self.default.as_ref())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(security: Security) -> Account {
        Account {
            server_uri: "coap://127.0.0.1:5683".into(),
            security,
            short_server_id: 7,
            lifetime: 300,
            binding: "U".into(),
        }
    }

    fn value(values: &[(Path, ResourceValue)], path: &[u16]) -> ResourceValue {
        values
            .iter()
            .find(|(p, _)| p.ids() == path)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {path:?} in {values:?}"))
    }

    #[test]
    fn security_instance_carries_uri_mode_and_psk() {
        let a = account(Security::Psk {
            identity: b"id1".to_vec(),
            key: vec![0xab, 0xcd],
        });
        let v = a.security_values(1);
        assert_eq!(
            value(&v, &[0, 1, 0]),
            ResourceValue::String("coap://127.0.0.1:5683".into())
        );
        assert_eq!(value(&v, &[0, 1, 1]), ResourceValue::Boolean(false));
        assert_eq!(
            value(&v, &[0, 1, 2]),
            ResourceValue::Integer(0),
            "PSK is Security Mode 0"
        );
        assert_eq!(
            value(&v, &[0, 1, 3]),
            ResourceValue::Opaque(b"id1".to_vec())
        );
        assert_eq!(
            value(&v, &[0, 1, 5]),
            ResourceValue::Opaque(vec![0xab, 0xcd])
        );
        assert_eq!(value(&v, &[0, 1, 10]), ResourceValue::Integer(7));
        let nosec = account(Security::NoSec).security_values(2);
        assert_eq!(
            value(&nosec, &[0, 2, 2]),
            ResourceValue::Integer(3),
            "NoSec is mode 3"
        );
    }

    #[test]
    fn server_instance_carries_lifetime_and_binding() {
        let v = account(Security::NoSec).server_values();
        let ids: Vec<&[u16]> = v.iter().map(|(p, _)| p.ids()).collect();
        assert_eq!(ids, [&[1, 0, 0][..], &[1, 0, 1], &[1, 0, 6], &[1, 0, 7]]);
        assert_eq!(value(&v, &[1, 0, 1]), ResourceValue::Integer(300));
    }

    #[test]
    fn keys_are_never_printed() {
        let a = account(Security::Psk {
            identity: b"meter".to_vec(),
            key: b"secret-key".to_vec(),
        });
        let shown = format!("{a:?}");
        assert!(
            shown.contains("meter") && !shown.contains("secret"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_endpoints_get_the_default_or_nothing() {
        let mut accounts = Accounts::default();
        accounts
            .by_endpoint
            .insert("a".into(), Arc::new(account(Security::NoSec)));
        assert!(accounts.for_endpoint("a").is_some());
        assert!(accounts.for_endpoint("b").is_none());
        accounts.default = Some(Arc::new(account(Security::NoSec)));
        assert!(accounts.for_endpoint("b").is_some());
    }
}
