//! ferrogate-dtls: DTLS 1.2 for the CoAP and LwM2M listeners.
//!
//! - [`credentials`]: the PSK credentials store (a TOML file of endpoint →
//!   identity + key) behind the [`CredentialStore`] lookup trait.
//! - [`listener`]: the `dtls_*` configuration keys of a listener.
//! - [`sessions`]: the per-peer [`SessionTable`], a sans-IO state machine
//!   over [dimpl](https://crates.io/crates/dimpl) fed with datagrams and
//!   instants; it hands out datagrams and decrypted CoAP messages with the
//!   credential the peer proved.
//!
//! Cipher suite: `TLS_PSK_WITH_AES_128_CCM_8` (the LwM2M 1.1 and RFC 7925
//! mandatory PSK suite, and the only one tinydtls offers).

pub mod credentials;
pub mod listener;
pub mod sessions;

pub use credentials::{CredentialStore, Credentials, PskCredential, PskKey};
pub use listener::{DtlsListener, ListenerToml};
pub use sessions::{Datagram, SendError, SessionEvent, SessionLimits, SessionTable};
