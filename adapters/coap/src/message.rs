//! CoAP message content as the engine's users see it: [`Request`] and
//! [`Response`] (code, options, payload) without the message-layer fields
//! (type, message id, token) that the engine owns, plus the checked decoding
//! of a datagram into a [`Frame`] on top of coap-lite's codec.
//!
//! Block1/Block2/Size1/Size2 never appear in a delivered [`Request`] or
//! [`Response`]: the engine consumes them and reassembles the body.

use std::fmt;

use coap_lite::{MessageClass, MessageType, Packet};

/// Option numbers (RFC 7252 §5.10, RFC 7641 §2, RFC 7959 §2.1).
pub mod option {
    pub const IF_MATCH: u16 = 1;
    pub const URI_HOST: u16 = 3;
    pub const ETAG: u16 = 4;
    pub const IF_NONE_MATCH: u16 = 5;
    pub const OBSERVE: u16 = 6;
    pub const URI_PORT: u16 = 7;
    pub const LOCATION_PATH: u16 = 8;
    pub const URI_PATH: u16 = 11;
    pub const CONTENT_FORMAT: u16 = 12;
    pub const MAX_AGE: u16 = 14;
    pub const URI_QUERY: u16 = 15;
    pub const ACCEPT: u16 = 17;
    pub const LOCATION_QUERY: u16 = 20;
    pub const BLOCK2: u16 = 23;
    pub const BLOCK1: u16 = 27;
    pub const SIZE2: u16 = 28;
    pub const PROXY_URI: u16 = 35;
    pub const PROXY_SCHEME: u16 = 39;
    pub const SIZE1: u16 = 60;
    pub const NO_RESPONSE: u16 = 258;

    /// Options this engine understands; an unknown *critical* (odd) option
    /// in a request is answered 4.02 Bad Option (RFC 7252 §5.4.1).
    pub fn is_known(number: u16) -> bool {
        matches!(
            number,
            IF_MATCH
                | URI_HOST
                | ETAG
                | IF_NONE_MATCH
                | OBSERVE
                | URI_PORT
                | LOCATION_PATH
                | URI_PATH
                | CONTENT_FORMAT
                | MAX_AGE
                | URI_QUERY
                | ACCEPT
                | LOCATION_QUERY
                | BLOCK2
                | BLOCK1
                | SIZE2
                | PROXY_URI
                | PROXY_SCHEME
                | SIZE1
                | NO_RESPONSE
        )
    }

    /// RFC 7252 §5.4.1: odd option numbers are critical.
    pub fn is_critical(number: u16) -> bool {
        number & 1 == 1
    }
}

/// Content-Format numbers used by ferrogate (IANA CoAP Content-Formats).
pub mod content_format {
    pub const TEXT_PLAIN: u16 = 0;
    pub const LINK_FORMAT: u16 = 40;
    pub const OCTET_STREAM: u16 = 42;
    pub const JSON: u16 = 50;
    pub const CBOR: u16 = 60;
    pub const SENML_JSON: u16 = 110;
    pub const SENML_CBOR: u16 = 112;
    pub const LWM2M_TLV: u16 = 11542;
    pub const LWM2M_JSON: u16 = 11543;
}

/// A request or response code (RFC 7252 §12.1): class in the top 3 bits,
/// detail in the low 5, written `c.dd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u8);

