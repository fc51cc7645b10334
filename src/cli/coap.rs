//! `ferrogate coap get|observe URI`: talk to a CoAP device directly, with
//! the gateway's own CoAP engine, no daemon needed.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use ferrogate_coap::driver::{self, CoapHandle};
use ferrogate_coap::secure::DtlsSocket;
use ferrogate_coap::{EndpointConfig, Request, Response, payload};
use ferrogate_dtls::PskKey;
use ferrogate_sdk::Timestamp;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use super::EXIT_FAILED;
use super::output::Table;

/// A parsed `coap[s]://host[:port]/path[?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapUri {
    /// `coaps://`: over DTLS.
    pub secure: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub query: Vec<String>,
}

impl CoapUri {
    pub fn parse(uri: &str) -> Result<CoapUri, String> {
        let (secure, rest) = match (uri.strip_prefix("coap://"), uri.strip_prefix("coaps://")) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => {
                return Err(format!(
                    "`{uri}`: a CoAP URI starts with coap:// or coaps://"
                ));
            }
        };
        let (authority, path_query) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (
                p,
                q.split('&')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            None => (path_query, Vec::new()),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{uri}`: unterminated ["))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{uri}`: missing host"));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| format!("`{uri}`: invalid port `{p}`"))?,
            // RFC 7252 §6.1, §6.2
            None if secure => 5684,
            None => 5683,
        };
        Ok(CoapUri {
            secure,
            host: host.to_string(),
            port,
            path: path.to_string(),
            query,
        })
    }

    fn request(&self) -> Request {
        self.query
            .iter()
            .fold(Request::get(&self.path), |r, q| r.with_query(q.clone()))
    }
}

/// How the command prints, and the PSK for `coaps://`.
pub struct Options {
    pub json: bool,
    pub timeout: Duration,
    pub psk: Option<Psk>,
}

/// `--psk-identity` and `--psk-key` (hex).
pub struct Psk {
    pub identity: String,
    pub key: PskKey,
}

async fn connect(
    uri: &CoapUri,
    psk: Option<&Psk>,
    stop: CancellationToken,
) -> Result<(CoapHandle, SocketAddr), String> {
    let peer = tokio::net::lookup_host((uri.host.as_str(), uri.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", uri.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", uri.host))?;
    let bind: SocketAddr = if peer.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|_| "bad bind address".to_string())?;
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let (handle, _incoming) = match (uri.secure, psk) {
        (false, _) => driver::spawn(socket, EndpointConfig::default(), stop),
        (true, Some(psk)) => driver::spawn(
            DtlsSocket::client(socket, peer, psk.identity.as_bytes(), psk.key.clone()),
            EndpointConfig::default(),
            stop,
        ),
        (true, None) => {
            return Err(
                "coaps:// needs --psk-identity and --psk-key (DTLS with a pre-shared key)".into(),
            );
        }
    };
    Ok((handle, peer))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn fail(json: bool, message: &str) -> ExitCode {
    if json {
        println!(
            "{}",
            json!({"ok": false, "error": {"code": "coap", "message": message}})
        );
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(EXIT_FAILED)
}

/// `coap get URI`: one request; exit 0 on 2.xx, 1 otherwise.
pub fn get(uri: &str, opts: Options) -> ExitCode {
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let uri = CoapUri::parse(uri)?;
            let stop = CancellationToken::new();
            let (handle, peer) = connect(&uri, opts.psk.as_ref(), stop.clone()).await?;
            let response = tokio::time::timeout(opts.timeout, handle.request(peer, uri.request()))
                .await
                .map_err(|_| format!("no response from {peer} within {:?}", opts.timeout))?
                .map_err(|e| format!("request to {peer} failed: {e}"))?;
            stop.cancel();
            Ok(response)
        })
    });
    match result {
        Err(e) => fail(opts.json, &e),
        Ok(response) => {
            print_response(&response, opts.json);
            if response.code.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}

/// `coap observe URI`: the first response, then every notification until
/// interrupted or `count` notifications were printed.
pub fn observe(uri: &str, opts: Options, count: Option<u64>) -> ExitCode {
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let uri = CoapUri::parse(uri)?;
            let stop = CancellationToken::new();
            let (handle, peer) = connect(&uri, opts.psk.as_ref(), stop.clone()).await?;
            let mut observation =
                tokio::time::timeout(opts.timeout, handle.observe(peer, uri.request()))
                    .await
                    .map_err(|_| format!("no response from {peer} within {:?}", opts.timeout))?
                    .map_err(|e| format!("observe of {peer} failed: {e}"))?;
            print_response(&observation.first, opts.json);
            if observation.first.observe.is_none() {
                return Err("the device answered but did not accept the observation".to_string());
            }
            let mut printed = 0;
            while count.is_none_or(|c| printed < c) {
                match observation.next().await {
                    Some(Ok(n)) => print_response(&n, opts.json),
                    Some(Err(e)) => return Err(format!("observation lost: {e}")),
                    None => return Err("the device ended the observation".to_string()),
                }
                printed += 1;
            }
            drop(observation);
            stop.cancel();
            Ok(())
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(opts.json, &e),
    }
}

fn print_response(response: &Response, as_json: bool) {
    let text = std::str::from_utf8(&response.payload).ok();
    let values: Option<Vec<(String, Json)>> = if !response.code.is_success() {
        None
    } else {
        payload::decode(
            response.content_format,
            &response.payload,
            Some("value"),
            Timestamp::now(),
        )
        .ok()
        .map(|samples| {
            samples
                .into_iter()
                .map(|s| (s.point, s.value.to_json()))
                .collect()
        })
    };
    if as_json {
        let mut out = json!({
            "code": response.code.to_string(),
            "content_format": response.content_format,
            "observe": response.observe,
        });
        match text {
            Some(t) => out["payload"] = t.into(),
            None => out["payload_hex"] = ferrogate_sdk::hex::encode(&response.payload).into(),
        }
        if let Some(values) = values {
            out["values"] = Json::Object(values.into_iter().collect());
        }
        // The one --json envelope: a 4.xx/5.xx answer is an error that
        // carries the response.
        let envelope = if response.code.is_success() {
            json!({"ok": true, "result": out})
        } else {
            json!({"ok": false, "error": {
                "code": "coap_error_response",
                "message": response.code.to_string(),
                "response": out,
            }})
        };
        println!("{envelope}");
        return;
    }
    let mut head = response.code.to_string();
    if let Some(cf) = response.content_format {
        head.push_str(&format!(" (content-format {cf})"));
    }
    if let Some(n) = response.observe {
        head.push_str(&format!(" observe={n}"));
    }
    println!("{head}");
    match (values, text) {
        (Some(values), _) if !values.is_empty() && response.content_format.is_some() => {
            let mut t = Table::new(&["POINT", "VALUE"]);
            for (k, v) in values {
                t.row(vec![k, v.to_string()]);
            }
            print!("{}", t.render());
        }
        (_, Some(text)) if !text.is_empty() => println!("{text}"),
        (_, None) => println!("{}", ferrogate_sdk::hex::encode(&response.payload)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let u = CoapUri::parse("coap://127.0.0.1:5684/sensors/temp?unit=c&x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 5684, "/sensors/temp")
        );
        assert_eq!(u.query, ["unit=c", "x=1"]);
        let u = CoapUri::parse("coap://[::1]/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 5683));
        assert_eq!(CoapUri::parse("coap://dev").unwrap().path, "/");
        assert!(CoapUri::parse("http://x/").is_err());
        assert!(CoapUri::parse("coap://x:99999/").is_err());
        assert!(CoapUri::parse("coap:///a").is_err());
    }
}
