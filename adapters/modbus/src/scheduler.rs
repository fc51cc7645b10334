//! The line scheduler: decides what the one transaction slot of a serial
//! line or TCP endpoint does next. Pure: it is fed `Instant`s and outcomes
//! and never sleeps or touches I/O.
//!
//! Rules: queued commands (writes, on-demand reads) go ahead of polls;
//! polls run earliest-due first; a cycle that fell behind is skipped rather
//! than run twice; after a transaction the line stays quiet for the
//! inter-frame gap; a unit that timed out `backoff_after` cycles in a row
//! is not polled again until its backoff (doubling up to a ceiling)
//! expires, so a dead device costs the line one timeout per backoff period
//! instead of one per cycle.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One device's poll group (points sharing a poll period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSlot {
    pub device: usize,
    pub group: usize,
}

/// What the line does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<C> {
    Command(C),
    Poll(PollSlot),
    /// Nothing to do before this instant.
    Wait(Instant),
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Quiet time between the end of one transaction and the next frame.
    pub gap: Duration,
    pub backoff_after: u32,
    pub backoff_max: Duration,
    pub queue_capacity: usize,
}

#[derive(Debug)]
struct Slot {
    slot: PollSlot,
    period: Duration,
    due: Instant,
}

#[derive(Debug, Default)]
struct Unit {
    timeouts_in_a_row: u32,
    backoff: Duration,
    until: Option<Instant>,
}

#[derive(Debug)]
pub struct LineScheduler<C> {
    settings: Settings,
    slots: Vec<Slot>,
    units: Vec<Unit>,
    commands: VecDeque<C>,
    quiet_until: Option<Instant>,
}

impl<C> LineScheduler<C> {
    /// `slots`: every poll group with its period and how long after `now`
    /// it is first due (see [`first_due`]).
    pub fn new(
        settings: Settings,
        slots: Vec<(PollSlot, Duration, Duration)>,
        now: Instant,
    ) -> Self {
        let devices = slots
            .iter()
            .map(|(s, _, _)| s.device + 1)
            .max()
            .unwrap_or(0);
        LineScheduler {
            settings,
            slots: slots
                .into_iter()
                .map(|(slot, period, phase)| Slot {
                    slot,
                    period,
                    due: now + phase,
                })
                .collect(),
            units: (0..devices).map(|_| Unit::default()).collect(),
            commands: VecDeque::new(),
            quiet_until: None,
        }
    }

    /// Queue a command; gives it back when the queue is full (`busy`).
    pub fn push_command(&mut self, command: C) -> Result<(), C> {
        if self.commands.len() >= self.settings.queue_capacity {
            return Err(command);
        }
        self.commands.push_back(command);
        Ok(())
    }

    pub fn next(&mut self, now: Instant) -> Next<C> {
        if let Some(quiet) = self.quiet_until
            && quiet > now
        {
            return Next::Wait(quiet);
        }
        if let Some(command) = self.commands.pop_front() {
            return Next::Command(command);
        }
        let units = &self.units;
        let effective = |s: &Slot| match units.get(s.slot.device).and_then(|u| u.until) {
            Some(until) => s.due.max(until),
            None => s.due,
        };
        let Some(index) = (0..self.slots.len()).min_by_key(|i| effective(&self.slots[*i])) else {
            return Next::Wait(now + Duration::from_secs(3600));
        };
        let when = effective(&self.slots[index]);
        if when > now {
            return Next::Wait(when);
        }
        let slot = &mut self.slots[index];
        slot.due += slot.period;
        if slot.due <= now {
            // Behind (slow line, backoff): skip the missed cycles, staying
            // on the slot's grid.
            let period = slot.period.as_nanos().max(1);
            let missed = (now - slot.due).as_nanos() / period + 1;
            slot.due += Duration::from_nanos((missed * period) as u64);
        }
        Next::Poll(slot.slot)
    }

    /// Until when the line must stay quiet after the last transaction.
    pub fn quiet_until(&self) -> Option<Instant> {
        self.quiet_until
    }

    /// A transaction ended: keep the line quiet for the inter-frame gap.
    pub fn transaction_done(&mut self, now: Instant) {
        self.quiet_until = Some(now + self.settings.gap);
    }

