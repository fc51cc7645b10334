//! Client side of the control socket: one connection, JSON-line requests,
//! and errors a field tech can act on (daemon not running, socket
//! permission).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};

use super::PROTOCOL_VERSION;

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "ferrogate is not running (nothing listens on {0}); start it with `systemctl start ferrogate` or `ferrogate run --config DIR`, or point --socket at its control socket"
    )]
    NotRunning(PathBuf),
    #[error(
        "permission denied on {path}: the control socket belongs to group `{group}`; join it with `sudo usermod -aG {group} $USER` and log in again (or use sudo)"
    )]
    PermissionDenied { path: PathBuf, group: String },
    #[error("control socket {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the daemon sent something this CLI does not understand: {0}")]
    Protocol(String),
}

/// An error answer from the daemon: its stable code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: String,
    pub message: String,
}

/// A connection to the daemon.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning(path.to_path_buf())
            }
            std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                path: path.to_path_buf(),
                group: socket_group(path),
            },
            _ => ClientError::Io(path.to_path_buf(), e),
        })?;
        let writer = stream
            .try_clone()
            .map_err(|e| ClientError::Io(path.to_path_buf(), e))?;
        Ok(Client {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Send `cmd` with `args` and return its result, or the daemon's refusal.
    pub fn call(&mut self, cmd: &str, args: Json) -> Result<Result<Json, Refused>, ClientError> {
        self.send(cmd, args)?;
        let reply = self.next_line()?;
        Ok(decode(reply))
    }

    /// Start a stream (`tail`); read events with [`Client::next_event`].
    pub fn stream(&mut self, cmd: &str, args: Json) -> Result<Result<(), Refused>, ClientError> {
        self.send(cmd, args)?;
        let reply = self.next_line()?;
        Ok(decode(reply).map(|_| ()))
    }

    /// The next streamed event; `None` when the daemon closed the stream.
    pub fn next_event(&mut self) -> Result<Option<Json>, ClientError> {
        match self.next_line() {
            Ok(line) => Ok(Some(line["event"].clone())),
            Err(ClientError::Protocol(m)) if m == "connection closed" => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn send(&mut self, cmd: &str, args: Json) -> Result<(), ClientError> {
        let mut request = match args {
            Json::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        request.insert("v".into(), PROTOCOL_VERSION.into());
        request.insert("cmd".into(), cmd.into());
        let mut line = serde_json::to_vec(&Json::Object(request)).unwrap_or_default();
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .map_err(|e| ClientError::Io(self.path.clone(), e))
    }

    fn next_line(&mut self) -> Result<Json, ClientError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| ClientError::Io(self.path.clone(), e))?;
        if n == 0 {
            return Err(ClientError::Protocol("connection closed".into()));
        }
        serde_json::from_str(&line).map_err(|e| ClientError::Protocol(format!("{e}: {line}")))
    }
}

fn decode(reply: Json) -> Result<Json, Refused> {
    if reply["ok"] == true {
        Ok(reply.get("result").cloned().unwrap_or(json!(null)))
    } else {
        Err(Refused {
            code: reply["error"]["code"]
                .as_str()
                .unwrap_or("unknown")
                .to_string(),
            message: reply["error"]["message"].as_str().unwrap_or("").to_string(),
        })
    }
}

/// The name of the group owning the socket, for the permission hint.
fn socket_group(path: &Path) -> String {
    let Ok(meta) = std::fs::metadata(path) else {
        return "ferrogate".into();
    };
    let gid = meta.gid();
    std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|groups| {
            groups.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let _ = f.next();
                (f.next()?.parse::<u32>().ok()? == gid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| gid.to_string())
}
