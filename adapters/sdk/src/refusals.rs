//! Per-adapter counts of input refused from the network, by reason
//! (`bad_name`, `too_many`, ...). An adapter counts each refusal where it
//! refuses; the runtime shows the counts in `status` (`adapters[].refused`)
//! and in metrics (`ferrogate_adapter_refused_total{adapter,reason}`), so a
//! flood or a misconfigured device is visible without a debug log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Refusal counters shared by an adapter and the runtime. Cloning shares
/// the counts; they survive adapter restarts.
#[derive(Debug, Clone, Default)]
pub struct Refusals(Arc<Mutex<BTreeMap<&'static str, u64>>>);

impl Refusals {
    /// Count one refusal for `reason` (a short snake_case word).
    pub fn count(&self, reason: &'static str) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(reason).or_insert(0) += 1;
    }

    /// Count `n` refusals for `reason` at once (from an engine's counters).
    pub fn add(&self, reason: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(reason).or_insert(0) += n;
    }

    /// The counts so far, by reason.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many refusals for `reason` so far.
    pub fn get(&self, reason: &str) -> u64 {
        self.snapshot().get(reason).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_counts_by_reason() {
        let a = Refusals::default();
        let b = a.clone();
        a.count("bad_name");
        b.count("bad_name");
        b.count("too_many");
        b.add("too_many", 0);
        b.add("malformed", 3);
        assert_eq!(a.get("bad_name"), 2);
        assert_eq!(a.get("too_many"), 1);
        assert_eq!(a.get("other"), 0);
        assert_eq!(
            b.snapshot().into_iter().collect::<Vec<_>>(),
            vec![("bad_name", 2), ("malformed", 3), ("too_many", 1)]
        );
    }
}
