//! Whether a device is online: offline after `offline_after` poll cycles in
//! a row got no answer at all, online again on the first answer (an
//! exception is an answer: the device is there).

use ferrogate_sdk::DeviceState;

#[derive(Debug, Clone, Default)]
pub struct Quality {
    failed_in_a_row: u32,
    state: Option<DeviceState>,
}

impl Quality {
    /// Record a cycle; returns the new state when it changed.
    pub fn cycle(&mut self, answered: bool, offline_after: u32) -> Option<DeviceState> {
        let next = if answered {
            self.failed_in_a_row = 0;
            DeviceState::Online
        } else {
            self.failed_in_a_row = self.failed_in_a_row.saturating_add(1);
            if self.failed_in_a_row < offline_after {
                return None;
            }
            DeviceState::Offline
        };
        if self.state == Some(next) {
            return None;
        }
        self.state = Some(next);
        Some(next)
    }

    pub fn state(&self) -> Option<DeviceState> {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_after_n_failures_online_on_first_answer() {
        let mut q = Quality::default();
        assert_eq!(q.cycle(true, 3), Some(DeviceState::Online));
        assert_eq!(q.cycle(true, 3), None);
        assert_eq!(q.cycle(false, 3), None);
        assert_eq!(q.cycle(false, 3), None);
        assert_eq!(q.cycle(false, 3), Some(DeviceState::Offline));
        assert_eq!(q.cycle(false, 3), None);
        assert_eq!(q.cycle(true, 3), Some(DeviceState::Online));
    }

    #[test]
    fn a_device_never_seen_goes_offline_too() {
        let mut q = Quality::default();
        assert_eq!(q.cycle(false, 1), Some(DeviceState::Offline));
        assert_eq!(q.state(), Some(DeviceState::Offline));
    }
}
