//! The credentials store: which pre-shared key belongs to which endpoint.
//!
//! A credential binds one PSK identity and key to one endpoint (the LwM2M
//! endpoint name, or the CoAP ingest device name). The file is TOML:
//!
//! ```toml
//! [[psk]]
//! endpoint = "meter-7"
//! identity = "meter-7"                 # what the client sends
//! key_hex = "000102030405060708090a0b0c0d0e0f"
//! # or: key_base64 = "AAECAwQFBgcICQoLDA0ODw=="
//! ```
//!
//! Keys are never shown: [`PskKey`]'s `Debug` prints its length and a
//! process-keyed tag (so a changed key changes the adapter's fingerprint
//! and a reload restarts it, without the key or a plain hash of it
//! appearing anywhere). Lookups go through [`CredentialStore`], so a
//! store shared by a fleet of servers (Redis) can replace the file later.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use ferrogate_sdk::config::{ConfigIssue, Pos, SourceFile};
use serde::Deserialize;

/// The longest credentials file read (a fleet of 100k devices is ~10 MB).
const MAX_FILE: u64 = 64 * 1024 * 1024;
/// RFC 4279 §5.3 allows 2^16 - 1 bytes; no device sends more than this.
pub const MAX_IDENTITY: usize = 128;
/// RFC 4279 §5.3 allows 2^16 - 1 bytes; 64 is four times a typical key.
pub const MAX_KEY: usize = 64;

/// Looks up credentials. Called on every handshake and every request from
/// a peer, so it must answer from memory.
pub trait CredentialStore: Send + Sync + UnwindSafe + RefUnwindSafe + fmt::Debug {
    /// The credential a client presenting `identity` must prove.
    fn psk(&self, identity: &[u8]) -> Option<Arc<PskCredential>>;
    /// Whether `endpoint` has a credential: then it is accepted only over
    /// DTLS with that credential, never over a plain listener.
    fn is_protected(&self, endpoint: &str) -> bool;
}

/// A pre-shared key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PskKey(Vec<u8>);

impl PskKey {
    pub fn new(bytes: Vec<u8>) -> PskKey {
        PskKey(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // one random SipHash key per process: the tag tells two keys apart
        // within the process and says nothing about either
        static TAG_KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        let mut h = TAG_KEY.get_or_init(Default::default).build_hasher();
        h.write(&self.0);
        write!(
            f,
            "PskKey(<redacted {} bytes, tag {:04x}>)",
            self.0.len(),
            h.finish() & 0xffff
        )
    }
}

/// One endpoint's pre-shared key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PskCredential {
    /// The LwM2M endpoint name or CoAP device name the key belongs to.
    pub endpoint: Arc<str>,
    /// The PSK identity the client sends in its ClientKeyExchange.
    pub identity: Vec<u8>,
    pub key: PskKey,
}

impl PskCredential {
    /// The identity for logs: text when it is text, hex otherwise.
    pub fn identity_text(&self) -> String {
        match std::str::from_utf8(&self.identity) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_string(),
            _ => ferrogate_sdk::hex::encode(&self.identity),
        }
    }
}

/// The credentials read from one file.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_identity: HashMap<Vec<u8>, Arc<PskCredential>>,
    protected: HashSet<Arc<str>>,
    /// In file order, so `Debug` (the adapter fingerprint) is stable.
    order: Vec<Arc<PskCredential>>,
}

impl CredentialStore for Credentials {
    fn psk(&self, identity: &[u8]) -> Option<Arc<PskCredential>> {
        self.by_identity.get(identity).cloned()
    }

