//! systemd integration without libsystemd: `sd_notify` datagrams (READY,
//! WATCHDOG, STOPPING, STATUS) to `$NOTIFY_SOCKET`, and the watchdog period
//! from `$WATCHDOG_USEC`. Outside systemd every call is a no-op.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to systemd's notification socket, if there is one.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From the environment systemd gives a `Type=notify` service.
    pub fn from_env() -> io::Result<Self> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) => Self::to_path(&path.to_string_lossy()),
            None => Ok(Self::disabled()),
        }
    }

    /// A notifier that sends nothing (not under systemd).
    pub fn disabled() -> Self {
        Notifier { socket: None }
    }

    /// To an explicit socket path (`@name` for the abstract namespace).
    pub fn to_path(path: &str) -> io::Result<Self> {
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => SocketAddr::from_pathname(path)?,
        };
        Ok(Notifier {
            socket: Some((UnixDatagram::unbound()?, addr)),
        })
    }

    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    fn send(&self, state: &str) {
        if let Some((socket, addr)) = &self.socket {
            if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
                tracing::warn!(error = %e, "sd_notify failed");
            }
        }
    }

    /// Configuration loaded and the uplink running.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// The runtime loop is healthy.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    /// A one-line status shown by `systemctl status`.
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", text.replace('\n', " ")));
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises.
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("fg-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to_path(path.to_str().unwrap()).unwrap();
        n.ready();
        n.status("3 devices online");
        let mut buf = [0u8; 128];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=3 devices online");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
