//! The circuit breaker for outages: whether CertCentral as a whole can be reached, and when to
//! look again if not. Pure: it is told what requests ended with and what time it is, and answers
//! with what changed; it starts nothing and sleeps nowhere.
//!
//! Three states. `Closed`: requests flow. `Open`: CertCentral is unreachable; nothing is sent
//! until `next_probe`. `Probing`: one probe is out. A probe that fails opens it again with a
//! longer wait (doubling from `first_probe` up to `max_probe`, with equal jitter, so that many
//! runners behind one network do not probe in step); any answer closes it.
//!
//! What opens it: a request that never left (connection refused, DNS, TLS handshake) at once;
//! 5xx answers or lost answers about `trip_after` different orders in a row with no other answer
//! between. The same order failing again and again is that order's problem, not an outage.
//!
//! "Between" is judged by when requests left, not by when their ends are seen: with many
//! requests in flight, the answer to one sent before an outage began can come back after the
//! first failures of the outage. An answer only shows that CertCentral was up when its request
//! arrived, so it clears the failures seen before that request left, and ends an outage only if
//! its request left after the outage began. Otherwise an early failure would drop out of the
//! count, be charged to its order as if it were the order's own problem, and the order would be
//! sent again once CertCentral is back.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

/// How the breaker judges and waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures about this many different orders in a row make an outage.
    pub trip_after: usize,
    /// The wait before the first probe (before jitter).
    pub first_probe: Duration,
    /// The longest wait between probes (before jitter).
    pub max_probe: Duration,
    /// An outage longer than this ends the run.
    pub give_up_after: Duration,
}

impl Policy {
    /// The defaults, with `--give-up-after`.
    pub fn new(give_up_after: Duration) -> Self {
        Self {
            trip_after: 3,
            first_probe: Duration::from_secs(1),
            max_probe: Duration::from_secs(30),
            give_up_after,
        }
    }
}

/// What the end of one request says about CertCentral as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An HTTP answer other than a 5xx failure (a 2xx, a 4xx, a 429 or 503 throttle): it was
    /// there when the request arrived. `sent_at`: when the request left.
    Answered { sent_at: Instant },
    /// A 5xx, or no answer after the request left: about this order, maybe about all. `item_id`:
    /// the item whose request it was (none for a probe).
    Failed { order_id: i64, item_id: Option<i64> },
    /// The request never left: the connection, the name or the TLS handshake failed.
    Unreachable,
}

