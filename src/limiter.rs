//! The rate limiter: every quota at once, as rolling windows, plus the pause every worker waits
//! out after a 429 or 503. It does not know what is sent.
//!
//! Each quota "N per W" keeps an exact log of the last N start times: a request may start only
//! when the oldest of them is more than W (plus a small margin for the time between admission
//! and the request reaching the server) ago. In front of the log, governor's GCRA spreads
//! starts evenly at N/W with a short burst, so the account sees a steady stream instead of N
//! requests in the first instant of every window.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex as SyncMutex;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use tokio::time::Instant;

use crate::config::Quota;

/// governor on tokio's clock, so paused-time tests drive it too.
#[derive(Debug, Clone, Copy, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        Instant::now().into_std()
    }
}

type Smoother =
    governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

struct Window {
    quota: Quota,
    margin: Duration,
    starts: VecDeque<Instant>,
    smoother: Option<Smoother>,
}

impl Window {
    fn new(quota: Quota) -> Self {
        let margin = (quota.window / 100).max(Duration::from_millis(10));
        let burst = (quota.limit / 5).max(1);
        let smoother = NonZeroU32::new(burst).and_then(|burst| {
            let period = quota.window.checked_div(quota.limit)?;
            Some(governor::RateLimiter::direct_with_clock(
                governor::Quota::with_period(period)?.allow_burst(burst),
                TokioClock,
            ))
        });
        Self {
            quota,
            margin,
            starts: VecDeque::with_capacity(quota.limit as usize),
            smoother,
        }
    }

    /// When the log lets the next request start.
    fn log_allows_at(&mut self, now: Instant) -> Instant {
        let span = self.quota.window + self.margin;
        while self
            .starts
            .front()
            .is_some_and(|oldest| now.duration_since(*oldest) >= span)
        {
            self.starts.pop_front();
        }
        if self.starts.len() < self.quota.limit as usize {
            now
        } else {
            self.starts.front().map_or(now, |oldest| *oldest + span)
        }
    }
}

/// Shared by every worker of a run, and by the reconciliation lookups.
pub struct Limiter {
    windows: tokio::sync::Mutex<Vec<Window>>,
    paused_until: SyncMutex<Option<Instant>>,
}

impl Limiter {
    pub fn new(quotas: &[Quota]) -> Self {
        Self {
            windows: tokio::sync::Mutex::new(quotas.iter().copied().map(Window::new).collect()),
            paused_until: SyncMutex::new(None),
        }
    }

    /// Waits until a request may start now, and counts it.
    pub async fn acquire(&self) {
        // One waiter at a time, in arrival order; the others queue on the mutex.
        let mut windows = self.windows.lock().await;
        loop {
            let now = Instant::now();
            if let Some(until) = self.paused_until().filter(|until| *until > now) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            let ready_at = windows
                .iter_mut()
                .map(|window| window.log_allows_at(now))
                .max()
                .unwrap_or(now);
            if ready_at > now {
                tokio::time::sleep_until(ready_at).await;
                continue;
            }
            let smoothed_wait = windows
                .iter()
                .filter_map(|window| window.smoother.as_ref())
                .filter_map(|smoother| smoother.check().err())
                .map(|not_until| not_until.wait_time_from(TokioClock.now()))
                .max();
            if let Some(wait) = smoothed_wait {
                tokio::time::sleep(wait).await;
                continue;
            }
            for window in windows.iter_mut() {
                window.starts.push_back(now);
            }
            return;
        }
    }

    /// The longest quota window, the span of history that matters.
    pub fn longest_window(&self) -> Option<Duration> {
        self.windows
            .try_lock()
            .ok()
            .and_then(|windows| windows.iter().map(|w| w.quota.window + w.margin).max())
    }

