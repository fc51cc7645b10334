//! The ingest server's decisions: which device a POST/PUT is for, whether
//! that device may send, and the readings in its body. Answers follow RFC
//! 7252 §5.9: 2.04 Changed, 4.00 Bad Request (undecodable body), 4.03
//! Forbidden (unknown device), 4.04 Not Found (no path template matches),
//! 4.05 Method Not Allowed, 4.15 Unsupported Content-Format. A name an
//! allow pattern would admit passes [`check_device_name`] first: refused
//! with 4.00, it never becomes a device. Every refusal carries a reason for
//! the adapter's refusal counters.

use std::collections::BTreeSet;

use ferrogate_dtls::{CredentialStore, PskCredential};
use ferrogate_sdk::Timestamp;
use ferrogate_sdk::name::check_device_name;

use crate::config::IngestPlan;
use crate::message::{Code, Method, Request, Response};
use crate::payload::{self, Sample};

/// Readings accepted from a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub device: String,
    pub samples: Vec<Sample>,
    /// The device is not configured and was let in by an allow pattern
    /// for the first time: announce it.
    pub first_seen: bool,
}

/// A request the ingest server refused: the answer, and the reason it is
/// counted under.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub reason: &'static str,
    pub response: Response,
}

fn refuse(reason: &'static str, code: Code, diagnostic: impl Into<String>) -> Refused {
    Refused {
        reason,
        response: Response::new(code).with_diagnostic(diagnostic),
    }
}

/// Routes pushed readings to devices.
#[derive(Debug)]
pub struct Ingest {
    plan: IngestPlan,
    known: BTreeSet<String>,
    seen_unknown: BTreeSet<String>,
}

impl Ingest {
    pub fn new(plan: IngestPlan, known: impl IntoIterator<Item = String>) -> Self {
        Ingest {
            plan,
            known: known.into_iter().collect(),
            seen_unknown: BTreeSet::new(),
        }
    }

    /// Decide on one request: the readings, or the error response. `via`
    /// is the credential the sender proved over DTLS (`None`: the plain
    /// listener): it may only send for the device it names, and a device
    /// that has a credential sends only with it.
    pub fn accept(
        &mut self,
        request: &Request,
        via: Option<&PskCredential>,
        now: Timestamp,
    ) -> Result<Accepted, Refused> {
        if !matches!(request.method, Method::Post | Method::Put) {
            return Err(refuse(
                "bad_method",
                Code::METHOD_NOT_ALLOWED,
                "readings are sent with POST or PUT",
            ));
        }
        let Some(m) = self
            .plan
            .paths
            .iter()
            .find_map(|t| t.matches(&request.path))
        else {
            return Err(refuse("no_path", Code::NOT_FOUND, "no device path matches"));
        };
        match via {
            Some(c) if *c.endpoint != *m.device => {
                return Err(refuse(
                    "credential_mismatch",
                    Code::FORBIDDEN,
                    format!("the DTLS credential belongs to device `{}`", c.endpoint),
                ));
            }
            None if self
                .plan
                .dtls
                .as_ref()
                .is_some_and(|d| d.credentials.is_protected(&m.device)) =>
            {
                return Err(refuse(
                    "needs_dtls",
                    Code::FORBIDDEN,
                    format!("device `{}` sends over DTLS only", m.device),
                ));
            }
            _ => {}
        }
        let known = self.known.contains(&m.device);
        let mut first_seen = false;
        if !known {
            if !self.plan.allow.iter().any(|p| p.matches(&m.device)) {
                return Err(refuse("unknown_device", Code::FORBIDDEN, "unknown device"));
            }
            if let Err(e) = check_device_name(&m.device) {
                return Err(refuse("bad_name", Code::BAD_REQUEST, e.to_string()));
            }
            if !self.seen_unknown.contains(&m.device) {
                if self.seen_unknown.len() >= self.plan.max_allowed {
                    return Err(refuse(
                        "too_many",
                        Code::SERVICE_UNAVAILABLE,
                        "too many devices",
                    ));
                }
                self.seen_unknown.insert(m.device.clone());
                first_seen = true;
            }
        }
        if !payload::is_supported(request.content_format) {
            if first_seen {
                self.seen_unknown.remove(&m.device);
            }
            return Err(refuse(
                "bad_content_format",
                Code::UNSUPPORTED_CONTENT_FORMAT,
                "use text/plain, JSON, CBOR, SenML JSON or SenML CBOR",
            ));
        }
        let samples = match payload::decode(
            request.content_format,
            &request.payload,
            m.point.as_deref(),
            now,
        ) {
            Ok(s) => s,
            Err(e) => {
                if first_seen {
                    self.seen_unknown.remove(&m.device);
                }
                return Err(refuse("bad_payload", Code::BAD_REQUEST, e.to_string()));
            }
        };
        let samples = samples
            .into_iter()
            .map(|s| Sample {
                point: strip_device(&s.point, &m.device, m.point.as_deref()),
                ..s
            })
            .collect();
        Ok(Accepted {
            device: m.device,
            samples,
            first_seen,
        })
    }
}