impl Code {
    pub const EMPTY: Code = Code(0x00);
    pub const CREATED: Code = Code(0x41);
    pub const DELETED: Code = Code(0x42);
    pub const VALID: Code = Code(0x43);
    pub const CHANGED: Code = Code(0x44);
    pub const CONTENT: Code = Code(0x45);
    pub const CONTINUE: Code = Code(0x5f);
    pub const BAD_REQUEST: Code = Code(0x80);
    pub const UNAUTHORIZED: Code = Code(0x81);
    pub const BAD_OPTION: Code = Code(0x82);
    pub const FORBIDDEN: Code = Code(0x83);
    pub const NOT_FOUND: Code = Code(0x84);
    pub const METHOD_NOT_ALLOWED: Code = Code(0x85);
    pub const NOT_ACCEPTABLE: Code = Code(0x86);
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code(0x88);
    pub const PRECONDITION_FAILED: Code = Code(0x8c);
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code(0x8d);
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code(0x8f);
    pub const TOO_MANY_REQUESTS: Code = Code(0x9d);
    pub const INTERNAL_SERVER_ERROR: Code = Code(0xa0);
    pub const NOT_IMPLEMENTED: Code = Code(0xa1);
    pub const SERVICE_UNAVAILABLE: Code = Code(0xa3);
    pub const GATEWAY_TIMEOUT: Code = Code(0xa4);
    pub const PROXYING_NOT_SUPPORTED: Code = Code(0xa5);

    pub fn class(self) -> u8 {
        self.0 >> 5
    }

    pub fn detail(self) -> u8 {
        self.0 & 0x1f
    }

    pub fn is_request(self) -> bool {
        self.class() == 0 && self.0 != 0
    }

    pub fn is_response(self) -> bool {
        matches!(self.class(), 2 | 4 | 5)
    }

    /// 2.xx
    pub fn is_success(self) -> bool {
        self.class() == 2
    }

    /// The registered name of the code, if it has one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x41 => "Created",
            0x42 => "Deleted",
            0x43 => "Valid",
            0x44 => "Changed",
            0x45 => "Content",
            0x5f => "Continue",
            0x80 => "Bad Request",
            0x81 => "Unauthorized",
            0x82 => "Bad Option",
            0x83 => "Forbidden",
            0x84 => "Not Found",
            0x85 => "Method Not Allowed",
            0x86 => "Not Acceptable",
            0x88 => "Request Entity Incomplete",
            0x89 => "Conflict",
            0x8c => "Precondition Failed",
            0x8d => "Request Entity Too Large",
            0x8f => "Unsupported Content-Format",
            0x96 => "Unprocessable Entity",
            0x9d => "Too Many Requests",
            0xa0 => "Internal Server Error",
            0xa1 => "Not Implemented",
            0xa2 => "Bad Gateway",
            0xa3 => "Service Unavailable",
            0xa4 => "Gateway Timeout",
            0xa5 => "Proxying Not Supported",
            0xa8 => "Hop Limit Reached",
            _ => return None,
        })
    }
}

impl fmt::Display for Code {
    /// `4.04 Not Found`, or `4.30` for an unnamed code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())?;
        if let Some(name) = self.name() {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

/// Request methods (RFC 7252 §5.8, RFC 8132).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Fetch,
    Patch,
    IPatch,
}

impl Method {
    pub fn code(self) -> Code {
        Code(match self {
            Method::Get => 1,
            Method::Post => 2,
            Method::Put => 3,
            Method::Delete => 4,
            Method::Fetch => 5,
            Method::Patch => 6,
            Method::IPatch => 7,
        })
    }

    pub fn from_code(code: Code) -> Option<Method> {
        Some(match code.0 {
            1 => Method::Get,
            2 => Method::Post,
            3 => Method::Put,
            4 => Method::Delete,
            5 => Method::Fetch,
            6 => Method::Patch,
            7 => Method::IPatch,
            _ => return None,
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Fetch => "FETCH",
            Method::Patch => "PATCH",
            Method::IPatch => "iPATCH",
        })
    }
}

/// A request's content: method, target and body. The engine adds type,
/// message id, token, and Observe/Block options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Uri-Path segments, not percent-encoded.
    pub path: Vec<String>,
    /// Uri-Query entries (`ep=node1`, `lt=300`).
    pub query: Vec<String>,
    pub content_format: Option<u16>,
    pub accept: Option<u16>,
    /// The Observe option as received (0 register, 1 deregister). Set by
    /// the engine for [`crate::Endpoint::observe`]; ignored when sending.
    pub observe: Option<u32>,
    /// Every other option, by number, in the order received.
    pub options: Vec<(u16, Vec<u8>)>,
    pub payload: Vec<u8>,
    /// Send as CON (default) or NON (RFC 7252 §4.3).
    pub confirmable: bool,
}

