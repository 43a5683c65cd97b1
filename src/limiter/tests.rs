use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::*;

fn quota(limit: u32, window_ms: u64) -> Quota {
    Quota {
        limit,
        window: Duration::from_millis(window_ms),
    }
}

/// One request as the server could see it: it arrived somewhere between its admission and its
/// end.
#[derive(Debug, Clone, Copy)]
struct Seen {
    admitted: Instant,
    ended: Instant,
}

/// The most requests a server could count in one interval of length `window`, whatever the
/// arrival of each within `[admitted, ended]`: an interval `[t, t + window)` can hold every
/// request with `ended >= t` and `admitted < t + window`; the worst `t` is one of the ends.
fn worst_window(requests: &[Seen], window: Duration) -> usize {
    requests
        .iter()
        .map(|from| {
            let t = from.ended;
            requests
                .iter()
                .filter(|r| r.ended >= t && r.admitted < t + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// A paused-clock runtime, for property tests that drive the limiter in virtual time.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

/// What each worker does: take a permit, hold it for `hold`, then rest for `rest`.
#[derive(Debug, Clone, Copy)]
struct Step {
    hold: Duration,
    rest: Duration,
}

/// Runs `workers` tasks sharing `steps` (taken in turn) through `limiter`; returns every
/// request with its admission and end.
async fn drive(limiter: Arc<Limiter>, workers: usize, steps: Vec<Step>) -> Vec<Seen> {
    let steps = Arc::new(Mutex::new(steps.into_iter()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (limiter, steps, seen) = (limiter.clone(), steps.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(step) = steps.lock().expect("lock").next() else {
                    return;
                };
                let permit = limiter.acquire().await;
                let admitted = Instant::now();
                tokio::time::sleep(step.hold).await;
                let ended = Instant::now();
                let _ = permit.end();
                seen.lock().expect("lock").push(Seen { admitted, ended });
                tokio::time::sleep(step.rest).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a worker");
    }
    let mut seen = seen.lock().expect("lock").clone();
    seen.sort_by_key(|s| s.admitted);
    seen
}

fn quota_sets() -> Vec<Vec<Quota>> {
    vec![
        vec![quota(3, 100)],
        vec![quota(5, 1000), quota(12, 5000)],
        vec![quota(10, 1000), quota(30, 10_000), quota(60, 60_000)],
        vec![quota(50, 1000), quota(200, 10_000)],
        vec![quota(100, 5000), quota(1000, 180_000)],
    ]
}

fn steps(max_hold_ms: u64, max_rest_ms: u64, len: usize) -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        // Mostly quick answers, some slow; mostly no rest, some pauses between requests.
        (
            prop_oneof![3 => 0..=5u64, 1 => 0..=max_hold_ms],
            prop_oneof![3 => Just(0u64), 1 => 0..=max_rest_ms],
        )
            .prop_map(|(hold, rest)| Step {
                hold: Duration::from_millis(hold),
                rest: Duration::from_millis(rest),
            }),
        1..=len,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn no_interval_of_a_window_ever_sees_more_than_its_quota(
        set in 0..5usize,
        workers in 1..=16usize,
        steps in steps(3_000, 20_000, 260),
    ) {
        let quotas = quota_sets().swap_remove(set);
        let seen = paused_runtime().block_on(drive(Arc::new(Limiter::new(&quotas)), workers, steps));
        for quota in &quotas {
            let worst = worst_window(&seen, quota.window);
            prop_assert!(worst <= quota.limit as usize, "{quota}: {worst} in one window");
        }
    }

    #[test]
    fn a_process_seeded_from_the_previous_ones_requests_keeps_every_window(
        set in 0..5usize,
        workers in 1..=12usize,
        before in steps(2_000, 5_000, 200),
        after in steps(2_000, 5_000, 200),
        stop_after_ms in 0..8_000u64,
        restart_after_ms in 0..3_000u64,
    ) {
        let quotas = quota_sets().swap_remove(set);
        let runtime = paused_runtime();
        let seen = runtime.block_on(async {
            // The first process runs until it is killed; requests still under way then are
            // recorded without an end.
            let first = Arc::new(Limiter::new(&quotas));
            let journal = Arc::new(Mutex::new(Vec::new()));
            let run = tokio::spawn(drive_recording(first, workers, before, journal.clone()));
            tokio::time::sleep(Duration::from_millis(stop_after_ms)).await;
            run.abort();
            let _ = run.await;
            let killed = Instant::now();
            let journal: Vec<Recorded> = journal.lock().expect("lock").clone();
            tokio::time::sleep(Duration::from_millis(restart_after_ms)).await;
            // The next process seeds: an ended request counts from its end, one without an
            // end as if it ended now (it can have arrived no later than the kill).
            let now = Instant::now();
            let ages: Vec<Duration> = journal
                .iter()
                .map(|r| r.ended.map_or(Duration::ZERO, |ended| now.duration_since(ended)))
                .collect();
            let second = Arc::new(Limiter::new(&quotas));
            second.seed(&ages);
            let mut seen: Vec<Seen> = journal
                .iter()
                .map(|r| Seen { admitted: r.admitted, ended: r.ended.unwrap_or(killed) })
                .collect();
            seen.extend(drive(second, workers, after).await);
            seen
        });
        for quota in &quotas {
            let worst = worst_window(&seen, quota.window);
            prop_assert!(worst <= quota.limit as usize, "{quota}: {worst} in one window");
        }
    }
}

/// What a killed process left in its journal: admission, and the end if it came.
#[derive(Debug, Clone, Copy)]
struct Recorded {
    admitted: Instant,
    ended: Option<Instant>,
}

/// Like [`drive`], but writes each admission before the request and its end after it, as the
/// journal does, so that a kill leaves both kinds of rows.
async fn drive_recording(
    limiter: Arc<Limiter>,
    workers: usize,
    steps: Vec<Step>,
    journal: Arc<Mutex<Vec<Recorded>>>,
) {
    let steps = Arc::new(Mutex::new(steps.into_iter()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (limiter, steps, journal) = (limiter.clone(), steps.clone(), journal.clone());
        tasks.spawn(async move {
            loop {
                let Some(step) = steps.lock().expect("lock").next() else {
                    return;
                };
                let permit = limiter.acquire().await;
                let row = {
                    let mut rows = journal.lock().expect("lock");
                    rows.push(Recorded {
                        admitted: Instant::now(),
                        ended: None,
                    });
                    rows.len() - 1
                };
                tokio::time::sleep(step.hold).await;
                journal.lock().expect("lock")[row].ended = Some(Instant::now());
                let _ = permit.end();
                tokio::time::sleep(step.rest).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[tokio::test(start_paused = true)]
async fn a_whole_window_goes_out_at_once() {
    let limiter = Limiter::new(&[quota(100, 5000), quota(1000, 180_000)]);
    let started = Instant::now();
    let permits: Vec<Permit<'_>> = futures_all(&limiter, 100).await;
    assert_eq!(permits.len(), 100);
    assert_eq!(Instant::now(), started, "the first 100 waited");
}

async fn futures_all(limiter: &Limiter, n: usize) -> Vec<Permit<'_>> {
    let mut permits = Vec::new();
    for _ in 0..n {
        permits.push(limiter.acquire().await);
    }
    permits
}

#[tokio::test(start_paused = true)]
async fn a_slot_frees_one_window_and_the_margin_after_its_request_ended() {
    let window = Duration::from_secs(1);
    let limiter = Limiter::new(&[Quota { limit: 2, window }]);
    let started = Instant::now();
    let slow = limiter.acquire().await;
    let quick = limiter.acquire().await;
    let _ = quick.end();
    // The slow request ends 300 ms after it was let go: it may have arrived as late as that.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = slow.end();
    let third = limiter.acquire().await;
    let waited = Instant::now().duration_since(started);
    drop(third);
    // The quick one's slot frees first (1 s + margin after 0); the timer's 1 ms tick may add
    // up to a millisecond, never less.
    let earliest = window + margin(window);
    assert!(waited >= earliest, "started after {waited:?}");
    assert!(waited < earliest + Duration::from_millis(2), "{waited:?}");
    // The fourth needs the slow one's slot: 300 ms + 1 s + margin.
    let fourth_from = Instant::now();
    let fourth = limiter.acquire().await;
    let at = Instant::now().duration_since(started);
    drop(fourth);
    assert!(at >= Duration::from_millis(300) + earliest, "{at:?}");
    assert!(fourth_from <= Instant::now());
}

#[tokio::test(start_paused = true)]
async fn a_request_still_under_way_holds_its_slot_until_it_ends() {
    let limiter = Arc::new(Limiter::new(&[quota(1, 1000)]));
    let hung = limiter.acquire().await;
    let waiter = {
        let limiter = limiter.clone();
        tokio::spawn(async move {
            let permit = limiter.acquire().await;
            drop(permit);
            Instant::now()
        })
    };
    let started = Instant::now();
    // Far past the window: the hung request may arrive any moment, so nothing else starts.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!waiter.is_finished());
    let _ = hung.end();
    let started_at = waiter.await.expect("the waiter");
    assert!(started_at.duration_since(started) >= Duration::from_secs(31));
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_every_acquirer() {
    let limiter = Arc::new(Limiter::new(&[]));
    let started = Instant::now();
    limiter.pause_for(Duration::from_secs(3));
    let _ = limiter.acquire().await;
    assert!(Instant::now().duration_since(started) >= Duration::from_secs(3));
    limiter.pause_for(Duration::from_secs(1));
    limiter.pause_for(Duration::from_millis(10));
    let again = Instant::now();
    let _ = limiter.acquire().await;
    assert!(Instant::now().duration_since(again) >= Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn requests_of_an_earlier_process_count_from_their_end() {
    let limiter = Limiter::new(&[quota(10, 10_000)]);
    // Ten requests ended two seconds ago: the next starts once they leave the window.
    limiter.seed(&[Duration::from_secs(2); 10]);
    // A second seed would count the journal's copy of this limiter's own requests twice.
    limiter.seed(&[Duration::ZERO; 10]);
    let started = Instant::now();
    let _ = limiter.acquire().await;
    let waited = Instant::now().duration_since(started);
    let expected = Duration::from_secs(8) + margin(Duration::from_secs(10));
    assert!(waited >= expected, "waited only {waited:?}");
    assert!(waited < expected + Duration::from_millis(2), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_reseed_counts_what_the_journal_holds_now_not_what_it_held_first() {
    let limiter = Limiter::new(&[quota(10, 10_000)]);
    limiter.seed(&[]);
    // Taken over after standing by: the holder sent ten that ended a second ago.
    limiter.reseed(&[Duration::from_secs(1); 10]);
    let started = Instant::now();
    let _ = limiter.acquire().await;
    let waited = Instant::now().duration_since(started);
    assert!(
        waited >= Duration::from_secs(9) + margin(Duration::from_secs(10)),
        "waited only {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn unlimited_admits_at_once() {
    let limiter = Limiter::new(&[]);
    let started = Instant::now();
    let permits = futures_all(&limiter, 1000).await;
    assert_eq!(permits.len(), 1000);
    assert_eq!(Instant::now(), started);
    assert_eq!(limiter.fastest_finish(1_000_000), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_limiter_keeps_to_the_fastest_schedule() {
    let quotas = [quota(50, 1000), quota(200, 10_000)];
    let limiter = Limiter::new(&quotas);
    let started = Instant::now();
    for _ in 0..800 {
        let _ = limiter.acquire().await.end();
    }
    let took = Instant::now().duration_since(started);
    let fastest = fastest_span(&quotas, 800);
    // The timer rounds each wait up to its next millisecond: 15 waits.
    assert!(took >= fastest, "{took:?} < {fastest:?}");
    assert!(
        took <= fastest + Duration::from_millis(15),
        "{took:?} vs {fastest:?}"
    );
}

#[test]
fn the_fastest_schedule_uses_each_window_whole() {
    let ms = Duration::from_millis;
    let (short, long) = (quota(50, 1000), quota(200, 10_000));
    let (m_short, m_long) = (margin(short.window), margin(long.window));
    // 200 at 50/1s + 200/10s: batches at 0, 1, 2, 3 s (each a margin later than the last).
    assert_eq!(fastest_span(&[short, long], 200), 3 * (ms(1000) + m_short));
    // 800: the long window is spent by 3 s; then 200 more from 10 s, 20 s and 30 s.
    let fastest = fastest_span(&[short, long], 800);
    let bound = ms(33_000);
    assert!(fastest >= bound && fastest < bound + 3 * m_long + 12 * m_short + ms(1));
    // Defaults: 1000 in ten batches of 100, the last at 45 s.
    let defaults = crate::config::default_quotas();
    let thousand = fastest_span(&defaults, 1000);
    assert!(
        thousand >= ms(45_000) && thousand < ms(45_100),
        "{thousand:?}"
    );
    // 100,000: after the first thousand, 99 long windows.
    let campaign = fastest_span(&defaults, 100_000);
    let bound = ms(99 * 180_000 + 45_000);
    assert!(
        campaign >= bound && campaign < bound + ms(3_000),
        "{campaign:?}"
    );
    assert_eq!(fastest_span(&defaults, 0), Duration::ZERO);
    assert_eq!(fastest_span(&defaults, 1), Duration::ZERO);
    assert_eq!(fastest_span(&defaults, 100), Duration::ZERO);
}

#[test]
fn the_fastest_schedule_starts_from_the_windows_as_they_are() {
    let q = quota(10, 10_000);
    let span = q.window + margin(q.window);
    // Ten requests inside, leaving in 1..=10 s: ten more start as they leave, the last at 10 s.
    let window = WindowNow {
        limit: 10,
        span,
        leaves: (1..=10).map(Duration::from_secs).collect(),
    };
    assert_eq!(
        fastest_schedule(std::slice::from_ref(&window), Duration::ZERO, 10),
        Duration::from_secs(10)
    );
    // The eleventh waits for the first of the new ones: 1 s + the window.
    assert_eq!(
        fastest_schedule(std::slice::from_ref(&window), Duration::ZERO, 11),
        Duration::from_secs(1) + span
    );
    // More inside than the limit (seeded from a process with larger quotas): wait for the
    // surplus to leave first.
    let over = WindowNow {
        leaves: (1..=15).map(Duration::from_secs).collect(),
        ..window.clone()
    };
    assert_eq!(
        fastest_schedule(&[over], Duration::ZERO, 1),
        Duration::from_secs(6)
    );
    // A pause comes first.
    assert_eq!(
        fastest_schedule(&[WindowNow::empty(q)], Duration::from_secs(4), 3),
        Duration::from_secs(4)
    );
}

#[tokio::test(start_paused = true)]
async fn the_estimate_counts_what_is_in_the_windows() {
    let quotas = [quota(100, 5000)];
    let limiter = Limiter::new(&quotas);
    assert_eq!(limiter.fastest_finish(100), Duration::ZERO);
    let permits = futures_all(&limiter, 60).await;
    drop(permits);
    // 60 inside: 40 more now, the 41st once the first leaves.
    assert_eq!(limiter.fastest_finish(40), Duration::ZERO);
    let span = Duration::from_secs(5) + margin(Duration::from_secs(5));
    assert_eq!(limiter.fastest_finish(41), span);
}

#[tokio::test(start_paused = true)]
async fn idle_until_names_the_next_start_only_when_time_alone_will_bring_it() {
    let limiter = Arc::new(Limiter::new(&[quota(1, 1000)]));
    assert_eq!(limiter.idle_until(), None);
    let permit = limiter.acquire().await;
    let waiter = {
        let limiter = limiter.clone();
        tokio::spawn(async move { drop(limiter.acquire().await) })
    };
    tokio::task::yield_now().await;
    // The first request is under way: its end, not time, decides.
    assert_eq!(limiter.idle_until(), None);
    let ended = Instant::now();
    let _ = permit.end();
    tokio::task::yield_now().await;
    let span = Duration::from_secs(1) + margin(Duration::from_secs(1));
    assert_eq!(limiter.idle_until(), Some(ended + span));
    waiter.await.expect("the waiter");
    assert_eq!(limiter.idle_until(), None);
}
