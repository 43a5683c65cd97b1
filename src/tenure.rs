//! Whether this process may still send for an account it holds a lease on: when the lease was
//! last confirmed, by this host's monotonic clock.
//!
//! The fencing check in the journal stops a new `in_flight` mark once the lease is another's,
//! but a send already marked may wait in the limiter; a process frozen (SIGSTOP, a paused VM)
//! or cut off past its lease must not let it leave when it wakes, before it has even learnt
//! that the lease was taken. Each send asks [`Tenure::fresh`] right before it leaves: the
//! lease is trusted for two thirds of its length after the last renewal was sent (renewals go
//! every third), so one late renewal is tolerated and a long stop is not.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lease's last confirmation, shared by the renewal task and the senders.
#[derive(Debug, Clone)]
pub struct Tenure {
    confirmed: Arc<Mutex<Instant>>,
    trusted_for: Duration,
}

impl Tenure {
    /// A lease of `lease`, confirmed by a renewal (or the taking) sent at `at`.
    pub fn new(lease: Duration, at: Instant) -> Self {
        Self {
            confirmed: Arc::new(Mutex::new(at)),
            trusted_for: lease * 2 / 3,
        }
    }

    /// A renewal sent at `at` succeeded.
    pub fn confirm(&self, at: Instant) {
        if let Ok(mut confirmed) = self.confirmed.lock() {
            *confirmed = (*confirmed).max(at);
        }
    }

    /// Whether a request may leave now.
    pub fn fresh(&self) -> bool {
        self.confirmed
            .lock()
            .map(|confirmed| confirmed.elapsed() < self.trusted_for)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_trusted_for_two_thirds_of_its_length_after_its_last_renewal() {
        let lease = Duration::from_millis(300);
        let tenure = Tenure::new(lease, Instant::now());
        assert!(tenure.fresh());
        std::thread::sleep(Duration::from_millis(230));
        assert!(!tenure.fresh(), "trusted past two thirds of the lease");
        tenure.confirm(Instant::now());
        assert!(tenure.fresh(), "a renewal did not count");
    }
}
