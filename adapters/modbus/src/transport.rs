//! The I/O shell: moves request and response frames over a TCP socket or a
//! serial port. One transaction at a time, each bounded by a timeout.
//!
//! - Modbus TCP: MBAP framing; replies with another transaction id are
//!   discarded; after a timeout the connection is dropped, because a late
//!   reply would otherwise be taken for the answer to the next request.
//! - RTU (serial, or RTU over TCP through a device server): frames with
//!   CRC, delimited by their expected length; bytes left on the line (a late
//!   reply, noise) are drained before each request.
//! - A lost connection is re-established with exponential backoff.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_serial::SerialPortBuilderExt;

use crate::frame;
use crate::pdu::{self, Request, Response, ResponseError};

/// Where a line is and how its bytes are framed.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Tcp {
        address: String,
    },
    RtuOverTcp {
        address: String,
    },
    Serial(SerialSettings),
    AsciiOverTcp {
        address: String,
    },
    AsciiSerial(SerialSettings),
    /// The device connects to `listen` and is polled over that connection.
    DialIn(DialIn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialIn {
    pub listen: String,
    pub identity: Identity,
    /// `Rtu` or `Tcp`.
    pub framing: Framing,
}

/// How a dialled-in connection is known to be the configured device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The bytes the device sends first (its IMEI, a configured string).
    Registration(Vec<u8>),
    /// Its source address.
    Peer(std::net::IpAddr),
}

/// How requests and answers are framed on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// MBAP header with transaction ids.
    Tcp,
    /// Unit, PDU, CRC-16; delimited by length.
    Rtu,
    /// `:`, hex, LRC, CR LF; delimited by the LF.
    Ascii,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    pub path: String,
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    Even,
    Odd,
}

impl Endpoint {
    pub fn framing(&self) -> Framing {
        match self {
            Endpoint::Tcp { .. } => Framing::Tcp,
            Endpoint::RtuOverTcp { .. } | Endpoint::Serial(_) => Framing::Rtu,
            Endpoint::AsciiOverTcp { .. } | Endpoint::AsciiSerial(_) => Framing::Ascii,
            Endpoint::DialIn(d) => d.framing,
        }
    }

    /// The serial line's settings, for `rtu` and `ascii`.
    pub fn serial(&self) -> Option<&SerialSettings> {
        match self {
            Endpoint::Serial(s) | Endpoint::AsciiSerial(s) => Some(s),
            _ => None,
        }
    }

    /// Whether answers carry no transaction id (RTU and ASCII framing): a
    /// late answer is told apart by its unit only.
    fn is_line(&self) -> bool {
        self.framing() != Framing::Tcp
    }
}

/// Why a transaction has no valid answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    #[error("no response from unit {unit} within {after:?}")]
    Timeout { unit: u8, after: Duration },
    #[error("{0}")]
    Exception(pdu::Exception),
    /// The device answered with something that is not a valid answer.
    #[error("invalid response: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(String),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// Reconnection timing.
#[derive(Debug, Clone, Copy)]
pub struct Reconnect {
    pub connect_timeout: Duration,
    pub min: Duration,
    pub max: Duration,
}

