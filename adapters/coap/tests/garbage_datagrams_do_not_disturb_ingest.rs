//! Datagrams that are not CoAP, malformed CONs and unknown critical options
//! reaching the ingest server are dropped or refused (RST, 4.02) and lose
//! nothing: readings sent before and after still arrive.

mod common;

use std::time::Duration;

use common::{next_uplink, start_adapter, telemetry};
use ferrogate_coap::message::option;
use ferrogate_coap::{Code, Frame, Kind, Method};
use ferrogate_sdk::{Uplink, Value};

async fn exchange(
    socket: &tokio::net::UdpSocket,
    to: std::net::SocketAddr,
    datagram: &[u8],
) -> Option<Frame> {
    socket.send_to(datagram, to).await.unwrap();
    let mut buf = [0u8; 1500];
    match tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(Frame::parse(&buf[..n]).expect("the gateway answered garbage")),
        _ => None,
    }
}

fn post(mid: u16, path: &[&str], body: &[u8]) -> Frame {
    let mut options: Vec<(u16, Vec<u8>)> = path
        .iter()
        .map(|p| (option::URI_PATH, p.as_bytes().to_vec()))
        .collect();
    options.push((option::CONTENT_FORMAT, vec![]));
    Frame {
        kind: Kind::Con,
        code: Method::Post.code(),
        mid,
        token: vec![0xaa, mid as u8],
        options,
        payload: body.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_do_not_disturb_ingest() {
    let port = common::free_udp_port();
    let toml =
        format!("[coap.server]\nbind = \"127.0.0.1:{port}\"\n\n[[coap.device]]\nname = \"m\"\n");
    let (mut h, _task) = start_adapter(&toml);
    next_uplink(&mut h, |u| {
        matches!(u, Uplink::Meta(m) if m.device == "m").then_some(())
    })
    .await;
    let gw: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let ok = exchange(&socket, gw, &post(1, &["m", "t"], b"1").emit())
        .await
        .unwrap();
    assert_eq!((ok.kind, ok.code), (Kind::Ack, Code::CHANGED));
    assert_eq!(
        telemetry(&mut h, "m").await.readings[0].value,
        Ok(Value::Int(1))
    );

    // not CoAP at all: silence
    assert_eq!(exchange(&socket, gw, b"\x01\x02").await, None);
    assert_eq!(
        exchange(&socket, gw, b"\x80\x01\x00\x01 version 2").await,
        None
    );
    // text that happens to start like a CON header is answered with RST
    let rst = exchange(&socket, gw, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!((rst.kind, rst.mid), (Kind::Rst, 0x5420));
    // a CON whose option runs past the end: RST with its message id
    let rst = exchange(&socket, gw, &[0x40, 0x02, 0x00, 0x09, 0xbd, 0x20, b'x'])
        .await
        .unwrap();
    assert_eq!((rst.kind, rst.mid, rst.code), (Kind::Rst, 9, Code::EMPTY));
    // an unknown critical option: 4.02 Bad Option
    let mut bad = post(10, &["m", "t"], b"2");
    bad.options.push((9999, vec![1]));
    let reply = exchange(&socket, gw, &bad.emit()).await.unwrap();
    assert_eq!(reply.code, Code::BAD_OPTION);
    // a CON ping: RST
    let pong = exchange(&socket, gw, &Frame::empty(Kind::Con, 11).emit())
        .await
        .unwrap();
    assert_eq!(pong.kind, Kind::Rst);

    // still serving, nothing published for the refused ones
    let ok = exchange(&socket, gw, &post(12, &["m", "t"], b"3").emit())
        .await
        .unwrap();
    assert_eq!(ok.code, Code::CHANGED);
    let t = telemetry(&mut h, "m").await;
    assert_eq!(
        t.readings[0].value,
        Ok(Value::Int(3)),
        "a refused datagram was published"
    );
    // a retransmission of an accepted CON is answered but not published twice
    let again = exchange(&socket, gw, &post(12, &["m", "t"], b"3").emit())
        .await
        .unwrap();
    assert_eq!((again.code, again.mid), (Code::CHANGED, 12));
    let ok = exchange(&socket, gw, &post(13, &["m", "t"], b"4").emit())
        .await
        .unwrap();
    assert_eq!(ok.code, Code::CHANGED);
    let t = telemetry(&mut h, "m").await;
    assert_eq!(
        t.readings[0].value,
        Ok(Value::Int(4)),
        "the duplicate was published"
    );
    h.shutdown.cancel();
}