impl Request {
    pub fn new(method: Method, path: &str) -> Self {
        Request {
            method,
            path: split_path(path),
            query: Vec::new(),
            content_format: None,
            accept: None,
            observe: None,
            options: Vec::new(),
            payload: Vec::new(),
            confirmable: true,
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new(Method::Get, path)
    }

    pub fn post(path: &str) -> Self {
        Self::new(Method::Post, path)
    }

    pub fn put(path: &str) -> Self {
        Self::new(Method::Put, path)
    }

    pub fn delete(path: &str) -> Self {
        Self::new(Method::Delete, path)
    }

    /// The body, with its Content-Format.
    pub fn with_payload(mut self, content_format: u16, payload: Vec<u8>) -> Self {
        self.content_format = Some(content_format);
        self.payload = payload;
        self
    }

    pub fn with_query(mut self, entry: impl Into<String>) -> Self {
        self.query.push(entry.into());
        self
    }

    pub fn with_accept(mut self, content_format: u16) -> Self {
        self.accept = Some(content_format);
        self
    }

    /// Send as a non-confirmable message.
    pub fn non_confirmable(mut self) -> Self {
        self.confirmable = false;
        self
    }

    /// The path as `/a/b` (`/` for none).
    pub fn path_string(&self) -> String {
        join_path(&self.path)
    }

    /// The value of query entry `key=value`, if present.
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query.iter().find_map(|q| {
            q.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .or_else(|| (q == key).then_some(""))
        })
    }
}

