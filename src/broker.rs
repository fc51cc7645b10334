//! The embedded MQTT broker (rumqttd, MQTT 3.1.1) behind the default
//! `embedded-broker` feature: what `ferrogate demo` and `mqtt.url =
//! "embedded"` run, so a newcomer or a single-box install needs no other
//! broker. Fit for demos and single-box installs; it keeps nothing on disk
//! and has no shutdown API, so it lives as long as the process.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot listen on {addr}: {source}; is another MQTT broker running there? pick another port with --port"
    )]
    PortBusy {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("embedded broker failed to start: {0}")]
    Start(String),
}

/// Start the broker on `addr` on its own threads and return once it is
/// accepting connections.
pub fn start(addr: SocketAddr) -> Result<(), BrokerError> {
    // rumqttd reports a busy port only in its own log: check first, so the
    // user gets a clear error instead of a gateway that never connects.
    drop(TcpListener::bind(addr).map_err(|source| BrokerError::PortBusy { addr, source })?);

    let server = ServerSettings {
        name: "ferrogate-embedded".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 1000,
            max_segment_size: 16 << 20,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;

    // Wait until the listener accepts, so the MQTT session's first connect succeeds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(BrokerError::Start(format!(
                "not listening on {addr} after 5 s"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}
