//! The engine's tunables: RFC 7252 §4.8 transmission parameters, the
//! derived time values of §4.8.2, and the resource caps that keep a hostile
//! peer from making the engine allocate without bound.

use std::time::Duration;

/// RFC 7252 §4.8 transmission parameters. Defaults are the RFC's.
#[derive(Debug, Clone, PartialEq)]
pub struct TransmissionParams {
    /// ACK_TIMEOUT: initial retransmission timeout of a CON (2 s).
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR: the initial timeout is drawn from
    /// `[ack_timeout, ack_timeout * factor]` (1.5).
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT: retransmissions before giving up (4).
    pub max_retransmit: u32,
    /// MAX_LATENCY: the longest a datagram may take in the network (100 s).
    pub max_latency: Duration,
}

impl Default for TransmissionParams {
    fn default() -> Self {
        TransmissionParams {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            max_latency: Duration::from_secs(100),
        }
    }
}

impl TransmissionParams {
    fn factor(&self) -> f64 {
        if self.ack_random_factor.is_finite() && self.ack_random_factor >= 1.0 {
            self.ack_random_factor
        } else {
            1.0
        }
    }

    /// MAX_TRANSMIT_SPAN: first to last transmission of a CON (45 s).
    pub fn max_transmit_span(&self) -> Duration {
        let n = (1u64 << self.max_retransmit.min(20)) - 1;
        self.ack_timeout.mul_f64(n as f64 * self.factor())
    }

    /// MAX_TRANSMIT_WAIT: first transmission to giving up (93 s).
    pub fn max_transmit_wait(&self) -> Duration {
        let n = (1u64 << (self.max_retransmit.min(20) + 1)) - 1;
        self.ack_timeout.mul_f64(n as f64 * self.factor())
    }

    /// EXCHANGE_LIFETIME: how long a CON's message id must be remembered
    /// for duplicate detection (247 s).
    pub fn exchange_lifetime(&self) -> Duration {
        // PROCESSING_DELAY is ACK_TIMEOUT (§4.8.2).
        self.max_transmit_span() + self.max_latency * 2 + self.ack_timeout
    }

    /// How long a Block1 upload waits for its next block before it is
    /// dropped: four initial timeouts at their longest (12 s). A client
    /// sends the next block as soon as it has the 2.31 for the last one,
    /// so an upload idle for longer is lost or abandoned, and keeping it
    /// the whole EXCHANGE_LIFETIME would let a few first blocks hold every
    /// slot for minutes.
    pub fn block1_idle_timeout(&self) -> Duration {
        self.ack_timeout.mul_f64(4.0 * self.factor())
    }

    /// NON_LIFETIME: the same for a NON (145 s).
    pub fn non_lifetime(&self) -> Duration {
        self.max_transmit_span() + self.max_latency
    }

    /// The initial timeout for a fresh CON, given a uniform sample in [0, 1).
    pub(crate) fn initial_timeout(&self, sample: f64) -> Duration {
        self.ack_timeout
            .mul_f64(1.0 + (self.factor() - 1.0) * sample.clamp(0.0, 1.0))
    }
}

/// Per-source rate limit: a token bucket per source IP.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Sustained datagrams per second.
    pub per_second: f64,
    /// Datagrams accepted in a burst.
    pub burst: f64,
}

/// Everything an [`Endpoint`](crate::Endpoint) can be tuned with.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub transmission: TransmissionParams,
    /// NSTART (RFC 7252 §4.7): CON requests to one peer awaiting their
    /// ACK at once; further requests wait their turn. The RFC's value is 1
    /// (what the CoAP adapter uses); the default here sets no limit so an
    /// application that manages its own concurrency (LwM2M) keeps it.
    pub nstart: usize,
    /// How long an incoming CON request may wait for its response before the
    /// engine acknowledges it with an empty ACK and sends the response
    /// separately (RFC 7252 §5.2.2). Below ACK_TIMEOUT so the peer does not
    /// retransmit.
    pub piggyback_window: Duration,
    /// How long one of our requests waits for a response once its CON was
    /// acknowledged (separate response) or after a NON was sent.
    pub response_timeout: Duration,
    /// How long an incoming request may stay unanswered by the application
    /// before the engine forgets it.
    pub server_response_timeout: Duration,
    /// Block size exponent we use for outgoing Block1/Block2 transfers
    /// (6 = 1024 bytes).
    pub block_szx: u8,
    /// Payloads up to this size are sent in one message; larger ones are
    /// sent block-wise.
    pub max_payload: usize,
    /// Largest body reassembled from blocks, in either direction.
    pub max_body: usize,
    /// Open Block1 reassemblies plus cached Block2 bodies.
    pub max_block_transfers: usize,
    /// Of those, at most this many from one source address, so one peer
    /// cannot take every slot.
    pub max_block_transfers_per_source: usize,
    /// Observe relations we serve (RFC 7641 server role).
    pub max_observe_relations: usize,
    /// Our requests in progress (including observations).
    pub max_exchanges: usize,
    /// Incoming requests handed to the application and not yet answered.
    pub max_pending_requests: usize,
    /// Message ids remembered for duplicate detection.
    pub max_dedup_entries: usize,
    /// Slack after a notification's Max-Age before we re-register an
    /// observation (RFC 7641 §3.3.1).
    pub reregister_margin: Duration,
    /// Per-source rate limit; `None` disables it.
    pub rate_limit: Option<RateLimit>,
    /// Sources tracked by the rate limiter.
    pub max_sources: usize,
    /// Seed for the first message id and retransmission jitter (tokens come
    /// from the OS CSPRNG). Give each endpoint a different one; tests fix it.
    pub seed: u64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            transmission: TransmissionParams::default(),
            nstart: usize::MAX,
            piggyback_window: Duration::from_millis(1000),
            response_timeout: Duration::from_secs(93),
            server_response_timeout: Duration::from_secs(60),
            block_szx: 6,
            max_payload: 1024,
            max_body: 64 * 1024,
            max_block_transfers: 64,
            max_block_transfers_per_source: 4,
            max_observe_relations: 256,
            max_exchanges: 1024,
            max_pending_requests: 1024,
            max_dedup_entries: 16 * 1024,
            reregister_margin: Duration::from_secs(5),
            rate_limit: Some(RateLimit {
                per_second: 200.0,
                burst: 400.0,
            }),
            max_sources: 4096,
            seed: 0x5eed_c0a9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_match_rfc7252_section_4_8_2() {
        let p = TransmissionParams::default();
        assert_eq!(p.max_transmit_span(), Duration::from_secs(45));
        assert_eq!(p.max_transmit_wait(), Duration::from_secs(93));
        assert_eq!(p.exchange_lifetime(), Duration::from_secs(247));
        assert_eq!(p.non_lifetime(), Duration::from_secs(145));
        assert_eq!(p.initial_timeout(0.0), Duration::from_secs(2));
        assert_eq!(p.initial_timeout(1.0), Duration::from_secs(3));
    }
}