    /// Counts requests an earlier process made, `ages` ago (any order), so a resume right after
    /// a stop does not start with empty windows.
    pub async fn seed(&self, ages: &[Duration]) {
        let now = Instant::now();
        let mut starts: Vec<Instant> = ages
            .iter()
            .filter_map(|age| now.checked_sub(*age))
            .collect();
        starts.sort();
        let mut windows = self.windows.lock().await;
        for window in windows.iter_mut() {
            let span = window.quota.window + window.margin;
            for start in &starts {
                if now.duration_since(*start) < span {
                    window.starts.push_back(*start);
                }
            }
            while window.starts.len() > window.quota.limit as usize {
                window.starts.pop_front();
            }
            // Keep the log in order with what is already there.
            window.starts.make_contiguous().sort();
        }
    }

    /// Every acquirer waits at least `wait` from now (a 429 or 503 was answered).
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self
            .paused_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    fn paused_until(&self) -> Option<Instant> {
        *self
            .paused_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Acquires `total` permits from `tasks` concurrent tasks; returns the sorted start times.
    async fn admitted(limiter: Arc<Limiter>, tasks: usize, total: usize) -> Vec<Instant> {
        let starts = Arc::new(SyncMutex::new(Vec::new()));
        let mut handles = Vec::new();
        for task in 0..tasks {
            let limiter = limiter.clone();
            let starts = starts.clone();
            let share = total / tasks + usize::from(task < total % tasks);
            handles.push(tokio::spawn(async move {
                for _ in 0..share {
                    limiter.acquire().await;
                    starts.lock().expect("lock").push(Instant::now());
                }
            }));
        }
        for handle in handles {
            handle.await.expect("task");
        }
        let mut starts = starts.lock().expect("lock").clone();
        starts.sort();
        starts
    }

    fn most_in_any_window(starts: &[Instant], window: Duration) -> usize {
        let mut most = 0;
        let mut first = 0;
        for (last, at) in starts.iter().enumerate() {
            while at.duration_since(starts[first]) >= window {
                first += 1;
            }
            most = most.max(last - first + 1);
        }
        most
    }

    #[tokio::test(start_paused = true)]
    async fn no_rolling_window_ever_holds_more_than_its_quota() {
        let quotas = [
            Quota {
                limit: 30,
                window: Duration::from_secs(1),
            },
            Quota {
                limit: 100,
                window: Duration::from_secs(5),
            },
        ];
        let started = Instant::now();
        let starts = admitted(Arc::new(Limiter::new(&quotas)), 8, 400).await;
        for quota in quotas {
            assert!(
                most_in_any_window(&starts, quota.window) <= quota.limit as usize,
                "{quota} exceeded"
            );
        }
        // 400 at 100/5s needs just under 20 s; the limiter must not be much slower than that.
        let elapsed = starts.last().expect("some").duration_since(started);
        assert!(elapsed < Duration::from_secs(21), "took {elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_acquirer() {
        let limiter = Arc::new(Limiter::new(&[]));
        let started = Instant::now();
        limiter.pause_for(Duration::from_secs(3));
        let starts = admitted(limiter.clone(), 4, 8).await;
        assert!(starts[0].duration_since(started) >= Duration::from_secs(3));
        limiter.pause_for(Duration::from_secs(1));
        limiter.pause_for(Duration::from_millis(10));
        let again = Instant::now();
        limiter.acquire().await;
        assert!(Instant::now().duration_since(again) >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_of_an_earlier_process_count_against_the_window() {
        let quota = Quota {
            limit: 10,
            window: Duration::from_secs(10),
        };
        let limiter = Limiter::new(&[quota]);
        // Ten requests two seconds ago: the next may start only once they leave the window.
        limiter.seed(&[Duration::from_secs(2); 10]).await;
        let started = Instant::now();
        limiter.acquire().await;
        let waited = Instant::now().duration_since(started);
        assert!(waited >= Duration::from_secs(8), "waited only {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_admits_at_once() {
        let started = Instant::now();
        let starts = admitted(Arc::new(Limiter::new(&[])), 4, 1000).await;
        assert_eq!(starts.len(), 1000);
        assert_eq!(
            starts.last().expect("some").duration_since(started),
            Duration::ZERO
        );
    }
}
