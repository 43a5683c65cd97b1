//! The 100,000-order campaign at the default quotas, in virtual time: five hours of
//! `--rate 100/5s --rate 1000/3m` in a minute or so.
//!
//! Everything is the real thing except the clock: the runner, the limiter, the SQLite journal
//! (one planned run of every order of the manifest), the HTTP client, and the simulator
//! enforcing the same quotas on loopback, all on one current-thread tokio runtime whose clock is
//! paused. tokio's own auto-advance cannot be used: it jumps to the next timer whenever the
//! runtime waits, and the runtime waits on SQLite's thread too. So a blocking task keeps
//! auto-advance off for the whole run, and a driver moves the clock itself, only when nothing
//! but time can move the campaign on: the limiter has a request waiting for its windows and no
//! request under way ([`Limiter::idle_until`]). It then moves the clock to that instant, in two
//! steps (to a few milliseconds before, then to it), so that connections the simulator closes
//! on its idle timers are seen closed before the next request picks one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant as RealInstant};

use reissuer::config::Quota;
use reissuer::journal::{ItemState, Journal, NewRun};
use reissuer::limiter::Limiter;
use reissuer::manifest::{self, Row};
use reissuer::runner::{self, Deps, RunnerOptions};
use reissuer::simulator::{Scenario, SimulatorHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const KEY: &str = "virtual-time-key";

/// What the campaign came to.
pub struct Campaign {
    pub orders: u64,
    /// From the first reissue's arrival at the simulator to the last one's, in virtual time.
    pub span: Duration,
    pub accepted: usize,
    pub distinct: usize,
    pub refused: usize,
    /// Requests the simulator received that were not reissues (reconciliation lookups).
    pub other_requests: usize,
    /// The most arrivals the simulator saw in one interval of each quota's window.
    pub worst: Vec<(Quota, usize)>,
    /// Times the driver moved the clock to the limiter's next start, and times it had to
    /// nudge it with nothing waiting at the limiter (should be none).
    pub advances: u64,
    pub nudges: u64,
    pub summary: String,
    /// Wall-clock time: planning, then the campaign.
    pub planning: Duration,
    pub sending: Duration,
}

/// Plans `csv` (every row valid) into a journal in `work` and sends it at `quotas` to a
/// simulator enforcing the same, in virtual time.
pub fn campaign(csv: &Path, work: &Path, quotas: &[Quota]) -> Campaign {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a paused-clock runtime");
    runtime.block_on(run(csv, work, quotas))
}

async fn run(csv: &Path, work: &Path, quotas: &[Quota]) -> Campaign {
    let sim = reissuer::simulator::start_on_loopback(Scenario {
        api_key: Some(KEY.to_owned()),
        quotas: quotas.to_vec(),
        ..Scenario::default()
    })
    .await
    .expect("the simulator starts");
    let journal = Journal::open(&work.join("virtual.db"))
        .await
        .expect("open the journal");
    let began = RealInstant::now();
    let (run_id, orders) = plan(csv, &journal, &sim.base_url()).await;
    let planning = began.elapsed();
    // The clock stops only now: on a paused clock an idle runtime jumps to its next timer, and
    // opening the journal (migrations on SQLite's own thread) would see its pool time out.
    tokio::time::pause();
    let base = Instant::now();

    let limiter = Arc::new(Limiter::new(quotas));
    let key = reissuer::secret::ApiKey::new(KEY).expect("a key");
    let options = RunnerOptions {
        concurrency: 10,
        max_attempts: 5,
        resend_uncertain: false,
        force: false,
        drain_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(60),
        give_up_after: Duration::from_secs(15 * 60),
        settle: Duration::from_secs(10 * 60),
    };
    // On loopback: no proxy in the environment may see the simulator's traffic.
    let network = reissuer::api::Network {
        trust: reissuer::api::Trust::load(None).expect("the system's trust store"),
        direct: true,
    };
    let client =
        reissuer::api::Client::new(&sim.base_url(), &key, options.request_timeout, 10, &network)
            .expect("a client");
    let done = Arc::new(AtomicBool::new(false));
    let driver = tokio::spawn(drive_the_clock(limiter.clone(), done.clone(), base));
    let began = RealInstant::now();
    let summary = runner::run(
        run_id,
        &options,
        Deps {
            journal: &journal,
            client,
            limiter,
            events: None,
        },
        CancellationToken::new(),
    )
    .await
    .expect("the run");
    let sending = began.elapsed();
    done.store(true, Ordering::SeqCst);
    let (advances, nudges) = driver.await.expect("the driver");
    let summary = format!(
        "{} of {orders} succeeded, {} requests",
        summary.counts.get(ItemState::Succeeded),
        summary.requests
    );
    journal.close().await;
    let campaign = measure(&sim, quotas, orders, summary, advances, nudges);
    sim.shutdown().await;
    Campaign {
        planning,
        sending,
        ..campaign
    }
}

/// Every row of the manifest as one run, as `run` would plan it.
async fn plan(csv: &Path, journal: &Journal, base_url: &str) -> (i64, u64) {
    let mut planner = journal
        .plan_run(&NewRun {
            manifest: Some(csv.display().to_string()),
            base_url: base_url.to_owned(),
            account_id: Some(reissuer::simulator::DEFAULT_ACCOUNT_ID as i64),
            options: serde_json::json!({"rates": ["100/5s", "1000/3m"], "virtual_time": true}),
            force: false,
        })
        .await
        .expect("plan a run");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Row>(1024);
    let path = csv.to_owned();
    let scanning = tokio::task::spawn_blocking(move || {
        let options = manifest::LoadOptions {
            defaults: Vec::new(),
            allow_cn_mismatch: false,
            today: time::OffsetDateTime::now_utc().date(),
            fill_from_order: false,
            purpose: manifest::Purpose::Reissue,
        };
        manifest::scan(&path, &options, |row| match tx.blocking_send(row) {
            Ok(()) => std::ops::ControlFlow::Continue(()),
            Err(_) => std::ops::ControlFlow::Break(()),
        })
    });
    let mut orders = 0;
    while let Some(row) = rx.recv().await {
        let Row::Valid(order) = row else {
            panic!("the benchmark's manifest has an invalid row");
        };
        let canonical = reissuer::payload::canonical_json(&order.body);
        let digest = reissuer::payload::digest(&canonical);
        planner
            .add_order(order.order_id, order.line, &canonical, &digest)
            .await
            .expect("add an order");
        orders += 1;
    }
    scanning
        .await
        .expect("the scan")
        .expect("the manifest reads");
    (planner.commit().await.expect("commit the plan"), orders)
}

/// Moves the paused clock whenever only time can let the next request start; returns how
/// often it did, and how often it had to nudge the clock with nothing waiting at the limiter.
async fn drive_the_clock(
    limiter: Arc<Limiter>,
    done: Arc<AtomicBool>,
    base: Instant,
) -> (u64, u64) {
    let (tick, mut ticks) = tokio::sync::mpsc::unbounded_channel::<()>();
    // A blocking task keeps tokio's auto-advance off while it runs, and ticks in real time.
    let stop = done.clone();
    let ticker = tokio::task::spawn_blocking(move || {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
            if tick.send(()).is_err() {
                return;
            }
        }
    });
    let (mut advances, mut nudges, mut late) = (0, 0, 0);
    let mut last_move = RealInstant::now();
    while ticks.recv().await.is_some() {
        let now = Instant::now();
        let next = limiter.idle_until();
        late = match next {
            Some(at) if at <= now => late + 1,
            _ => 0,
        };
        match next {
            Some(at) if at > now => {
                // Timers fire on whole milliseconds from the runtime's start.
                let target = base + ceil_ms(at - base);
                let first_step = target - Duration::from_millis(3);
                if first_step > now {
                    tokio::time::advance(first_step - now).await;
                } else {
                    tokio::time::advance(target - now).await;
                    advances += 1;
                }
                last_move = RealInstant::now();
            }
            // The waiter has not started although its time has come: if that lasts, its timer
            // did not fire at that instant; one more millisecond.
            Some(_) if late > 5 => tokio::time::advance(Duration::from_millis(1)).await,
            Some(_) => {}
            // Nothing waits at the limiter and nothing has moved for a while: something else
            // (a retry's backoff) waits on time.
            None if last_move.elapsed() > Duration::from_secs(3) => {
                tokio::time::advance(Duration::from_millis(100)).await;
                nudges += 1;
                last_move = RealInstant::now();
            }
            None => {}
        }
    }
    let _ = ticker.await;
    (advances, nudges)
}

