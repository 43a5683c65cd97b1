//! The rate limiter: every quota at once, as rolling windows, plus the pause every worker waits
//! out after a 429 or 503. It does not know what is sent.
//!
//! # The rule
//! A quota "N per W" means that in *every* interval of length W, CertCentral sees at most N
//! requests arrive. A request may start as soon as every quota has room: fewer than N of the
//! requests it counts are still inside the window. There is no smoothing: a window's whole
//! allowance may be used at once, so a campaign takes no longer than the windows force.
//!
//! # Why not a token bucket
//! A GCRA / token bucket of N per W (the `governor` crate's model, which this limiter was
//! built on before) refills continuously: after a burst of N it admits another start W/N
//! later, N + 1 inside one W, so it cannot stand for a rolling window. Put in front of the
//! windows it can only delay what they allow (any sequence with at most N starts in every W
//! also conforms to the bucket of burst N and rate N/W, so a bucket that admits every such
//! sequence never binds, and one that binds costs throughput). Hence the exact windows alone.
//!
//! # The margin, and why it is all there is
//! The server counts *arrival* times; we only know when we let a request go (admission) and
//! when its answer came back (the end). Arrival lies between the two. So a request counts in a
//! window from its admission until `W + margin` after its **end**, not after its admission:
//! - A later request arrives no earlier than its own admission. An earlier request arrived no
//!   later than its end. Counting the earlier one until `end + W` therefore keeps every pair of
//!   arrivals that are N requests apart at least W apart on the server, however long the
//!   earlier request took to connect, queue or arrive. This is the whole allowance for the gap
//!   between admission and arrival, and it costs one request's round trip per window, not a
//!   guessed constant. A [`Permit`] is held for as long as its request may still arrive: drop
//!   it when the answer (or the failure) is in.
//! - `margin` = 1 ms + W / 10,000 covers the clocks. 1 ms is the granularity of the timer we
//!   sleep on and of the journal's timestamps, and it keeps two arrivals exactly W apart out of
//!   one window on a server that counts closed intervals at millisecond resolution (a server
//!   that truncates to whole seconds needs nothing: `floor(b) - floor(a) >= W` when
//!   `b - a >= W`). W / 10,000 (100 ppm) covers the server's clock running at another rate
//!   than ours over the window: 0.5 ms at 5 s, 18 ms at 3 min.
//!
//! Until a request has ended, it holds its slot in every window; a request that waits for a
//! slot held by a request still under way waits for that request's end.
//!
//! # Across processes
//! [`Limiter::seed`] counts the requests a previous process (or another command) recorded in
//! the journal, at the time each ended, so a run started right after another begins with the
//! windows as the server sees them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex as SyncMutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::Quota;

/// How much longer than its window a request counts, after its end: clock granularity and the
/// difference of clock rates (see the module documentation).
pub fn margin(window: Duration) -> Duration {
    Duration::from_millis(1) + window / 10_000
}

/// One quota's window: when each ended request still inside it leaves.
struct Window {
    limit: usize,
    /// The window plus its margin.
    span: Duration,
    leaves_at: BinaryHeap<Reverse<Instant>>,
}

impl Window {
    fn new(quota: Quota) -> Self {
        Self {
            limit: usize::try_from(quota.limit).unwrap_or(usize::MAX),
            span: quota.window + margin(quota.window),
            leaves_at: BinaryHeap::new(),
        }
    }

    fn forget_left(&mut self, now: Instant) {
        while self.leaves_at.peek().is_some_and(|Reverse(at)| *at <= now) {
            self.leaves_at.pop();
        }
    }

    /// When this window has room for one more, with `open` requests not ended yet: now, at a
    /// known instant, or only once one of the open ones has ended (`None`).
    fn room_at(&self, open: usize, now: Instant) -> Option<Instant> {
        let inside = open + self.leaves_at.len();
        if inside < self.limit {
            return Some(now);
        }
        if open >= self.limit {
            return None;
        }
        // The (inside - limit + 1)-th earliest to leave makes room; usually the first.
        let nth = inside - self.limit;
        if nth == 0 {
            return self.leaves_at.peek().map(|Reverse(at)| *at);
        }
        let mut times: Vec<Instant> = self.leaves_at.iter().map(|Reverse(at)| *at).collect();
        let (_, at, _) = times.select_nth_unstable(nth);
        Some(*at)
    }
}

/// What stands between the next request and its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Time alone: it may start at this instant.
    Until(Instant),
    /// A request under way must end first (then its slot frees one window later).
    ForAnEnd,
}