    /// A device's poll cycle ended; `timed_out`: it never answered.
    pub fn cycle_done(&mut self, device: usize, timed_out: bool, now: Instant) {
        let base = self
            .slots
            .iter()
            .filter(|s| s.slot.device == device)
            .map(|s| s.period)
            .min()
            .unwrap_or(Duration::from_secs(1));
        let settings = self.settings;
        let Some(unit) = self.units.get_mut(device) else {
            return;
        };
        if !timed_out {
            *unit = Unit::default();
            return;
        }
        unit.timeouts_in_a_row += 1;
        if unit.timeouts_in_a_row >= settings.backoff_after {
            unit.backoff = if unit.backoff.is_zero() {
                base
            } else {
                (unit.backoff * 2).min(settings.backoff_max)
            }
            .min(settings.backoff_max);
            unit.until = Some(now + unit.backoff);
        }
    }

    /// Whether polls of `device` are suspended at `now`.
    pub fn backed_off(&self, device: usize, now: Instant) -> bool {
        self.units
            .get(device)
            .and_then(|u| u.until)
            .is_some_and(|until| until > now)
    }
}

const PHASE_STEPS: u64 = 10;

/// Where in its period a poll group runs: a stable spread (by `key`, e.g.
/// the device name) over at most one second, in ten steps, so devices
/// with equal periods do not all send at the same instant.
pub fn phase(key: &str, period: Duration) -> Duration {
    // FNV-1a: stable across runs and platforms.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let window = period.min(Duration::from_secs(1)).as_micros() as u64;
    // In ten steps: the devices of a step wake together, which costs far
    // fewer thread wake-ups than one instant per device, while a step is
    // small enough that its answers do not queue behind each other.
    let step = (window / PHASE_STEPS).max(1);
    Duration::from_micros(hash % PHASE_STEPS * step)
}