fn ceil_ms(duration: Duration) -> Duration {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

fn measure(
    sim: &SimulatorHandle,
    quotas: &[Quota],
    orders: u64,
    summary: String,
    advances: u64,
    nudges: u64,
) -> Campaign {
    let ledger = sim.ledger();
    let is_reissue =
        |r: &reissuer::simulator::RequestRecord| r.method == "POST" && r.path.ends_with("/reissue");
    let mut starts: Vec<u64> = ledger
        .requests
        .iter()
        .filter(|r| is_reissue(r) && r.status == 201)
        .map(|r| r.received_us)
        .collect();
    starts.sort_unstable();
    let span = match (starts.first(), starts.last()) {
        (Some(first), Some(last)) => Duration::from_micros(last - first),
        _ => Duration::ZERO,
    };
    let mut arrivals: Vec<u64> = ledger
        .requests
        .iter()
        .filter(|r| r.status != 429)
        .map(|r| r.received_us)
        .collect();
    arrivals.sort_unstable();
    let worst = quotas
        .iter()
        .map(|q| (*q, most_in_any_window(&arrivals, q.window)))
        .collect();
    Campaign {
        orders,
        span,
        accepted: ledger.accepted.len(),
        distinct: ledger.accepted_per_order().len(),
        refused: ledger.count_status(429),
        other_requests: ledger.requests.iter().filter(|r| !is_reissue(r)).count(),
        worst,
        advances,
        nudges,
        summary,
        planning: Duration::ZERO,
        sending: Duration::ZERO,
    }
}

fn most_in_any_window(sorted_us: &[u64], window: Duration) -> usize {
    let window = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
    let mut most = 0;
    let mut first = 0;
    for last in 0..sorted_us.len() {
        while sorted_us[last] - sorted_us[first] >= window {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}