pub struct Transport {
    endpoint: Endpoint,
    reconnect: Reconnect,
    stream: Option<Pin<Box<dyn Stream>>>,
    /// `dial-in`: bound at the first connection, kept across reconnects.
    listener: Option<TcpListener>,
    next_attempt: Option<Instant>,
    backoff: Duration,
    transaction: u16,
    /// The request's PDU, then its frame, and the answer: reused by every
    /// transaction.
    pdu: Vec<u8>,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Transport {
    pub fn new(endpoint: Endpoint, reconnect: Reconnect) -> Self {
        Transport {
            endpoint,
            reconnect,
            stream: None,
            listener: None,
            next_attempt: None,
            backoff: Duration::ZERO,
            transaction: 0,
            pdu: Vec::with_capacity(260),
            out: Vec::with_capacity(260),
            buf: Vec::with_capacity(260),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    async fn open(&mut self) -> io::Result<Pin<Box<dyn Stream>>> {
        match &self.endpoint {
            Endpoint::DialIn(d) => {
                if self.listener.is_none() {
                    self.listener = Some(TcpListener::bind(&d.listen).await?);
                }
                let Some(listener) = &self.listener else {
                    return Err(io::Error::other("no listener"));
                };
                accept_device(listener, d, self.reconnect.connect_timeout).await
            }
            Endpoint::Tcp { address }
            | Endpoint::RtuOverTcp { address }
            | Endpoint::AsciiOverTcp { address } => {
                let stream = timeout(self.reconnect.connect_timeout, TcpStream::connect(address))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
                stream.set_nodelay(true)?;
                Ok(Box::pin(stream))
            }
            Endpoint::Serial(s) | Endpoint::AsciiSerial(s) => {
                let port = tokio_serial::new(&s.path, s.baud)
                    .data_bits(match s.data_bits {
                        7 => tokio_serial::DataBits::Seven,
                        _ => tokio_serial::DataBits::Eight,
                    })
                    .parity(match s.parity {
                        Parity::None => tokio_serial::Parity::None,
                        Parity::Even => tokio_serial::Parity::Even,
                        Parity::Odd => tokio_serial::Parity::Odd,
                    })
                    .stop_bits(if s.stop_bits == 2 {
                        tokio_serial::StopBits::Two
                    } else {
                        tokio_serial::StopBits::One
                    })
                    .open_native_async()
                    .map_err(|e| io::Error::other(e.to_string()))?;
                Ok(Box::pin(port))
            }
        }
    }

    fn describe(&self) -> &str {
        match &self.endpoint {
            Endpoint::Tcp { address }
            | Endpoint::RtuOverTcp { address }
            | Endpoint::AsciiOverTcp { address } => address,
            Endpoint::Serial(s) | Endpoint::AsciiSerial(s) => &s.path,
            Endpoint::DialIn(d) => &d.listen,
        }
    }

    fn disconnect(&mut self, now: Instant) {
        self.stream = None;
        self.backoff = if self.backoff.is_zero() {
            self.reconnect.min
        } else {
            (self.backoff * 2).min(self.reconnect.max)
        };
        self.next_attempt = Some(now + self.backoff);
    }

    /// Connect if not connected and the backoff allows it.
    async fn ensure_connected(&mut self) -> Result<(), TransactionError> {
        if self.stream.is_some() {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(at) = self.next_attempt
            && at > now
        {
            return Err(TransactionError::Io(format!(
                "not connected to {}; next attempt in {:?}",
                self.describe(),
                at - now
            )));
        }
        // Boxed: connecting is rare, and the transaction future that
        // contains this one should not carry its size on every poll.
        match Box::pin(self.open()).await {
            Ok(stream) => {
                tracing::info!(endpoint = self.describe(), "modbus connection established");
                self.stream = Some(stream);
                self.backoff = Duration::ZERO;
                self.next_attempt = None;
                Ok(())
            }
            Err(e) => {
                self.disconnect(Instant::now());
                let message = format!("cannot connect to {}: {e}", self.describe());
                tracing::debug!(endpoint = self.describe(), error = %e, "modbus connect failed");
                Err(TransactionError::Io(message))
            }
        }
    }

    /// Send `request` to `unit` and wait at most `limit` for its answer.
    pub async fn transact(
        &mut self,
        unit: u8,
        request: &Request,
        limit: Duration,
    ) -> Result<Response, TransactionError> {
        self.ensure_connected().await?;
        let started = Instant::now();
        let result = match timeout(limit, self.exchange(unit, request)).await {
            Ok(result) => result,
            Err(_) => Err(TransactionError::Timeout { unit, after: limit }),
        };
        match &result {
            Err(TransactionError::Io(e)) => {
                tracing::warn!(endpoint = self.describe(), error = %e, "modbus connection lost");
                self.disconnect(Instant::now());
            }
            // A late answer on TCP would be read as the next one's.
            Err(TransactionError::Timeout { .. }) if !self.endpoint.is_line() => {
                self.stream = None;
                self.next_attempt = None;
            }
            _ => {}
        }
        tracing::trace!(unit, elapsed = ?started.elapsed(), ok = result.is_ok(), "modbus transaction");
        result
    }

    async fn exchange(
        &mut self,
        unit: u8,
        request: &Request,
    ) -> Result<Response, TransactionError> {
        let framing = self.endpoint.framing();
        self.transaction = self.transaction.wrapping_add(1);
        let transaction = self.transaction;
        self.pdu.clear();
        request.emit(&mut self.pdu);
        self.out.clear();
        match framing {
            Framing::Tcp => frame::emit_tcp(transaction, unit, &self.pdu, &mut self.out),
            Framing::Rtu => frame::emit_rtu(unit, &self.pdu, &mut self.out),
            Framing::Ascii => frame::emit_ascii(unit, &self.pdu, &mut self.out),
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(TransactionError::Io("not connected".into()));
        };
        let io_err = |e: io::Error| TransactionError::Io(e.to_string());
        if framing != Framing::Tcp {
            drain(stream, &mut self.buf).await.map_err(io_err)?;
        }
        stream.write_all(&self.out).await.map_err(io_err)?;
        stream.flush().await.map_err(io_err)?;
        let answer = match framing {
            Framing::Tcp => read_tcp(stream, &mut self.buf, transaction, unit).await?,
            Framing::Rtu => {
                let heartbeat = match &self.endpoint {
                    Endpoint::DialIn(DialIn {
                        identity: Identity::Registration(r),
                        ..
                    }) => Some(r.as_slice()),
                    _ => None,
                };
                read_rtu(stream, &mut self.buf, unit, heartbeat).await?
            }
            Framing::Ascii => read_ascii(stream, &mut self.buf, &mut self.pdu, unit).await?,
        };
        pdu::parse_response(request, answer).map_err(|e| match e {
            ResponseError::Exception(x) => TransactionError::Exception(x),
            ResponseError::Malformed(m) => TransactionError::Malformed(m),
        })
    }
}

/// Discard whatever is already waiting on the line (`scratch` holds it
/// meanwhile: a buffer inside this future would make every transaction's
/// future that much larger).
async fn drain(stream: &mut Pin<Box<dyn Stream>>, scratch: &mut Vec<u8>) -> io::Result<()> {
    scratch.resize(256, 0);
    loop {
        // Read only what is there already: the `ready` branch wins otherwise.
        tokio::select! {
            biased;
            read = stream.read(scratch) => match read {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
                Ok(n) => tracing::debug!(bytes = n, "drained stale bytes from the line"),
                Err(e) => return Err(e),
            },
            () = std::future::ready(()) => return Ok(()),
        }
    }
}

async fn read_tcp<'b>(
    stream: &mut Pin<Box<dyn Stream>>,
    buf: &'b mut Vec<u8>,
    transaction: u16,
    unit: u8,
) -> Result<&'b [u8], TransactionError> {
    // Read whatever has arrived rather than header and body separately:
    // one read call per answer in the common case.
    buf.clear();
    loop {
        while buf.len() < frame::MBAP_LEN {
            read_more(stream, buf).await?;
        }
        let mut header = [0u8; frame::MBAP_LEN];
        header.copy_from_slice(&buf[..frame::MBAP_LEN]);
        let mbap = frame::parse_mbap(&header).map_err(|e| {
            // The stream is out of step; only a new connection fixes it.
            TransactionError::Io(format!("bad MBAP header: {e}"))
        })?;
        let total = frame::MBAP_LEN + mbap.pdu_len;
        while buf.len() < total {
            read_more(stream, buf).await?;
        }
        if mbap.transaction != transaction {
            tracing::debug!(
                got = mbap.transaction,
                expected = transaction,
                "discarding a stale reply"
            );
            buf.drain(..total);
            continue;
        }
        if mbap.unit != unit {
            return Err(TransactionError::Malformed(format!(
                "reply from unit {} to a request for unit {unit}",
                mbap.unit
            )));
        }
        return Ok(&buf[frame::MBAP_LEN..total]);
    }
}

/// Append what the stream has (at least one byte) to `buf`.
async fn read_more(
    stream: &mut Pin<Box<dyn Stream>>,
    buf: &mut Vec<u8>,
) -> Result<(), TransactionError> {
    let start = buf.len();
    buf.resize(start + 512, 0);
    let n = stream.read(&mut buf[start..]).await;
    buf.truncate(start + *n.as_ref().unwrap_or(&0));
    match n {
        Ok(0) => Err(TransactionError::Io("connection closed by the peer".into())),
        Ok(_) => Ok(()),
        Err(e) => Err(TransactionError::Io(e.to_string())),
    }
}

/// The PDU of the next RTU frame from `unit`. `heartbeat`: bytes a
/// dial-in modem repeats between frames (its registration), dropped.
async fn read_rtu<'b>(
    stream: &mut Pin<Box<dyn Stream>>,
    buf: &'b mut Vec<u8>,
    unit: u8,
    heartbeat: Option<&[u8]>,
) -> Result<&'b [u8], TransactionError> {
    buf.clear();
    loop {
        if let Some(beat) = heartbeat.filter(|b| !b.is_empty()) {
            if buf.starts_with(beat) {
                buf.drain(..beat.len());
                continue;
            }
            if !buf.is_empty() && beat.starts_with(buf) {
                // Perhaps a heartbeat still arriving.
                read_more(stream, buf).await?;
                continue;
            }
        }
        let len = match frame::rtu_frame_len(buf) {
            Ok(Some(len)) if buf.len() >= len => len,
            Ok(_) => {
                read_more(stream, buf).await?;
                continue;
            }
            Err(e) => return Err(TransactionError::Malformed(e)),
        };
        let (from, _) = frame::parse_rtu(&buf[..len]).map_err(TransactionError::Malformed)?;
        if from != unit {
            // A late answer of another unit, arrived after the drain: skip it
            // and keep waiting for ours.
            tracing::debug!(from, expected = unit, "discarding a stale reply");
            buf.drain(..len);
            continue;
        }
        let (_, pdu) = frame::parse_rtu(&buf[..len]).map_err(TransactionError::Malformed)?;
        return Ok(pdu);
    }
}