/// How long after now a poll group is first due: at `phase` past a whole
/// second (or a whole multiple of a shorter `period`) of the wall clock
/// (`since_epoch`). Every line then polls its devices of one phase step
/// at the same instants, so they wake together even when their lines
/// started at different times, and a gateway's polls land at the same
/// offsets within each second from one start to the next. Never more
/// than a second away: a device with a one-hour period is read soon
/// after start, then hourly.
pub fn first_due(phase: Duration, period: Duration, since_epoch: Duration) -> Duration {
    let window = period.min(Duration::from_secs(1)).as_nanos().max(1);
    let into_window = since_epoch.as_nanos() % window;
    let wait = (phase.as_nanos() % window + window - into_window) % window;
    Duration::from_nanos(wait as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            gap: Duration::from_millis(5),
            backoff_after: 2,
            backoff_max: Duration::from_secs(8),
            queue_capacity: 2,
        }
    }

    fn slot(device: usize) -> PollSlot {
        PollSlot { device, group: 0 }
    }

    #[test]
    fn phases_are_stable_and_within_a_second() {
        let p = phase("meter-7", Duration::from_secs(3600));
        assert_eq!(p, phase("meter-7", Duration::from_secs(3600)));
        assert!(p < Duration::from_secs(1));
        assert!(phase("x", Duration::from_millis(10)) < Duration::from_millis(10));
        let spread: std::collections::BTreeSet<_> = (0..100)
            .map(|i| phase(&format!("d{i}"), Duration::from_secs(1)).as_millis() / 100)
            .collect();
        assert!(spread.len() >= 8, "{spread:?}");
    }

    #[test]
    fn commands_go_ahead_of_due_polls() {
        let t0 = Instant::now();
        let mut s = LineScheduler::new(
            settings(),
            vec![(slot(0), Duration::from_secs(1), Duration::ZERO)],
            t0,
        );
        s.push_command("write").unwrap();
        assert_eq!(s.next(t0), Next::Command("write"));
        assert_eq!(s.next(t0), Next::Poll(slot(0)));
        assert_eq!(s.next(t0), Next::Wait(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn full_queue_is_busy() {
        let t0 = Instant::now();
        let mut s: LineScheduler<u8> = LineScheduler::new(settings(), vec![], t0);
        s.push_command(1).unwrap();
        s.push_command(2).unwrap();
        assert_eq!(s.push_command(3), Err(3));
    }

    #[test]
    fn inter_frame_gap_is_kept() {
        let t0 = Instant::now();
        let mut s = LineScheduler::<()>::new(
            settings(),
            vec![
                (slot(0), Duration::from_millis(1), Duration::ZERO),
                (slot(1), Duration::from_millis(1), Duration::ZERO),
            ],
            t0,
        );
        assert_eq!(s.next(t0), Next::Poll(slot(0)));
        s.transaction_done(t0);
        assert_eq!(s.next(t0), Next::Wait(t0 + Duration::from_millis(5)));
        assert_eq!(s.next(t0 + Duration::from_millis(5)), Next::Poll(slot(1)));
    }

    #[test]
    fn late_cycles_are_skipped_not_bunched_and_keep_their_grid() {
        let t0 = Instant::now();
        let period = Duration::from_secs(1);
        let mut s =
            LineScheduler::<()>::new(settings(), vec![(slot(0), period, Duration::ZERO)], t0);
        assert_eq!(s.next(t0), Next::Poll(slot(0)));
        let late = t0 + Duration::from_millis(3500);
        assert_eq!(s.next(late), Next::Poll(slot(0)));
        assert_eq!(s.next(late), Next::Wait(t0 + Duration::from_secs(4)));
        let on_time = t0 + Duration::from_secs(4);
        assert_eq!(s.next(on_time), Next::Poll(slot(0)));
        assert_eq!(s.next(on_time), Next::Wait(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn first_polls_land_on_a_grid_shared_by_every_line() {
        let ms = Duration::from_millis;
        let period = Duration::from_secs(1);
        // Wall clock 12.250 s past the epoch: phase 300 ms is due at 12.300.
        assert_eq!(first_due(ms(300), period, ms(12_250)), ms(50));
        // Phase 200 ms already passed in this second: next second's.
        assert_eq!(first_due(ms(200), period, ms(12_250)), ms(950));
        assert_eq!(first_due(ms(250), period, ms(12_250)), ms(0));
        // Two lines that start 7 ms apart meet at the same instant.
        let t0 = Instant::now();
        let a = t0 + first_due(ms(300), period, ms(12_250));
        let b = t0 + ms(7) + first_due(ms(300), period, ms(12_257));
        assert_eq!(a, b);
        // Longer periods start within the second, on the same grid.
        let hour = Duration::from_secs(3600);
        assert_eq!(first_due(ms(100), hour, ms(1_234_567)), ms(533));
        // Shorter ones within their period.
        assert_eq!(first_due(ms(20), ms(50), ms(1_234_567)), ms(3));
    }

    #[test]
    fn a_unit_that_keeps_timing_out_is_backed_off() {
        let t0 = Instant::now();
        let period = Duration::from_secs(1);
        let mut s = LineScheduler::<()>::new(
            settings(),
            vec![
                (slot(0), period, Duration::ZERO),
                (slot(1), period, Duration::ZERO),
            ],
            t0,
        );
        let mut now = t0;
        // Two failed cycles of device 1 trigger a backoff of one period, then 2, 4, 8 (ceiling), 8.
        for expected in [1u64, 2, 4, 8, 8] {
            s.cycle_done(1, true, now);
            if !s.backed_off(1, now) {
                s.cycle_done(1, true, now);
            }
            assert!(s.backed_off(1, now));
            assert!(!s.backed_off(1, now + Duration::from_secs(expected)));
            assert!(s.backed_off(
                1,
                now + Duration::from_secs(expected) - Duration::from_millis(1)
            ));
            now += Duration::from_secs(expected);
        }
        // Meanwhile device 0 keeps its schedule.
        let mut polled0 = 0;
        let mut t = t0;
        let start = t0 + Duration::from_secs(100);
        s.cycle_done(1, true, start);
        while t < t0 + Duration::from_secs(5) {
            if let Next::Poll(p) = s.next(t) {
                assert_eq!(p.device, 0);
                polled0 += 1;
            }
            t += Duration::from_millis(100);
        }
        assert!(polled0 >= 4, "{polled0}");
        // One success resets the unit.
        s.cycle_done(1, false, start);
        assert!(!s.backed_off(1, start));
    }
}