struct State {
    windows: Vec<Window>,
    /// Admitted requests whose permit is still held: they count in every window.
    open: usize,
    paused_until: Option<Instant>,
    /// What the acquirer at the head of the queue waits for, if it waits.
    head_waits: Option<Wait>,
}

impl State {
    fn wait(&mut self, now: Instant) -> Option<Wait> {
        let mut until = self.paused_until.filter(|at| *at > now);
        for window in &mut self.windows {
            window.forget_left(now);
            match window.room_at(self.open, now) {
                None => return Some(Wait::ForAnEnd),
                Some(at) if at > now => until = Some(until.map_or(at, |u| u.max(at))),
                Some(_) => {}
            }
        }
        until.map(Wait::Until)
    }

    fn end_one(&mut self, now: Instant) {
        self.open = self.open.saturating_sub(1);
        for window in &mut self.windows {
            window.leaves_at.push(Reverse(now + window.span));
        }
    }
}

/// Shared by every worker of a run, the reconciliation lookups, and every other request a
/// command makes.
pub struct Limiter {
    state: SyncMutex<State>,
    /// Acquirers take turns in arrival order; only the head one looks at the windows.
    queue: tokio::sync::Mutex<()>,
    /// Signalled when a request ends (its slot's release time becomes known) or on a pause.
    changed: Notify,
    seeded: AtomicBool,
    quotas: Vec<Quota>,
}

/// Leave to start one request, counted in every quota. Hold it until the request has ended
/// (answer or failure): the request counts in each window until one window after that.
#[must_use = "hold the permit until the request has ended; dropping it at once ends the request"]
pub struct Permit<'a> {
    limiter: &'a Limiter,
    admitted_at: SystemTime,
    ended: bool,
}

/// When a request was admitted and when it ended, on the wall clock, for the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub admitted_at: SystemTime,
    pub ended_at: SystemTime,
}

impl Permit<'_> {
    /// The request has ended: its slots start to count down.
    pub fn end(mut self) -> Timing {
        self.ended = true;
        self.limiter.end_one();
        Timing {
            admitted_at: self.admitted_at,
            ended_at: SystemTime::now(),
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.limiter.end_one();
        }
    }
}

/// Clears what the head of the queue waits for when it leaves the queue, admitted or not (an
/// acquire abandoned by a stopping run).
struct HeadOfQueue<'a>(&'a Limiter);

impl Drop for HeadOfQueue<'_> {
    fn drop(&mut self) {
        self.0.lock().head_waits = None;
    }
}

impl Limiter {
    pub fn new(quotas: &[Quota]) -> Self {
        Self {
            state: SyncMutex::new(State {
                windows: quotas.iter().copied().map(Window::new).collect(),
                open: 0,
                paused_until: None,
                head_waits: None,
            }),
            queue: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
            seeded: AtomicBool::new(false),
            quotas: quotas.to_vec(),
        }
    }