    fn is_protected(&self, endpoint: &str) -> bool {
        self.protected.contains(endpoint)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PskToml {
    endpoint: String,
    identity: String,
    #[serde(default)]
    key_hex: Option<String>,
    #[serde(default)]
    key_base64: Option<String>,
}

/// A credentials file that was read, with what is worth a warning.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub credentials: Credentials,
    /// Not errors: e.g. a file others can read.
    pub warnings: Vec<String>,
}

impl Credentials {
    pub fn new(entries: impl IntoIterator<Item = PskCredential>) -> Credentials {
        let mut c = Credentials::default();
        for e in entries {
            let e = Arc::new(e);
            c.protected.insert(e.endpoint.clone());
            c.by_identity.insert(e.identity.clone(), e.clone());
            c.order.push(e);
        }
        c
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Read and check a credentials file; every problem is reported with
    /// its file:line:col (`at` is where the file was named, for a file
    /// that cannot be read).
    pub fn load(path: &Path, at: Pos) -> Result<Loaded, Vec<ConfigIssue>> {
        let bytes = ferrogate_sdk::config::read_named_file(path, MAX_FILE).map_err(|e| {
            vec![
                ConfigIssue::at(
                    at.clone(),
                    format!("cannot read credentials file {}: {e}", path.display()),
                )
                .with_hint("the file lists [[psk]] entries: endpoint, identity, key_hex"),
            ]
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            vec![ConfigIssue::at(
                at.clone(),
                format!("credentials file {} is not UTF-8 text", path.display()),
            )]
        })?;
        let mut warnings = Vec::new();
        if let Some(mode) = loose_mode(path) {
            warnings.push(format!(
                "credentials file {} has mode {mode:o}: others than its owner can read the keys (chmod 600)",
                path.display()
            ));
        }
        let file = SourceFile::new(PathBuf::from(path), text);
        let credentials = parse(&file)?;
        Ok(Loaded {
            credentials,
            warnings,
        })
    }
}

fn parse(file: &SourceFile) -> Result<Credentials, Vec<ConfigIssue>> {
    let root = file.parse()?;
    let node = ferrogate_sdk::config::Node::new(file, &root);
    let mut issues: Vec<ConfigIssue> = node
        .keys()
        .into_iter()
        .filter(|(k, _)| *k != "psk")
        .map(|(k, pos)| {
            ConfigIssue::at(pos, format!("unknown key `{k}`"))
                .with_hint("the file holds [[psk]] entries")
        })
        .collect();
    let mut entries = Vec::new();
    let mut identities: HashMap<Vec<u8>, Pos> = HashMap::new();
    let mut endpoints: HashMap<String, Pos> = HashMap::new();
    for entry in node.get("psk").map(|n| n.elements()).unwrap_or_default() {
        let parsed = match entry.parse::<PskToml>() {
            Ok(p) => p,
            Err(e) => {
                issues.push(e);
                continue;
            }
        };
        let origin = &parsed.origin;
        let raw = &parsed.value;
        let mut ok = true;
        if raw.endpoint.is_empty() {
            issues.push(origin.issue("endpoint", "`endpoint` is empty"));
            ok = false;
        } else if let Some(first) = endpoints.get(&raw.endpoint) {
            issues.push(
                origin
                    .issue(
                        "endpoint",
                        format!("endpoint `{}` has a credential already", raw.endpoint),
                    )
                    .with_hint(format!(
                        "one credential per endpoint; the first is at {first}"
                    )),
            );
            ok = false;
        }
        let identity = raw.identity.as_bytes().to_vec();
        if identity.is_empty() || identity.len() > MAX_IDENTITY {
            issues.push(origin.issue(
                "identity",
                format!(
                    "`identity` must be 1 to {MAX_IDENTITY} bytes, not {}",
                    identity.len()
                ),
            ));
            ok = false;
        } else if let Some(first) = identities.get(&identity) {
            issues.push(
                origin
                    .issue(
                        "identity",
                        format!("identity `{}` is used twice", raw.identity),
                    )
                    .with_hint(format!(
                        "an identity names one endpoint; the first is at {first}"
                    )),
            );
            ok = false;
        }
        let key = match (&raw.key_hex, &raw.key_base64) {
            (Some(h), None) => unhex(h).map_err(|why| origin.issue("key_hex", why)),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| origin.issue("key_base64", format!("not base64: {e}"))),
            (Some(_), Some(_)) => {
                Err(origin.issue("key_base64", "give `key_hex` or `key_base64`, not both"))
            }
            (None, None) => Err(origin
                .issue("endpoint", "the entry has no key")
                .with_hint("add key_hex = \"…\" (hex) or key_base64 = \"…\"")),
        };
        let key = match key {
            Ok(k) if k.is_empty() || k.len() > MAX_KEY => {
                let field = if raw.key_hex.is_some() {
                    "key_hex"
                } else {
                    "key_base64"
                };
                issues.push(origin.issue(
                    field,
                    format!("a key is 1 to {MAX_KEY} bytes, this one {}", k.len()),
                ));
                None
            }
            Ok(k) => Some(k),
            Err(e) => {
                issues.push(e);
                None
            }
        };
        if !ok {
            continue;
        }
        endpoints.insert(raw.endpoint.clone(), origin.field("endpoint"));
        identities.insert(identity.clone(), origin.field("identity"));
        if let Some(key) = key {
            entries.push(PskCredential {
                endpoint: Arc::from(raw.endpoint.as_str()),
                identity,
                key: PskKey(key),
            });
        }
    }
    if issues.is_empty() {
        Ok(Credentials::new(entries))
    } else {
        Err(issues)
    }
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text.chars().filter(|c| !matches!(c, ' ' | ':')).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("an odd number of hex digits".into());
    }
    ferrogate_sdk::hex::decode(&digits).ok_or_else(|| "not hex".to_string())
}

