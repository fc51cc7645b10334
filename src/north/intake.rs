//! Command intake: what becomes of a message on `{root}/devices/{device}/cmd`
//! before the router sees it. Decodes the request once, refuses a retained
//! command (answered once per process, never executed: the broker would
//! hand it to us again on every reconnect), and keeps an MQTT 5 response
//! topic only when it lies under the configured prefix; then hands it to
//! the router, or answers it `busy` when the router cannot take it. The
//! decisions are pure: the caller supplies `now`.

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use ferrogate_sdk::{CommandError, ErrorCode};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::codec::{self, Refused};
use super::link::Ack;
use super::{CommandResultMsg, InboundCommand};

/// Retained commands remembered as answered; beyond this the oldest is
/// forgotten (and would be answered once more if the broker sent it again).
const RETAINED_REMEMBERED: usize = 1024;

/// One incoming message on a command topic.
pub(crate) struct Incoming<'a> {
    pub device: &'a str,
    pub payload: &'a [u8],
    pub retain: bool,
    pub response_topic: Option<String>,
    pub correlation: Option<Vec<u8>>,
    pub ack: Option<Ack>,
}

pub(crate) struct Intake {
    response_prefix: String,
    /// Larger request bodies are refused unread (`mqtt.max_packet_size`).
    max_payload: usize,
    retained_answered: HashSet<u64>,
    retained_order: VecDeque<u64>,
}

impl Intake {
    /// `response_prefix`: the only topics MQTT 5 responses are published
    /// on; `max_payload`: the largest request body read.
    pub fn new(response_prefix: String, max_payload: usize) -> Self {
        Intake {
            response_prefix,
            max_payload,
            retained_answered: HashSet::new(),
            retained_order: VecDeque::new(),
        }
    }

    /// The command for the router, or `None` for a retained command that
    /// was already answered (its acknowledgement is sent here).
    pub fn take(&mut self, m: Incoming<'_>, now: Instant) -> Option<InboundCommand> {
        let mut request = if m.payload.len() > self.max_payload {
            Err(Refused {
                id: None,
                error: CommandError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "request is {} bytes, above mqtt.max_packet_size {}",
                        m.payload.len(),
                        self.max_payload
                    ),
                ),
            })
        } else {
            codec::decode_request(m.payload)
        };
        if m.retain {
            let mut h = std::hash::DefaultHasher::new();
            (m.device, m.payload).hash(&mut h);
            let key = h.finish();
            if !self.retained_answered.insert(key) {
                if let Some(ack) = m.ack {
                    tokio::spawn(ack.send());
                }
                return None;
            }
            self.retained_order.push_back(key);
            if self.retained_order.len() > RETAINED_REMEMBERED {
                if let Some(old) = self.retained_order.pop_front() {
                    self.retained_answered.remove(&old);
                }
            }
            let id = match &request {
                Ok(r) => Some(r.id.clone()),
                Err(r) => r.id.clone(),
            };
            request = Err(Refused {
                id,
                error: CommandError::new(
                    ErrorCode::BadRequest,
                    "retained command not executed: publish commands without the retain flag \
                     (and clear the retained one with an empty retained message)",
                ),
            });
        }
        let mut reply_to = m
            .response_topic
            .map(|t| (t, m.correlation.unwrap_or_default()));
        if let Some((topic, _)) = &reply_to {
            if !topic.starts_with(&self.response_prefix) {
                let error = CommandError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "response topic `{topic}` is not under `{}`",
                        self.response_prefix
                    ),
                );
                request = match request {
                    Ok(r) => Err(Refused {
                        id: Some(r.id),
                        error,
                    }),
                    Err(r) => Err(r),
                };
                reply_to = None;
            }
        }
        Some(InboundCommand {
            device: m.device.to_string(),
            // The journal keeps decoded requests only.
            payload: if request.is_ok() {
                m.payload.to_vec()
            } else {
                Vec::new()
            },
            request,
            ack: m.ack,
            reply_to,
            received: now,
        })
    }
}