/// SenML names often carry the device (`bn: "meter-1/"`): keep the point
/// part. Under a `{point}` path, multi-value payloads are that point's
/// fields (`point.field`).
fn strip_device(name: &str, device: &str, path_point: Option<&str>) -> String {
    let name = name.trim_start_matches('/');
    let rest = name
        .strip_prefix(device)
        .and_then(|r| r.strip_prefix(['/', ':', '.']))
        .unwrap_or(name);
    match path_point {
        Some(p) if rest != p => format!("{p}.{rest}"),
        _ => rest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::{NamePattern, PathTemplate};
    use ferrogate_sdk::Value;

    fn ingest() -> Ingest {
        Ingest::new(
            IngestPlan {
                paths: vec![
                    PathTemplate::parse("/{device}/{point}").unwrap(),
                    PathTemplate::parse("/{device}").unwrap(),
                ],
                allow: vec![NamePattern::parse("lab-*").unwrap()],
                max_allowed: 10_000,
                dtls: None,
            },
            ["meter-1".to_string()],
        )
    }

    fn credential(device: &str) -> PskCredential {
        PskCredential {
            endpoint: device.into(),
            identity: device.as_bytes().to_vec(),
            key: ferrogate_dtls::PskKey::new(vec![1; 16]),
        }
    }

    #[test]
    fn a_device_with_a_credential_sends_only_with_it() {
        let mut i = ingest();
        i.plan.dtls = Some(ferrogate_dtls::DtlsListener {
            bind: "127.0.0.1:5684".parse().unwrap(),
            credentials_path: "psk.toml".into(),
            credentials: std::sync::Arc::new(ferrogate_dtls::Credentials::new([credential(
                "meter-1",
            )])),
            limits: Default::default(),
            warnings: Vec::new(),
        });
        let refused = |r: Result<Accepted, Refused>| r.map(|a| a.device).unwrap_err().reason;
        let body = post("/meter-1/temp", 0, b"21.5");
        assert_eq!(refused(i.accept(&body, None, NOW)), "needs_dtls");
        let other = credential("lab-2");
        assert_eq!(
            refused(i.accept(&body, Some(&other), NOW)),
            "credential_mismatch"
        );
        let own = credential("meter-1");
        assert_eq!(i.accept(&body, Some(&own), NOW).unwrap().device, "meter-1");
        // a device without a credential is as before on either listener
        assert!(i.accept(&post("/lab-2/t", 0, b"1"), None, NOW).is_ok());
        assert!(
            i.accept(&post("/lab-2/t", 0, b"1"), Some(&other), NOW)
                .is_ok()
        );
    }

    fn post(path: &str, cf: u16, body: &[u8]) -> Request {
        Request::post(path).with_payload(cf, body.to_vec())
    }

    const NOW: Timestamp = Timestamp(1);

    #[test]
    fn routes_and_rejects() {
        let mut i = ingest();
        let a = i
            .accept(&post("/meter-1/temp", 0, b"21.5"), None, NOW)
            .unwrap();
        assert_eq!(
            (a.device.as_str(), a.samples[0].point.as_str()),
            ("meter-1", "temp")
        );
        assert_eq!(a.samples[0].value, Value::Float(21.5));
        let code = |r: Result<Accepted, Refused>| r.unwrap_err().response.code;
        assert_eq!(
            code(i.accept(&post("/ghost/temp", 0, b"1"), None, NOW)),
            Code::FORBIDDEN
        );
        assert_eq!(
            code(i.accept(&post("/a/b/c", 0, b"1"), None, NOW)),
            Code::NOT_FOUND
        );
        assert_eq!(
            code(i.accept(&Request::get("/meter-1"), None, NOW)),
            Code::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            code(i.accept(&post("/meter-1", 41, b"<x/>"), None, NOW)),
            Code::UNSUPPORTED_CONTENT_FORMAT
        );
        assert_eq!(
            code(i.accept(&post("/meter-1", 50, b"{"), None, NOW)),
            Code::BAD_REQUEST
        );
        assert_eq!(
            code(i.accept(&post("/meter-1", 0, b"1"), None, NOW)),
            Code::BAD_REQUEST,
            "no point name"
        );
    }

    #[test]
    fn allowed_unknown_devices_are_announced_once() {
        let mut i = ingest();
        let a = i
            .accept(&post("/lab-7", 50, br#"{"t":1}"#), None, NOW)
            .unwrap();
        assert!(a.first_seen);
        let a = i
            .accept(&post("/lab-7", 50, br#"{"t":2}"#), None, NOW)
            .unwrap();
        assert!(!a.first_seen);
    }

    #[test]
    fn names_that_would_break_a_topic_are_refused_before_they_become_devices() {
        let mut i = ingest();
        for name in ["lab-x\u{1}y", "lab-\u{202e}", "lab-a b", "lab-+"] {
            let refused = i
                .accept(&post(&format!("/{name}"), 50, br#"{"t":1}"#), None, NOW)
                .unwrap_err();
            assert_eq!(refused.reason, "bad_name", "{name:?}");
            assert_eq!(refused.response.code, Code::BAD_REQUEST, "{name:?}");
        }
        let long = format!("lab-{}", "x".repeat(ferrogate_sdk::name::MAX_NAME_LEN));
        assert_eq!(
            i.accept(&post(&format!("/{long}"), 50, br#"{"t":1}"#), None, NOW)
                .unwrap_err()
                .reason,
            "bad_name"
        );
        // Nothing was remembered: a good name still gets in and is new.
        assert!(i.seen_unknown.is_empty());
        let a = i
            .accept(&post("/lab-ok", 50, br#"{"t":1}"#), None, NOW)
            .unwrap();
        assert!(a.first_seen);
    }

    #[test]
    fn senml_names_lose_the_device_prefix() {
        let mut i = ingest();
        let a = i
            .accept(
                &post(
                    "/meter-1",
                    110,
                    br#"[{"bn":"meter-1/","n":"v","v":230},{"bn":"","n":"meter-1:i","v":2}]"#,
                ),
                None,
                NOW,
            )
            .unwrap();
        let names: Vec<&str> = a.samples.iter().map(|s| s.point.as_str()).collect();
        assert_eq!(names, vec!["v", "i"]);
        let a = i
            .accept(&post("/meter-1/env", 50, br#"{"t":1}"#), None, NOW)
            .unwrap();
        assert_eq!(a.samples[0].point, "env.t");
    }
}