/// The PDU of the next ASCII frame from `unit`; `pdu` holds the decoded
/// frame (the request's PDU is no longer needed once it was sent).
async fn read_ascii<'b>(
    stream: &mut Pin<Box<dyn Stream>>,
    buf: &mut Vec<u8>,
    pdu: &'b mut Vec<u8>,
    unit: u8,
) -> Result<&'b [u8], TransactionError> {
    buf.clear();
    loop {
        let Some(end) = frame::ascii_frame_end(buf) else {
            // An ASCII frame is at most 513 characters (spec 2.5.2.1).
            if buf.len() > 1024 {
                return Err(TransactionError::Malformed(
                    "no end of frame within 1024 characters".into(),
                ));
            }
            read_more(stream, buf).await?;
            continue;
        };
        let from = frame::parse_ascii(&buf[..end], pdu).map_err(TransactionError::Malformed)?;
        buf.drain(..end);
        if from != unit {
            tracing::debug!(from, expected = unit, "discarding a stale reply");
            continue;
        }
        return Ok(pdu);
    }
}

/// Wait up to `wait` for the configured device to dial in: a connection
/// from another address, or whose first bytes are not the registration,
/// is closed and the next one awaited.
async fn accept_device(
    listener: &TcpListener,
    d: &DialIn,
    wait: Duration,
) -> io::Result<Pin<Box<dyn Stream>>> {
    let deadline = Instant::now() + wait;
    let silent = || io::Error::new(io::ErrorKind::TimedOut, "the device has not dialled in");
    loop {
        let (mut stream, from) = timeout_at(deadline, listener.accept())
            .await
            .map_err(|_| silent())??;
        let known = match &d.identity {
            Identity::Peer(ip) => from.ip() == *ip,
            Identity::Registration(expected) => {
                let mut got = vec![0u8; expected.len()];
                matches!(
                    timeout_at(deadline, stream.read_exact(&mut got)).await,
                    Ok(Ok(_)) if got == *expected
                )
            }
        };
        if known {
            stream.set_nodelay(true)?;
            tracing::info!(listen = %d.listen, %from, "modbus device dialled in");
            return Ok(Box::pin(stream));
        }
        tracing::warn!(listen = %d.listen, %from, "a connection that is not the configured device was closed");
    }
}