/// Gives a command to the router's queue; when the queue is full the
/// command's `busy` answer is returned instead (and the command
/// acknowledged once that answer is stored in the outbox, so a crash
/// before has the broker deliver it again): dropping it would leave it
/// unanswered. When the queue is
/// closed (the gateway is stopping) and the broker keeps our session
/// (`persistent`), the command is left unacknowledged: the broker delivers
/// it again after the restart and it runs then.
pub(crate) fn hand_over(
    router: &mpsc::Sender<InboundCommand>,
    cmd: InboundCommand,
    persistent: bool,
) -> Option<CommandResultMsg> {
    let (cmd, why) = match router.try_send(cmd) {
        Ok(()) => return None,
        Err(mpsc::error::TrySendError::Full(cmd)) => {
            (cmd, "the gateway has too many commands queued; retry later")
        }
        Err(mpsc::error::TrySendError::Closed(cmd)) => {
            if persistent && cmd.ack.is_some() {
                tracing::info!(device = %cmd.device, "command left to the broker: the gateway is stopping");
                return None;
            }
            (cmd, "the gateway is stopping; retry later")
        }
    };
    let id = match &cmd.request {
        Ok(r) => r.id.clone(),
        Err(r) => r.id.clone().unwrap_or_default(),
    };
    // Answered once the answer is stored: the broker may forget it then.
    let (tell, stored) = tokio::sync::oneshot::channel();
    if let Some(ack) = cmd.ack {
        tokio::spawn(async move {
            if stored.await.is_ok() {
                ack.send().await;
            }
        });
    }
    Some(CommandResultMsg {
        device: cmd.device,
        id,
        outcome: Err(CommandError::new(ErrorCode::Busy, why)),
        reply_to: cmd.reply_to,
        stored: Some(tell),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(payload: &'a [u8], retain: bool, response: Option<&str>) -> Incoming<'a> {
        Incoming {
            device: "d",
            payload,
            retain,
            response_topic: response.map(str::to_string),
            correlation: Some(b"c".to_vec()),
            ack: None,
        }
    }

    const WRITE: &[u8] = br#"{"id":"w","op":"write","point":"sp","value":1}"#;

    #[test]
    fn a_plain_command_goes_to_the_router() {
        let mut intake = Intake::new("r/responses/".into(), 4096);
        let c = intake
            .take(msg(WRITE, false, Some("r/responses/app")), Instant::now())
            .unwrap();
        assert_eq!(c.request.unwrap().id, "w");
        assert_eq!(c.reply_to, Some(("r/responses/app".into(), b"c".to_vec())));
    }

    #[test]
    fn a_retained_command_is_answered_once_and_never_executed() {
        let mut intake = Intake::new("r/responses/".into(), 4096);
        let c = intake.take(msg(WRITE, true, None), Instant::now()).unwrap();
        let refused = c.request.unwrap_err();
        assert_eq!(refused.id.as_deref(), Some("w"));
        assert_eq!(refused.error.code, ErrorCode::BadRequest);
        assert!(refused.error.message.contains("retained"));
        // The broker sends it again after a reconnect: no second answer.
        assert!(
            intake
                .take(msg(WRITE, true, None), Instant::now())
                .is_none()
        );
        // The same body published live is a command like any other.
        assert!(
            intake
                .take(msg(WRITE, false, None), Instant::now())
                .unwrap()
                .request
                .is_ok()
        );
    }

    #[test]
    fn an_oversized_request_is_refused_unread() {
        let mut intake = Intake::new("r/responses/".into(), 4096);
        let big = format!(
            r#"{{"id":"big","op":"read","args":"{}"}}"#,
            "x".repeat(5000)
        );
        let c = intake
            .take(msg(big.as_bytes(), false, None), Instant::now())
            .unwrap();
        let refused = c.request.unwrap_err();
        assert_eq!(refused.id, None);
        assert!(
            refused.error.message.contains("max_packet_size"),
            "{refused:?}"
        );
        assert!(c.payload.is_empty(), "not kept for the journal");
    }

    #[test]
    fn response_topics_outside_the_prefix_are_refused() {
        let mut intake = Intake::new("r/responses/".into(), 4096);
        for topic in [
            "r/devices/other/telemetry",
            "x/devices/d/cmd",
            "r/responses",
        ] {
            let c = intake
                .take(msg(WRITE, false, Some(topic)), Instant::now())
                .unwrap();
            let refused = c.request.unwrap_err();
            assert_eq!(refused.id.as_deref(), Some("w"));
            assert!(refused.error.message.contains("not under"), "{topic}");
            assert_eq!(c.reply_to, None, "nothing is published on {topic}");
        }
    }

    #[test]
    fn a_full_router_queue_answers_busy_with_the_id() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut intake = Intake::new("r/responses/".into(), 4096);
        let mut busy = Vec::new();
        for n in 0..5 {
            let body = format!(r#"{{"id":"c{n}","op":"read"}}"#);
            let cmd = intake
                .take(
                    msg(body.as_bytes(), false, Some("r/responses/x")),
                    Instant::now(),
                )
                .unwrap();
            if let Some(answer) = hand_over(&tx, cmd, true) {
                busy.push(answer);
            }
        }
        let mut queued = Vec::new();
        while let Ok(c) = rx.try_recv() {
            queued.push(c.request.unwrap().id);
        }
        assert_eq!(queued, ["c0", "c1"]);
        let ids: Vec<_> = busy.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids,
            ["c2", "c3", "c4"],
            "every command is answered, none dropped"
        );
        for a in &busy {
            assert_eq!(a.outcome.as_ref().unwrap_err().code, ErrorCode::Busy);
            assert_eq!(a.reply_to.as_ref().unwrap().0, "r/responses/x");
        }
    }

    /// Answers = requests, by id, for a thousand seeded schedules: a
    /// router queue of random capacity drained at random moments, and
    /// restarts that lose the queue (its commands were never acknowledged,
    /// so the broker delivers them again). Every id ends up taken by the
    /// router or answered `busy`, exactly once.
    #[test]
    fn every_command_is_taken_or_answered_exactly_once() {
        for seed in 1..=1000u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let commands = 1 + next(60);
            let capacity = 1 + next(8) as usize;
            let (mut tx, mut rx) = mpsc::channel::<InboundCommand>(capacity);
            let mut intake = Intake::new("r/responses/".into(), 4096);
            let mut to_deliver: VecDeque<u64> = (0..commands).collect();
            let mut outcomes: std::collections::BTreeMap<u64, u32> = Default::default();
            while let Some(n) = to_deliver.pop_front() {
                let body = format!(r#"{{"id":"c{n}","op":"read"}}"#);
                let cmd = intake
                    .take(msg(body.as_bytes(), false, None), Instant::now())
                    .unwrap();
                if let Some(busy) = hand_over(&tx, cmd, true) {
                    assert_eq!(busy.id, format!("c{n}"));
                    *outcomes.entry(n).or_default() += 1;
                }
                match next(4) {
                    // The router takes what is queued.
                    0 => {
                        while let Ok(c) = rx.try_recv() {
                            let id = c.request.unwrap().id;
                            *outcomes.entry(id[1..].parse().unwrap()).or_default() += 1;
                        }
                    }
                    // A restart: the queue is gone, its commands come again.
                    1 if next(8) == 0 => {
                        rx.close();
                        while let Ok(c) = rx.try_recv() {
                            let id = c.request.unwrap().id;
                            to_deliver.push_back(id[1..].parse().unwrap());
                        }
                        (tx, rx) = mpsc::channel(capacity);
                    }
                    _ => {}
                }
            }
            while let Ok(c) = rx.try_recv() {
                let id = c.request.unwrap().id;
                *outcomes.entry(id[1..].parse().unwrap()).or_default() += 1;
            }
            assert_eq!(outcomes.len() as u64, commands, "seed {seed}: {outcomes:?}");
            assert!(
                outcomes.values().all(|n| *n == 1),
                "seed {seed}: {outcomes:?}"
            );
        }
    }
}
