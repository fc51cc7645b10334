//! ferrogate-coap: CoAP for ferrogate.
//!
//! - [`Endpoint`]: a sans-IO CoAP engine (RFC 7252 message layer with
//!   §4.7 NSTART, RFC 7641 Observe, RFC 7959 block-wise) serving the client
//!   and the server role on one socket at once. It is fed datagrams and instants and hands out
//!   events, datagrams and its next deadline; it never touches a socket or
//!   a clock, so its tests run on a fake clock.
//! - [`driver`]: a thin tokio task around an [`Endpoint`] over a pluggable
//!   [`driver::Transport`] (UDP today, DTLS later), with an async
//!   request/observe/serve API.
//! - [`senml`]: SenML JSON (RFC 8428) and CBOR codecs, reused by the LwM2M
//!   adapter.
//! - [`CoapKind`]: the ferrogate adapter (`[coap]` in the configuration):
//!   an ingest server devices push readings to, and a client that polls or
//!   observes configured device resources.
//!
//! # Using the engine
//!
//! ```
//! use std::time::Instant;
//! use ferrogate_coap::{Code, Endpoint, EndpointConfig, Event, Request, Response};
//!
//! let server_addr = "127.0.0.1:5683".parse().unwrap();
//! let client_addr = "127.0.0.1:40000".parse().unwrap();
//! let mut client = Endpoint::new(EndpointConfig { seed: 1, ..Default::default() });
//! let mut server = Endpoint::new(EndpointConfig { seed: 2, ..Default::default() });
//! let now = Instant::now();
//!
//! // The client sends a GET: the engine queues a datagram and arms a
//! // retransmission timer.
//! let id = client.request(now, server_addr, Request::get("/3/0/0")).unwrap();
//! assert!(client.poll_timeout().is_some());
//! let t = client.poll_transmit().unwrap();
//!
//! // The server's socket received it: the engine hands out the request.
//! server.handle(now, client_addr, &t.datagram);
//! let Some(Event::Request(incoming)) = server.poll_event() else { panic!() };
//! assert_eq!(incoming.request.path_string(), "/3/0/0");
//! let answer = Response::new(Code::CONTENT).with_payload(0, b"ferrogate".to_vec());
//! server.respond(now, incoming.handle, answer).unwrap();
//!
//! // The piggybacked response travels back and completes the exchange.
//! let t = server.poll_transmit().unwrap();
//! client.handle(now, server_addr, &t.datagram);
//! match client.poll_event() {
//!     Some(Event::Response { id: got, response, .. }) => {
//!         assert_eq!(got, id);
//!         assert_eq!(response.payload, b"ferrogate");
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```
//!
//! A real program calls [`Endpoint::handle_timeout`] whenever the instant
//! from [`Endpoint::poll_timeout`] passes, and sends everything
//! [`Endpoint::poll_transmit`] yields; [`driver`] does exactly that.

mod adapter;
pub mod block;
pub mod config;
pub mod device;
pub mod driver;
pub mod endpoint;
pub mod ingest;
pub mod message;
pub mod pattern;
pub mod payload;
pub mod secure;
pub mod senml;
pub mod status;

pub use adapter::{CoapAdapter, CoapKind};
pub use coap_lite;
pub use endpoint::{
    Endpoint, EndpointConfig, EndpointError, Event, IncomingRequest, RateLimit, RelationEnd,
    RelationId, RequestError, RequestHandle, RequestId, Stats, TransmissionParams, Transmit,
};
pub use message::{Code, Frame, FrameError, Kind, Method, Request, Response, content_format};