/// A response's content. The engine adds type, message id, token, and
/// Observe/Block options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: Code,
    pub content_format: Option<u16>,
    pub max_age: Option<u32>,
    /// The Observe sequence number of a notification, as received.
    pub observe: Option<u32>,
    pub location_path: Vec<String>,
    pub options: Vec<(u16, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl Response {
    pub fn new(code: Code) -> Self {
        Response {
            code,
            content_format: None,
            max_age: None,
            observe: None,
            location_path: Vec::new(),
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    pub fn with_payload(mut self, content_format: u16, payload: Vec<u8>) -> Self {
        self.content_format = Some(content_format);
        self.payload = payload;
        self
    }

    /// A diagnostic payload (RFC 7252 §5.5.2) for an error response.
    pub fn with_diagnostic(mut self, text: impl Into<String>) -> Self {
        self.content_format = None;
        self.payload = text.into().into_bytes();
        self
    }
}

pub(crate) fn split_path(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub(crate) fn join_path(path: &[String]) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        path.iter().fold(String::new(), |mut acc, s| {
            acc.push('/');
            acc.push_str(s);
            acc
        })
    }
}

/// Encode an unsigned integer option value with leading zeros removed
/// (RFC 7252 §3.2 `uint`).
pub fn encode_uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// Decode a `uint` option value of at most 4 bytes.
pub fn decode_uint(bytes: &[u8]) -> Option<u32> {
    if bytes.len() > 4 {
        return None;
    }
    Some(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// The message type (RFC 7252 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Con,
    Non,
    Ack,
    Rst,
}

impl Kind {
    fn from_lite(t: MessageType) -> Self {
        match t {
            MessageType::Confirmable => Kind::Con,
            MessageType::NonConfirmable => Kind::Non,
            MessageType::Acknowledgement => Kind::Ack,
            MessageType::Reset => Kind::Rst,
        }
    }

    fn to_lite(self) -> MessageType {
        match self {
            Kind::Con => MessageType::Confirmable,
            Kind::Non => MessageType::NonConfirmable,
            Kind::Ack => MessageType::Acknowledgement,
            Kind::Rst => MessageType::Reset,
        }
    }
}

/// Why a datagram is not a CoAP message. `header` is set when the fixed
/// header was readable, so a CON can still be answered with a RST.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed CoAP message: {reason}")]
pub struct FrameError {
    pub reason: &'static str,
    /// (type, message id) when the first four bytes were readable.
    pub header: Option<(Kind, u16)>,
}

/// One decoded datagram: the message-layer header, the token, and its
/// options and payload in order (RFC 7252 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub code: Code,
    pub mid: u16,
    pub token: Vec<u8>,
    pub options: Vec<(u16, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// Decode and validate one datagram. Total over arbitrary bytes.
    pub fn parse(datagram: &[u8]) -> Result<Frame, FrameError> {
        let Some(&[b0, b1, b2, b3]) = datagram.get(..4) else {
            return Err(FrameError {
                reason: "shorter than the 4-byte header",
                header: None,
            });
        };
        let version = b0 >> 6;
        let kind = match (b0 >> 4) & 0x3 {
            0 => Kind::Con,
            1 => Kind::Non,
            2 => Kind::Ack,
            _ => Kind::Rst,
        };
        let mid = u16::from_be_bytes([b2, b3]);
        let header = Some((kind, mid));
        if version != 1 {
            // RFC 7252 §3: messages with unknown version numbers are
            // silently ignored.
            return Err(FrameError {
                reason: "unknown version",
                header: None,
            });
        }
        let tkl = b0 & 0x0f;
        if tkl > 8 {
            return Err(FrameError {
                reason: "token length 9-15 is reserved",
                header,
            });
        }
        let code = Code(b1);
        if matches!(code.class(), 1 | 3 | 6 | 7) {
            return Err(FrameError {
                reason: "reserved code class",
                header,
            });
        }
        if code == Code::EMPTY && datagram.len() != 4 {
            // RFC 7252 §4.1: an Empty message has nothing after the header.
            return Err(FrameError {
                reason: "empty message with token, options or payload",
                header,
            });
        }
        let packet = Packet::from_bytes(datagram).map_err(|e| FrameError {
            reason: match e {
                coap_lite::error::MessageError::InvalidTokenLength => "truncated token",
                coap_lite::error::MessageError::InvalidOptionDelta => "invalid option delta",
                coap_lite::error::MessageError::InvalidOptionLength => "invalid option length",
                _ => "invalid header",
            },
            header,
        })?;
        if packet.payload.is_empty() && datagram.last() == Some(&0xff) && datagram.len() > 4 {
            // A payload marker followed by nothing is a format error
            // (RFC 7252 §3). The last byte can also be an option value or a
            // token byte, so check where the options ended.
            if ends_with_empty_payload(datagram, usize::from(tkl)) {
                return Err(FrameError {
                    reason: "payload marker with an empty payload",
                    header,
                });
            }
        }
        let mut options = Vec::new();
        for (number, values) in packet.options() {
            for value in values {
                options.push((*number, value.clone()));
            }
        }
        Ok(Frame {
            kind: Kind::from_lite(packet.header.get_type()),
            code,
            mid,
            token: packet.get_token().to_vec(),
            options,
            payload: packet.payload,
        })
    }

    /// Encode. Options must be in any order; they are sorted by number
    /// (stable, so repeated options keep their order).
    pub fn emit(&self) -> Vec<u8> {
        let mut packet = Packet::new();
        packet.header.set_version(1);
        packet.header.set_type(self.kind.to_lite());
        packet.header.code = MessageClass::from(self.code.0);
        packet.header.message_id = self.mid;
        packet.set_token(self.token.clone());
        let mut options: Vec<&(u16, Vec<u8>)> = self.options.iter().collect();
        options.sort_by_key(|(n, _)| *n);
        for (number, value) in options {
            packet.add_option(coap_lite::CoapOption::from(*number), value.clone());
        }
        packet.payload = self.payload.clone();
        // Sizes are bounded by the engine (block size, max message size),
        // and the codec fails only on sizes; an empty vec is never sent.
        packet.to_bytes_unlimited().unwrap_or_default()
    }

    /// An empty ACK or RST for message `mid`.
    pub fn empty(kind: Kind, mid: u16) -> Frame {
        Frame {
            kind,
            code: Code::EMPTY,
            mid,
            token: Vec::new(),
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    pub fn option(&self, number: u16) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, v)| v.as_slice())
    }

    pub fn uint_option(&self, number: u16) -> Option<u32> {
        self.option(number).and_then(decode_uint)
    }

    pub(crate) fn strings(&self, number: u16) -> Vec<String> {
        self.options
            .iter()
            .filter(|(n, _)| *n == number)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The request content of this frame (block options stripped).
    pub fn to_request(&self) -> Option<Request> {
        let method = Method::from_code(self.code)?;
        let options = self
            .options
            .iter()
            .filter(|(n, _)| {
                !matches!(
                    *n,
                    option::URI_PATH
                        | option::URI_QUERY
                        | option::CONTENT_FORMAT
                        | option::ACCEPT
                        | option::OBSERVE
                        | option::BLOCK1
                        | option::BLOCK2
                        | option::SIZE1
                        | option::SIZE2
                )
            })
            .cloned()
            .collect();
        Some(Request {
            method,
            path: self.strings(option::URI_PATH),
            query: self.strings(option::URI_QUERY),
            content_format: self.option(option::CONTENT_FORMAT).and_then(decode_u16),
            accept: self.option(option::ACCEPT).and_then(decode_u16),
            observe: self.uint_option(option::OBSERVE),
            options,
            payload: self.payload.clone(),
            confirmable: self.kind == Kind::Con,
        })
    }

    /// The response content of this frame (block options stripped).
    pub fn to_response(&self) -> Response {
        let options = self
            .options
            .iter()
            .filter(|(n, _)| {
                !matches!(
                    *n,
                    option::CONTENT_FORMAT
                        | option::MAX_AGE
                        | option::OBSERVE
                        | option::LOCATION_PATH
                        | option::BLOCK1
                        | option::BLOCK2
                        | option::SIZE1
                        | option::SIZE2
                )
            })
            .cloned()
            .collect();
        Response {
            code: self.code,
            content_format: self.option(option::CONTENT_FORMAT).and_then(decode_u16),
            max_age: self.uint_option(option::MAX_AGE),
            observe: self.uint_option(option::OBSERVE),
            location_path: self.strings(option::LOCATION_PATH),
            options,
            payload: self.payload.clone(),
        }
    }

    /// Options of a request, for [`Frame::emit`].
    pub(crate) fn request_options(request: &Request) -> Vec<(u16, Vec<u8>)> {
        let mut options = request.options.clone();
        options.extend(
            request
                .path
                .iter()
                .map(|s| (option::URI_PATH, s.as_bytes().to_vec())),
        );
        options.extend(
            request
                .query
                .iter()
                .map(|s| (option::URI_QUERY, s.as_bytes().to_vec())),
        );
        if let Some(cf) = request.content_format {
            options.push((option::CONTENT_FORMAT, encode_uint(cf.into())));
        }
        if let Some(cf) = request.accept {
            options.push((option::ACCEPT, encode_uint(cf.into())));
        }
        options
    }

    /// Options of a response, for [`Frame::emit`].
    pub(crate) fn response_options(response: &Response) -> Vec<(u16, Vec<u8>)> {
        let mut options = response.options.clone();
        if let Some(cf) = response.content_format {
            options.push((option::CONTENT_FORMAT, encode_uint(cf.into())));
        }
        if let Some(age) = response.max_age {
            options.push((option::MAX_AGE, encode_uint(age)));
        }
        options.extend(
            response
                .location_path
                .iter()
                .map(|s| (option::LOCATION_PATH, s.as_bytes().to_vec())),
        );
        options
    }
}

fn decode_u16(bytes: &[u8]) -> Option<u16> {
    decode_uint(bytes).and_then(|v| u16::try_from(v).ok())
}

/// Walk the options to see whether the datagram ends in a bare payload
/// marker.
fn ends_with_empty_payload(datagram: &[u8], tkl: usize) -> bool {
    let mut idx = 4 + tkl;
    while let Some(&byte) = datagram.get(idx) {
        if byte == 0xff {
            return idx + 1 == datagram.len();
        }
        idx += 1;
        let mut ext = |nibble: u8| -> Option<usize> {
            match nibble {
                13 => {
                    let v = *datagram.get(idx)? as usize + 13;
                    idx += 1;
                    Some(v)
                }
                14 => {
                    let hi = *datagram.get(idx)? as usize;
                    let lo = *datagram.get(idx + 1)? as usize;
                    idx += 2;
                    Some(((hi << 8) | lo) + 269)
                }
                n => Some(n as usize),
            }
        };
        if ext(byte >> 4).is_none() {
            return false;
        }
        let Some(len) = ext(byte & 0x0f) else {
            return false;
        };
        idx += len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_print_like_rfc7252() {
        assert_eq!(Code::NOT_FOUND.to_string(), "4.04 Not Found");
        assert_eq!(Code::CONTENT.to_string(), "2.05 Content");
        assert_eq!(Code(0x9e).to_string(), "4.30");
    }

    #[test]
    fn uint_round_trip() {
        for v in [0u32, 1, 255, 256, 65535, 1 << 24, u32::MAX] {
            assert_eq!(decode_uint(&encode_uint(v)), Some(v));
        }
        assert_eq!(encode_uint(0), Vec::<u8>::new());
        assert_eq!(decode_uint(&[1, 2, 3, 4, 5]), None);
    }

    #[test]
    fn frame_round_trip_keeps_repeated_options_in_order() {
        let frame = Frame {
            kind: Kind::Con,
            code: Method::Post.code(),
            mid: 0x1234,
            token: vec![1, 2, 3],
            options: vec![
                (option::URI_PATH, b"rd".to_vec()),
                (option::URI_QUERY, b"ep=a".to_vec()),
                (option::URI_QUERY, b"lt=30".to_vec()),
            ],
            payload: b"</3/0>".to_vec(),
        };
        let bytes = frame.emit();
        let back = Frame::parse(&bytes).unwrap();
        assert_eq!(back, frame);
        let req = back.to_request().unwrap();
        assert_eq!(req.query_value("lt"), Some("30"));
        assert_eq!(req.path_string(), "/rd");
    }

    #[test]
    fn malformed_frames_are_errors() {
        // reserved code class 3
        assert!(Frame::parse(&[0x60, 0x65, 0, 1]).is_err());
        assert!(Frame::parse(&[0x40, 0x01]).is_err());
        // version 2
        assert_eq!(Frame::parse(&[0x80, 0x01, 0, 1]).unwrap_err().header, None);
        // token length 9
        let err = Frame::parse(&[0x49, 0x01, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap_err();
        assert_eq!(err.header, Some((Kind::Con, 7)));
        // payload marker with no payload
        assert!(Frame::parse(&[0x40, 0x01, 0, 1, 0xff]).is_err());
        // empty message with a token
        assert!(Frame::parse(&[0x41, 0x00, 0, 1, 9]).is_err());
        // option value that ends in 0xff is fine
        let ok = [0x40, 0x01, 0, 1, 0xb1, 0xff];
        assert_eq!(Frame::parse(&ok).unwrap().options[0].1, vec![0xff]);
    }
}
