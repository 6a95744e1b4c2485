//! Realistic workloads: reservations whose follow-ups (associations, cancellations) arrive
//! interleaved with other reservations' events, plus retries (duplicates) and every kind of
//! reject. Deterministic for a given seed.

use std::collections::VecDeque;

use compact_str::format_compact;

use crate::core::event::{Event, EventKind, ReservationNo};

/// SplitMix64: small, fast, and good enough to shuffle a workload deterministically.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Generates `count` events from `seed`.
pub fn generate(count: usize, seed: u64) -> Vec<Event> {
    Generator::new(seed).take(count).collect()
}

/// An endless stream of realistic events.
pub struct Generator {
    rng: Rng,
    next_reservation: u64,
    next_event: u64,
    users: u64,
    /// Per reservation, the events still to come, in order.
    pending: Vec<VecDeque<Event>>,
    /// Recently emitted events, for retries.
    recent: VecDeque<Event>,
    seed: u64,
}

impl Generator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Generator {
            rng: Rng::new(seed),
            next_reservation: 0,
            next_event: 0,
            users: 50_000,
            pending: Vec::new(),
            recent: VecDeque::with_capacity(1024),
            seed,
        }
    }

    fn event(&mut self, kind: EventKind, no: &ReservationNo, user: &str) -> Event {
        self.next_event += 1;
        let target = (kind == EventKind::Association)
            .then(|| format_compact!("device-{}", self.rng.below(1_000_000)));
        Event {
            kind,
            event_id: format_compact!("evt-{:x}-{}", self.seed, self.next_event),
            reservation_no: no.clone(),
            user_id: user.into(),
            target,
            ts: Some(1_700_000_000_000 + self.next_event as i64),
        }
    }

    fn user(&mut self) -> String {
        format!("user-{}", self.rng.below(self.users))
    }

    /// A new reservation and the story of its follow-ups.
    fn start(&mut self) -> Event {
        self.next_reservation += 1;
        let no = ReservationNo(format_compact!(
            "R-{:x}-{:07}",
            self.seed & 0xffff,
            self.next_reservation
        ));
        let user = self.user();
        let first = self.event(EventKind::Reservation, &no, &user);
        let mut story = VecDeque::new();
        let roll = self.rng.below(100);
        let other = self.user();
        match roll {
            // A user who is not the owner tries first (user_mismatch), then the owner.
            0..=4 => {
                story.push_back(self.event(EventKind::Association, &no, &other));
                story.push_back(self.event(EventKind::Association, &no, &user));
            }
            // A double submission of the reservation (already_reserved).
            5..=9 => {
                story.push_back(self.event(EventKind::Reservation, &no, &user));
                story.push_back(self.event(EventKind::Association, &no, &user));
            }
            // Cancelled; sometimes a late association follows (cancelled).
            10..=29 => {
                story.push_back(self.event(EventKind::Cancellation, &no, &user));
                if self.rng.chance(20) {
                    story.push_back(self.event(EventKind::Association, &no, &user));
                }
            }
            // Associated; sometimes a late cancellation follows (already_associated).
            30..=84 => {
                story.push_back(self.event(EventKind::Association, &no, &user));
                if self.rng.chance(10) {
                    story.push_back(self.event(EventKind::Cancellation, &no, &user));
                }
            }
            // Reserved and left there.
            _ => {}
        }
        if !story.is_empty() {
            self.pending.push(story);
        }
        first
    }

    /// An association for a reservation that does not exist (not_reserved).
    fn orphan(&mut self) -> Event {
        let no = ReservationNo(format_compact!("R-missing-{}", self.rng.below(1 << 40)));
        let user = self.user();
        self.event(EventKind::Association, &no, &user)
    }
}

impl Iterator for Generator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let roll = self.rng.below(100);
        let event = if roll < 3 && !self.recent.is_empty() {
            // A client retry: the same event again.
            let i = self.rng.below(self.recent.len() as u64) as usize;
            self.recent[i].clone()
        } else if roll < 5 {
            self.orphan()
        } else if roll < 55 && !self.pending.is_empty() {
            let i = self.rng.below(self.pending.len() as u64) as usize;
            let story = &mut self.pending[i];
            let e = story.pop_front().expect("stories are never empty");
            if story.is_empty() {
                self.pending.swap_remove(i);
            }
            e
        } else {
            self.start()
        };
        if self.recent.len() == self.recent.capacity() {
            self.recent.pop_front();
        }
        self.recent.push_back(event.clone());
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::reference::Model;

    #[test]
    fn deterministic_and_covers_every_outcome() {
        let a = generate(20_000, 7);
        assert_eq!(a, generate(20_000, 7));
        assert_ne!(a, generate(20_000, 8));
        let m = Model::run(&a);
        for reason in [
            "not_reserved",
            "already_reserved",
            "user_mismatch",
            "already_associated",
            "cancelled",
        ] {
            assert!(
                m.rejects.get(reason).copied().unwrap_or(0) > 0,
                "no {reason} in workload"
            );
        }
        assert!(m.duplicates > 0);
        for state in ["reserved", "associated", "cancelled"] {
            assert!(m.states.values().any(|s| s.state == state), "no {state}");
        }
    }
}