    pub fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until a request may start now, and counts it in every quota.
    pub async fn acquire(&self) -> Permit<'_> {
        // One waiter at a time, in arrival order; the others queue on the mutex.
        let _turn = self.queue.lock().await;
        let _head = HeadOfQueue(self);
        loop {
            // Created before looking, so an end between the look and the wait is not missed.
            let changed = self.changed.notified();
            let wait = {
                let mut state = self.lock();
                let now = Instant::now();
                let wait = state.wait(now);
                state.head_waits = wait;
                if wait.is_none() {
                    state.open += 1;
                    return Permit {
                        limiter: self,
                        admitted_at: SystemTime::now(),
                        ended: false,
                    };
                }
                wait
            };
            match wait {
                Some(Wait::Until(at)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = changed => {}
                    }
                }
                _ => changed.await,
            }
        }
    }

    fn end_one(&self) {
        self.lock().end_one(Instant::now());
        self.changed.notify_waiters();
    }

    /// The longest quota window plus its margin: how far back the journal matters.
    pub fn longest_window(&self) -> Option<Duration> {
        self.lock().windows.iter().map(|w| w.span).max()
    }

    /// Whether [`Limiter::seed`] has been called: a later call would count nothing.
    pub fn is_seeded(&self) -> bool {
        self.seeded.load(Ordering::SeqCst)
    }

    /// Counts requests that ended `ended_ago` (any order) before now, recorded by an earlier
    /// process or command, so that the windows start as the server sees them. Only the first
    /// call counts: after it, the journal also holds what this limiter admitted itself.
    pub fn seed(&self, ended_ago: &[Duration]) {
        if self.seeded.swap(true, Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let mut state = self.lock();
        for ago in ended_ago {
            let Some(ended) = now.checked_sub(*ago) else {
                continue;
            };
            for window in &mut state.windows {
                let leaves = ended + window.span;
                if leaves > now {
                    window.leaves_at.push(Reverse(leaves));
                }
            }
        }
    }

    /// Counts from scratch the requests the journal recorded, for a process that has just taken
    /// an account's lease: its first count is as old as its wait as a standby, and the holder it
    /// waited for sent meanwhile. Only while none of its own requests is under way (each that
    /// ended is in the journal, so nothing is lost by forgetting what this limiter counted).
    pub fn reseed(&self, ended_ago: &[Duration]) {
        {
            let mut state = self.lock();
            debug_assert_eq!(state.open, 0, "reseeded with requests under way");
            for window in &mut state.windows {
                window.leaves_at.clear();
            }
        }
        self.seeded.store(false, Ordering::SeqCst);
        self.seed(ended_ago);
        self.changed.notify_waiters();
    }

    /// Every acquirer waits at least `wait` from now (a 429 or 503 was answered).
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        {
            let mut state = self.lock();
            if state.paused_until.is_none_or(|current| current < until) {
                state.paused_until = Some(until);
            }
        }
        self.changed.notify_waiters();
    }

    /// When the next request could start if nothing but time passed: `Some` only while an
    /// acquirer waits for the windows (or a pause) and no admitted request is still under way.
    /// For a driver of virtual time (the benchmark's paused-clock campaign).
    pub fn idle_until(&self) -> Option<Instant> {
        let state = self.lock();
        match state.head_waits {
            Some(Wait::Until(at)) if state.open == 0 => Some(at),
            _ => None,
        }
    }

    /// How long from now until the last of `count` more requests can start, at the quotas and
    /// with the windows as they are: the fastest schedule, if every request ended as it started.
    pub fn fastest_finish(&self, count: u64) -> Duration {
        let mut state = self.lock();
        let now = Instant::now();
        let not_before = state
            .paused_until
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        let open = state.open;
        let windows: Vec<WindowNow> = state
            .windows
            .iter_mut()
            .map(|window| {
                window.forget_left(now);
                let mut leaves: Vec<Duration> = window
                    .leaves_at
                    .iter()
                    .map(|Reverse(at)| at.saturating_duration_since(now))
                    .collect();
                // A request under way is taken to end now.
                leaves.extend(std::iter::repeat_n(window.span, open));
                leaves.sort_unstable();
                WindowNow {
                    limit: window.limit,
                    span: window.span,
                    leaves,
                }
            })
            .collect();
        fastest_schedule(&windows, not_before, count)
    }
}

/// One window as the schedule sees it: its limit, its span (window and margin), and when each
/// request inside it leaves, from now, in order.
#[derive(Debug, Clone)]
pub struct WindowNow {
    pub limit: usize,
    pub span: Duration,
    pub leaves: Vec<Duration>,
}

impl WindowNow {
    /// An empty window for `quota`, with the limiter's margin.
    pub fn empty(quota: Quota) -> Self {
        Self {
            limit: usize::try_from(quota.limit).unwrap_or(usize::MAX),
            span: quota.window + margin(quota.window),
            leaves: Vec::new(),
        }
    }
}

/// The fastest schedule the windows allow: when (from now) the last of `count` requests can
/// start, if each starts as soon as every window has room, none before `not_before`, and each
/// ends as it starts. Greedy is optimal here: starting a request later never lets a later one
/// start sooner. Time is O(count × windows).
pub fn fastest_schedule(windows: &[WindowNow], not_before: Duration, count: u64) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    // Per window, the leave times of the last `limit` requests (inside now, then scheduled),
    // as a ring: the next request waits for the oldest of them.
    let mut rings: Vec<(std::collections::VecDeque<Duration>, usize, Duration)> = windows
        .iter()
        .filter(|w| w.limit > 0)
        .map(|w| {
            let skip = w.leaves.len().saturating_sub(w.limit);
            (w.leaves[skip..].iter().copied().collect(), w.limit, w.span)
        })
        .collect();
    let mut at = not_before;
    for _ in 0..count {
        for (ring, limit, _) in &rings {
            if ring.len() >= *limit
                && let Some(oldest) = ring.front()
            {
                at = at.max(*oldest);
            }
        }
        for (ring, limit, span) in &mut rings {
            if ring.len() >= *limit {
                ring.pop_front();
            }
            ring.push_back(at + *span);
        }
    }
    at
}

/// The fastest schedule for `count` requests at `quotas` with empty windows.
pub fn fastest_span(quotas: &[Quota], count: u64) -> Duration {
    let windows: Vec<WindowNow> = quotas.iter().copied().map(WindowNow::empty).collect();
    fastest_schedule(&windows, Duration::ZERO, count)
}

#[cfg(test)]
mod tests;