/// Parse a key given as hex (the CLI's `--psk-key`).
pub fn parse_hex_key(text: &str) -> Result<PskKey, String> {
    let key = unhex(text)?;
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(format!(
            "a key is 1 to {MAX_KEY} bytes, this one {}",
            key.len()
        ));
    }
    Ok(PskKey(key))
}

#[cfg(unix)]
fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_mode(_: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Credentials, Vec<ConfigIssue>> {
        parse(&SourceFile::new("creds.toml", text.to_string()))
    }

    #[test]
    fn hex_and_base64_keys_bind_identity_to_endpoint() {
        let c = load(
            "[[psk]]\nendpoint = \"a\"\nidentity = \"id-a\"\nkey_hex = \"0011ff\"\n\
             [[psk]]\nendpoint = \"b\"\nidentity = \"id-b\"\nkey_base64 = \"AAEC\"\n",
        )
        .unwrap();
        let a = c.psk(b"id-a").unwrap();
        assert_eq!(&*a.endpoint, "a");
        assert_eq!(a.key.bytes(), [0x00, 0x11, 0xff]);
        assert_eq!(c.psk(b"id-b").unwrap().key.bytes(), [0, 1, 2]);
        assert!(c.is_protected("b"));
        assert!(!c.is_protected("c"));
        assert!(c.psk(b"a").is_none(), "looked up by identity, not endpoint");
    }

    #[test]
    fn mistakes_are_reported_with_their_line() {
        let issues = load(
            "[[psk]]\nendpoint = \"a\"\nidentity = \"x\"\nkey_hex = \"zz\"\n\
             [[psk]]\nendpoint = \"a\"\nidentity = \"y\"\nkey_hex = \"00\"\n\
             [[psk]]\nendpoint = \"c\"\nidentity = \"x\"\n\
             [[psk]]\nendpoint = \"d\"\nidentity = \"z\"\nkey = \"00\"\n",
        )
        .unwrap_err();
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert_eq!(issues.len(), 5, "{text:#?}");
        assert!(
            text[0].contains(":4:") && text[0].contains("hex"),
            "{text:#?}"
        );
        assert!(text[1].contains(":6:") && text[1].contains("has a credential already"));
        assert!(text[2].contains(":11:") && text[2].contains("used twice"));
        assert!(
            text[3].contains(":10:") && text[3].contains("no key"),
            "{text:#?}"
        );
        assert!(text[4].contains("unknown field `key`"), "{text:#?}");
    }

    #[test]
    fn a_key_is_never_shown() {
        let c =
            load("[[psk]]\nendpoint = \"a\"\nidentity = \"a\"\nkey_hex = \"c0ffee\"\n").unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("c0ffee") && !shown.contains("192, 255, 238"),
            "{shown}"
        );
        assert!(shown.contains("redacted 3 bytes"), "{shown}");
    }

    #[test]
    fn a_file_others_can_read_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ferrogate-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("psk.toml");
        std::fs::write(
            &path,
            "[[psk]]\nendpoint = \"a\"\nidentity = \"a\"\nkey_hex = \"00\"\n",
        )
        .unwrap();
        let at = SourceFile::new("gw.toml", String::new()).pos(0);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = Credentials::load(&path, at.clone()).unwrap();
        assert!(loaded.warnings[0].contains("644"), "{:?}", loaded.warnings);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            Credentials::load(&path, at.clone())
                .unwrap()
                .warnings
                .is_empty()
        );
        let missing = Credentials::load(&dir.join("nope.toml"), at).unwrap_err();
        assert!(
            missing[0]
                .to_string()
                .contains("cannot read credentials file")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