/// What an observation changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Change {
    /// Nothing worth telling.
    None,
    /// An outage began. `items` are those whose failures made it (their attempts were charged
    /// before it was known to be an outage).
    Tripped { items: Vec<i64> },
    /// A probe failed; the next one is due at the breaker's `next_probe`.
    StillDown,
    /// CertCentral answered again after an outage this long.
    Recovered { lasted: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Closed {
        /// The failures since the last answer that counts, one per order.
        failing: Vec<Failure>,
    },
    Open {
        since: Instant,
        next_probe: Instant,
        failed_probes: u32,
    },
    Probing {
        since: Instant,
        failed_probes: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failure {
    order_id: i64,
    item_id: Option<i64>,
    seen_at: Instant,
}

/// An outage as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub since: Instant,
    /// When the next probe goes out; `None` while one is out.
    pub next_probe: Option<Instant>,
    /// Probes that failed so far.
    pub failed_probes: u32,
}

/// The breaker of one run.
#[derive(Debug)]
pub struct Breaker {
    policy: Policy,
    state: State,
    rng: StdRng,
}

impl Breaker {
    /// A closed breaker; `seed` fixes its jitter.
    pub fn new(policy: Policy, seed: u64) -> Self {
        Self {
            policy,
            state: State::Closed {
                failing: Vec::new(),
            },
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Requests other than probes may start.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// The outage under way, if any.
    pub fn outage(&self) -> Option<Outage> {
        match self.state {
            State::Closed { .. } => None,
            State::Open {
                since,
                next_probe,
                failed_probes,
            } => Some(Outage {
                since,
                next_probe: Some(next_probe),
                failed_probes,
            }),
            State::Probing {
                since,
                failed_probes,
            } => Some(Outage {
                since,
                next_probe: None,
                failed_probes,
            }),
        }
    }

    /// The end of a request that was not a probe.
    pub fn observe(&mut self, signal: Signal, now: Instant) -> Change {
        match (&mut self.state, signal) {
            (State::Closed { failing }, Signal::Answered { sent_at }) => {
                failing.retain(|failure| failure.seen_at > sent_at);
                Change::None
            }
            (State::Closed { failing }, Signal::Failed { order_id, item_id }) => {
                // An order failing again counts once, as of its latest failure: an answer to a
                // request that left between the two does not clear it.
                match failing
                    .iter_mut()
                    .find(|failure| failure.order_id == order_id)
                {
                    Some(failure) => {
                        failure.seen_at = now;
                        failure.item_id = item_id.or(failure.item_id);
                    }
                    None => failing.push(Failure {
                        order_id,
                        item_id,
                        seen_at: now,
                    }),
                }
                if failing.len() < self.policy.trip_after {
                    return Change::None;
                }
                let items = failing
                    .iter()
                    .filter_map(|failure| failure.item_id)
                    .collect();
                self.trip(now);
                Change::Tripped { items }
            }
            (State::Closed { failing }, Signal::Unreachable) => {
                // Failures just before it (timeouts, then refusals) were the outage beginning.
                let items = failing
                    .iter()
                    .filter_map(|failure| failure.item_id)
                    .collect();
                self.trip(now);
                Change::Tripped { items }
            }
            // An answer to a request that left during the outage (the probe's, or one sent
            // after): it is over.
            (
                State::Open { since, .. } | State::Probing { since, .. },
                Signal::Answered { sent_at },
            ) if sent_at >= *since => {
                let lasted = now.saturating_duration_since(*since);
                self.close();
                Change::Recovered { lasted }
            }
            // Stragglers sent before the outage was known, answered or not, say nothing new.
            (State::Open { .. } | State::Probing { .. }, _) => Change::None,
        }
    }

    /// A probe goes out now if one is due and none is out; false (and nothing changes)
    /// otherwise.
    pub fn start_probe(&mut self, now: Instant) -> bool {
        match self.state {
            State::Open {
                since,
                next_probe,
                failed_probes,
            } if next_probe <= now => {
                self.state = State::Probing {
                    since,
                    failed_probes,
                };
                true
            }
            _ => false,
        }
    }

    /// The end of the probe.
    pub fn probe_ended(&mut self, signal: Signal, now: Instant) -> Change {
        match (&self.state, signal) {
            (
                State::Probing {
                    since,
                    failed_probes,
                },
                Signal::Failed { .. } | Signal::Unreachable,
            ) => {
                let (since, failed_probes) = (*since, failed_probes + 1);
                let wait = self.probe_wait(failed_probes);
                self.state = State::Open {
                    since,
                    next_probe: now + wait,
                    failed_probes,
                };
                Change::StillDown
            }
            // Closed by a straggler's answer meanwhile, or the probe answered: as any request.
            _ => self.observe(signal, now),
        }
    }

    /// When the run gives up if CertCentral does not answer before.
    pub fn give_up_at(&self) -> Option<Instant> {
        self.outage()
            .map(|outage| outage.since + self.policy.give_up_after)
    }

    /// The outage has lasted longer than the run may wait.
    pub fn gives_up(&self, now: Instant) -> bool {
        self.give_up_at().is_some_and(|at| at <= now)
    }

    /// When the breaker next needs the dispatcher's attention: a probe or the give-up time.
    pub fn next_wake(&self) -> Option<Instant> {
        let give_up = self.give_up_at();
        match self.state {
            State::Open { next_probe, .. } => give_up.map(|at| at.min(next_probe)),
            _ => give_up,
        }
    }

    fn trip(&mut self, now: Instant) {
        let wait = self.probe_wait(0);
        self.state = State::Open {
            since: now,
            next_probe: now + wait,
            failed_probes: 0,
        };
    }

    fn close(&mut self) {
        self.state = State::Closed {
            failing: Vec::new(),
        };
    }

    /// The wait before the probe after `failed_probes` failures: the doubling base, capped, of
    /// which a random half is waited on top of the other half.
    fn probe_wait(&mut self, failed_probes: u32) -> Duration {
        let base = self
            .policy
            .first_probe
            .saturating_mul(1u32 << failed_probes.min(16))
            .min(self.policy.max_probe);
        let half = base / 2;
        half + half.mul_f64(self.rng.random::<f64>())
    }
}

#[cfg(test)]
mod tests;
