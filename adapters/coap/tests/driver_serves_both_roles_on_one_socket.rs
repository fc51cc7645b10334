//! Two drivers over loopback UDP, each a client and a server on its one
//! socket at the same time (what the LwM2M server needs), including an
//! observation served with `accept_observe`/`notify` and cancelled by
//! dropping it.

use std::time::Duration;

use ferrogate_coap::driver::{self, DriverError};
use ferrogate_coap::{Code, EndpointConfig, EndpointError, Request, Response};
use tokio_util::sync::CancellationToken;

async fn bound() -> tokio::net::UdpSocket {
    tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_serves_both_roles_on_one_socket() {
    let stop = CancellationToken::new();
    let (a, mut a_in) = driver::spawn(bound().await, EndpointConfig::default(), stop.clone());
    let (b, mut b_in) = driver::spawn(bound().await, EndpointConfig::default(), stop.clone());
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());

    // A registers at B while B reads from A, concurrently.
    let register = tokio::spawn({
        let a = a.clone();
        async move {
            a.request(b_addr, Request::post("/rd").with_query("ep=node1"))
                .await
        }
    });
    let read = tokio::spawn({
        let b = b.clone();
        async move { b.request(a_addr, Request::get("/3/0/0")).await }
    });
    let at_b = within(b_in.recv()).await.unwrap();
    let at_a = within(a_in.recv()).await.unwrap();
    assert_eq!(at_b.request.query_value("ep"), Some("node1"));
    assert_eq!(at_a.request.path_string(), "/3/0/0");
    at_a.responder
        .respond(Response::new(Code::CONTENT).with_payload(0, b"ferrogate".to_vec()));
    at_b.responder.respond(Response {
        location_path: vec!["rd".into(), "1".into()],
        ..Response::new(Code::CREATED)
    });
    let registered = within(register).await.unwrap().unwrap();
    assert_eq!(registered.location_path, vec!["rd", "1"]);
    assert_eq!(within(read).await.unwrap().unwrap().payload, b"ferrogate");

    // A request whose responder is dropped unanswered gets 5.00.
    let dropped = tokio::spawn({
        let a = a.clone();
        async move { a.request(b_addr, Request::get("/nobody")).await }
    });
    drop(within(b_in.recv()).await.unwrap());
    assert_eq!(
        within(dropped).await.unwrap().unwrap().code,
        Code::INTERNAL_SERVER_ERROR
    );

    // A observes B.
    let observe = tokio::spawn({
        let a = a.clone();
        async move { a.observe(b_addr, Request::get("/temp")).await }
    });
    let registration = within(b_in.recv()).await.unwrap();
    assert_eq!(registration.request.observe, Some(0));
    let relation = registration
        .responder
        .accept_observe(Response::new(Code::CONTENT).with_payload(0, b"20".to_vec()))
        .await
        .expect("relation");
    let mut observation = within(observe).await.unwrap().unwrap();
    assert_eq!(observation.first.payload, b"20");
    assert!(observation.first.observe.is_some());
    for (i, confirmable) in [(21, false), (22, true), (23, false)] {
        let body = i.to_string().into_bytes();
        relation
            .notify(
                Response::new(Code::CONTENT).with_payload(0, body.clone()),
                confirmable,
            )
            .await
            .unwrap();
        let n = within(observation.next()).await.unwrap().unwrap();
        assert_eq!(n.payload, body);
    }

    // Dropping the observation deregisters it (GET with Observe=1).
    drop(observation);
    let deregistration = within(b_in.recv()).await.unwrap();
    assert_eq!(deregistration.request.observe, Some(1));
    deregistration
        .responder
        .respond(Response::new(Code::CONTENT));
    let ended = within(relation.notify(Response::new(Code::CONTENT), false)).await;
    assert_eq!(
        ended,
        Err(DriverError::Endpoint(EndpointError::UnknownRelation))
    );
    stop.cancel();
}
