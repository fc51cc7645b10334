//! Commands routed down to devices, and the single result each one gets.
//!
//! The runtime validates a command (device known, point known, writable,
//! within range, deadline not passed) before an adapter sees it. The adapter
//! executes it and answers through [`CommandRequest::respond`]; answering is
//! consuming, so a command cannot be answered twice. A request dropped without
//! an answer is reported by the runtime as an error, never as success.

use std::collections::BTreeMap;
use std::fmt;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::model::Value;

/// What to do on the device.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// A fresh read from the device (not a cached value) of these points;
    /// empty means every point.
    Read { points: Vec<String> },
    /// Write these values. Ok only when the device confirmed every one.
    Write { values: BTreeMap<String, Value> },
    /// A protocol operation the runtime passes through: LwM2M `execute`,
    /// `observe`, `discover`, `write-attr`, `create`, `delete`, serial `send`.
    Protocol {
        op: String,
        path: Option<String>,
        value: Option<serde_json::Value>,
        args: serde_json::Value,
    },
}

impl Operation {
    /// The operation's name as it appears in the `op` field of a request.
    pub fn name(&self) -> &str {
        match self {
            Operation::Read { .. } => "read",
            Operation::Write { .. } => "write",
            Operation::Protocol { op, .. } => op,
        }
    }
}

/// A validated command for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    pub device: String,
    pub op: Operation,
    /// After this instant the answer is `timeout` whatever the device does.
    pub deadline: Instant,
}

/// The stable error codes of the command contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    UnknownDevice,
    UnknownPoint,
    NotWritable,
    InvalidValue,
    OutOfRange,
    Timeout,
    DeviceOffline,
    DeviceException,
    Expired,
    BadRequest,
    Busy,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::UnknownDevice,
        ErrorCode::UnknownPoint,
        ErrorCode::NotWritable,
        ErrorCode::InvalidValue,
        ErrorCode::OutOfRange,
        ErrorCode::Timeout,
        ErrorCode::DeviceOffline,
        ErrorCode::DeviceException,
        ErrorCode::Expired,
        ErrorCode::BadRequest,
        ErrorCode::Busy,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownDevice => "unknown_device",
            ErrorCode::UnknownPoint => "unknown_point",
            ErrorCode::NotWritable => "not_writable",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::Timeout => "timeout",
            ErrorCode::DeviceOffline => "device_offline",
            ErrorCode::DeviceException => "device_exception",
            ErrorCode::Expired => "expired",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Busy => "busy",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed command: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
}

impl CommandError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CommandError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for CommandError {}

/// The values a successful command returns (read values, confirmed writes,
/// an LwM2M discover's links), or its error.
pub type Outcome = Result<BTreeMap<String, Value>, CommandError>;

/// A command handed to an adapter, with the one-shot channel its answer
/// goes back on.
#[derive(Debug)]
pub struct CommandRequest {
    /// Boxed: a request waits in a channel per adapter, whose slots are
    /// allocated up front (32 at a time), one channel per Modbus line.
    pub command: Box<Command>,
    reply: oneshot::Sender<Outcome>,
    /// What the outcome goes through before it is sent (the device's
    /// value transforms).
    map: Option<OutcomeMap>,
}

/// A function applied to a command's outcome.
pub struct OutcomeMap(Box<dyn FnOnce(Outcome) -> Outcome + Send + Sync>);

impl fmt::Debug for OutcomeMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OutcomeMap")
    }
}

impl CommandRequest {
    /// A request and the receiver its outcome arrives on. The runtime keeps
    /// the receiver; tests use it to drive an adapter directly.
    pub fn new(command: Command) -> (Self, oneshot::Receiver<Outcome>) {
        let (reply, rx) = oneshot::channel();
        (
            CommandRequest {
                command: Box::new(command),
                reply,
                map: None,
            },
            rx,
        )
    }

    /// Answer the command. The runtime may have given up on it already
    /// (deadline passed); then the answer is discarded.
    pub fn respond(self, outcome: Outcome) {
        let outcome = match self.map {
            Some(OutcomeMap(map)) => map(outcome),
            None => outcome,
        };
        let _ = self.reply.send(outcome);
    }

    /// The same request, its outcome passed through `map` when answered
    /// (after any map already set).
    pub fn map_outcome(
        mut self,
        map: impl FnOnce(Outcome) -> Outcome + Send + Sync + 'static,
    ) -> Self {
        self.map = Some(OutcomeMap(match self.map.take() {
            Some(OutcomeMap(first)) => Box::new(move |o| map(first(o))),
            None => Box::new(map),
        }));
        self
    }

    /// Whether nobody is waiting for the answer any more.
    pub fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}
