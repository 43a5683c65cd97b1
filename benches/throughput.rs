//! `cargo bench --bench throughput`: how `reissuer` compares with a shell loop and how close it
//! gets to the limits that matter, measured on this machine. Figures are printed and written to
//! `BENCHMARKS.md`, never asserted: a shared machine is noisy.
//!
//! Every figure but the virtual-time one runs the real release binary as a child process
//! against `reissuer simulate` (also the real binary, a fresh one per figure, on loopback); the
//! virtual-time campaign runs the same code in this process, on a paused tokio clock
//! (`throughput/virtual_time.rs`). Peak RSS and CPU time of a
//! command come from `wait4`; the simulator's CPU time from `/proc/<pid>/stat`; the CPU used by
//! the rest of the machine from `/proc/stat`. Needs nothing but the repository, and `curl` and
//! `xargs` for the shell baseline (skipped without them).
//!
//! | figure            | how                                                                   |
//! |-------------------|-----------------------------------------------------------------------|
//! | quota efficiency  | 200 and 800 orders, simulator and client both at `--rate 50/1s --rate 200/10s`: span of the accepted reissues vs the fastest schedule |
//! | defaults          | 150 orders, no `--rate`, simulator enforcing 100/5s + 1000/3m: time to the 100th reissue |
//! | engine overhead   | 20,000 orders, simulator unlimited and instant, `--rate unlimited`    |
//! | shell baseline    | the same 20,000 POSTs with `xargs -P 10 curl`, one process per request |
//! | manifest          | `reissuer validate` on 100,000 rows, each with its own inline CSR      |
//! | memory            | peak RSS of the 20,000- and the 100,000-order runs                    |
//! | resume            | `reissuer resume` of a 100,000-order run with 99,000 done              |
//! | no-op rerun       | 100,000 orders, each with its own CSR, all done: `run` of them again (time, bytes added) |
//! | virtual time      | 100,000 orders at the defaults, in process on a paused tokio clock     |
//! | postgres journal  | the engine-overhead run with its journal in PostgreSQL (a throwaway cluster) |
//! | takeover          | PostgreSQL journal, a sender and a standby on one account at a quota: kill -9 the sender; time to the standby's first request |
//!
//! Generated manifests are cached in cargo's target tmp directory between runs.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use rcgen::{CertificateParams, DnType, KeyPair};
use reissuer::config::Quota;
use serde::Deserialize;

#[path = "throughput/virtual_time.rs"]
mod virtual_time;

#[path = "../tests/it/pg_cluster.rs"]
mod pg_cluster;

const BIN: &str = env!("CARGO_BIN_EXE_reissuer");
const API_KEY: &str = "benchmark-key";
const CONCURRENCY: &str = "32";
/// The quotas of the quota-efficiency figure, given to the simulator and to reissuer alike.
const QUOTAS: [&str; 2] = ["50/1s", "200/10s"];
const SMALL_QUOTA_ORDERS: u64 = 200;
const QUOTA_ORDERS: u64 = 800;
/// Orders of the defaults figure: more than the 100-per-5-s window takes at once.
const DEFAULTS_ORDERS: u64 = 150;
const ENGINE_ORDERS: u64 = 20_000;
const BIG_ORDERS: u64 = 100_000;
/// The big run is stopped once the simulator has accepted this many (it refuses the rest).
const BIG_DONE: u64 = 99_000;
/// Run manifests cycle through this many CSRs (the simulator caches verified CSRs, so its CPU
/// goes to serving requests); the validate manifest gives every row its own key.
const RUN_DISTINCT_CSRS: u64 = 64;
const SHELL_PARALLELISM: &str = "10";
/// The takeover figure: the 200-order manifest at a quota that keeps the sender busy for ten
/// seconds, so that it is killed mid-run and the standby has orders left to send.
const TAKEOVER_ORDERS: u64 = SMALL_QUOTA_ORDERS;
const TAKEOVER_QUOTA: &str = "20/1s";
/// The senders' own quota, under the server's: the standby identifies its key while the sender
/// sends, and the sender's limiter does not see that request.
const TAKEOVER_RATE: &str = "18/1s";
/// Shorter than the defaults (30s, 60s) so that the figure takes seconds, not minutes; the
/// takeover scales with their sum.
const TAKEOVER_LEASE: &str = "10s";
const TAKEOVER_TIMEOUT: &str = "10s";
/// Orders the killed sender had marked in flight but not sent yet (waiting for the quota) are
/// not found by the standby's lookups; they are resent once this has passed since their mark,
/// which the takeover's wait has by then (the default, 10m, would hold them that long).
const TAKEOVER_SETTLE: &str = "10s";
/// Accepted reissues before the sender is killed: well into its run, well before its end.
const TAKEOVER_KILL_AFTER: usize = 40;

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let data = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("throughput");
    fs::create_dir_all(&data).expect("create the benchmark's data directory");
    let work = tempfile::Builder::new()
        .prefix("reissuer-bench-")
        .tempdir()
        .expect("create a temporary directory");
    let work = work.path();
    println!("reissuer throughput benchmark: {BIN}");
    println!("{cores} core(s); data cached in {}", data.display());

    let started = Instant::now();
    step("generating manifests (cached after the first run)");
    let small_quota_csv = manifest(&data, SMALL_QUOTA_ORDERS, RUN_DISTINCT_CSRS);
    let quota_csv = manifest(&data, QUOTA_ORDERS, RUN_DISTINCT_CSRS);
    let defaults_csv = manifest(&data, DEFAULTS_ORDERS, RUN_DISTINCT_CSRS);
    let engine_csv = manifest(&data, ENGINE_ORDERS, RUN_DISTINCT_CSRS);
    let big_csv = manifest(&data, BIG_ORDERS, RUN_DISTINCT_CSRS);
    let validate_csv = manifest(&data, BIG_ORDERS, BIG_ORDERS);

    // `cargo bench --bench throughput -- quota virtual` runs only the figures named (their
    // names are in the table above); BENCHMARKS.md is written only by a full run.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let runs =
        |figure: &str| wanted.is_empty() || wanted.iter().any(|w| figure.contains(w.as_str()));
    let mut report = Report::new(cores);
    if runs("manifest") {
        step("manifest: validate 100,000 rows with distinct inline CSRs");
        validate_figure(&mut report, &validate_csv);
    }
    if runs("quota efficiency") {
        step("quota efficiency: 200 orders at --rate 50/1s --rate 200/10s");
        quota_figure(
            &mut report,
            work,
            &small_quota_csv,
            SMALL_QUOTA_ORDERS,
            0.95,
        );
        step("quota efficiency: 800 orders at --rate 50/1s --rate 200/10s");
        quota_figure(&mut report, work, &quota_csv, QUOTA_ORDERS, 0.97);
    }
    if runs("defaults") {
        step("defaults: 150 orders, no --rate, against a simulator enforcing 100/5s + 1000/3m");
        defaults_figure(&mut report, work, &defaults_csv);
    }
    // The shell baseline, memory and resume figures compare with the engine's.
    if ["engine overhead", "shell baseline", "memory", "resume"]
        .iter()
        .any(|figure| runs(figure))
    {
        step("engine overhead: 20,000 orders, unlimited");
        let engine = engine_figure(&mut report, work, &engine_csv);
        if runs("shell baseline") {
            step("shell baseline: 20,000 POSTs with xargs -P 10 curl");
            shell_figure(&mut report, work, &engine_csv, &engine);
        }
        if ["memory", "resume"].iter().any(|figure| runs(figure)) {
            step("100,000 orders, stopped at 99,000 done; then resume");
            big_and_resume_figures(&mut report, work, &big_csv, &engine);
        }
    }
    if runs("no-op rerun") {
        step("no-op rerun: 100,000 orders with distinct CSRs sent, then run again");
        noop_rerun_figure(&mut report, work, &validate_csv);
    }
    if runs("postgres journal") {
        step("postgres journal: 20,000 orders, unlimited, journal in PostgreSQL");
        postgres_figure(&mut report, work, &engine_csv);
    }
    if runs("takeover after kill -9") {
        step(&format!(
            "takeover after kill -9: {TAKEOVER_ORDERS} orders at --rate {TAKEOVER_RATE}, \
             --lease {TAKEOVER_LEASE} --timeout {TAKEOVER_TIMEOUT}, journal in PostgreSQL"
        ));
        takeover_figure(&mut report, work, &small_quota_csv);
    }
    if runs("virtual time") {
        step("virtual time: 100,000 orders at the default quotas, paused clock");
        virtual_figure(&mut report, work, &big_csv);
    }

    report.total = started.elapsed();
    let markdown = report.markdown();
    println!("\n{markdown}");
    if !wanted.is_empty() {
        println!("(some figures only: BENCHMARKS.md left as it was)");
        return;
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    match fs::write(&out, &markdown) {
        Ok(()) => println!("written to {}", out.display()),
        Err(err) => eprintln!("cannot write {}: {err}", out.display()),
    }
}

fn step(what: &str) {
    println!("-- {what}");
}

// ---------------------------------------------------------------------------------------------
// The figures

fn validate_figure(report: &mut Report, csv: &Path) {
    let sample = Sample::begin();
    let done = Command::new(BIN).arg("validate").arg(csv).measure(None);
    let cpu = sample.end(&done, None);
    let secs = done.wall.as_secs_f64();
    report.row(
        "manifest",
        format!(
            "`validate` of 100,000 rows with distinct inline CSRs: **{secs:.2} s** ({:.0} rows/s; exit {})",
            BIG_ORDERS as f64 / secs,
            done.code
        ),
        "≤ 5 s",
        met(secs <= 5.0),
        cpu.verdict(),
    );
    report.detail(format!(
        "manifest: {}; peak RSS {}",
        cpu.describe(),
        mib(done.usage.maxrss_kib)
    ));
}

/// Quota efficiency: the span of the accepted reissues, by their arrival at the simulator,
/// against the fastest schedule the windows allow for as many.
fn quota_figure(report: &mut Report, work: &Path, csv: &Path, orders: u64, target: f64) {
    let mut sim_args = Vec::new();
    for quota in QUOTAS {
        sim_args.extend(["--rate", quota]);
    }
    let name = format!("quota-{orders}");
    let sim = Simulator::start(work, &name, &sim_args);
    let journal = work.join(format!("{name}.db"));
    let sample = Sample::begin();
    let mut command = Command::new(BIN);
    command.arg("run").arg(csv).args(send_args(&journal, &sim));
    for quota in QUOTAS {
        command.args(["--rate", quota]);
    }
    let done = command.measure(Some(&work.join(format!("{name}.err"))));
    let cpu = sample.end(&done, Some(&sim));
    let ledger = sim.ledger();
    drop(sim);

    let quotas: Vec<Quota> = QUOTAS
        .iter()
        .map(|q| q.parse().expect("a valid quota"))
        .collect();
    let starts = accepted_reissues(&ledger);
    let refused = ledger.requests.iter().filter(|r| r.status == 429).count();
    let figure = format!("quota efficiency, {orders} orders");
    let target_text = format!("≥ {target}, 0 × 429, exactly once");
    let (Some(&first), Some(&last)) = (starts.first(), starts.last()) else {
        report.row(
            &figure,
            format!("no reissue was accepted (exit {})", done.code),
            &target_text,
            "**no**",
            String::new(),
        );
        return;
    };
    // The requests before the first reissue (the key's identification) hold slots in the same
    // windows: the fastest schedule starts with them, and so does the span measured.
    let earlier: Vec<u64> = ledger
        .requests
        .iter()
        .filter(|r| r.status != 429 && r.received_us < first)
        .map(|r| r.received_us)
        .collect();
    let before = earlier.len();
    let begun = earlier.into_iter().min().unwrap_or(first);
    let span = Duration::from_micros(last - begun);
    let ideal = ideal_span(before + starts.len(), &quotas);
    let efficiency = ideal.as_secs_f64() / span.as_secs_f64().max(1e-9);
    let distinct = ledger.distinct_orders();
    let once = starts.len() as u64 == orders && distinct as u64 == orders;
    // Each time a window is full, the next batch waits for the oldest request to leave it.
    let waits = ideal_waits(before + starts.len(), &quotas);
    let per_wait = (span.saturating_sub(ideal)).as_secs_f64() * 1000.0 / waits.max(1) as f64;
    report.row(
        &figure,
        format!(
            "**{efficiency:.3}**: {before} request(s) identifying the key, then the reissues: \
             first to last {:.3} s, the windows allow {:.3} s; **{refused} × 429**; {} \
             accepted for {distinct} of {orders} orders",
            span.as_secs_f64(),
            ideal.as_secs_f64(),
            starts.len(),
        ),
        &target_text,
        met(efficiency >= target && refused == 0 && once),
        format!(
            "the quotas; each of the {waits} waits for a window costs {per_wait:.1} ms more \
             than the windows (the request's round trip, the 1 ms + W/10,000 margin, the \
             timer's 1 ms tick, the dispatcher's next batch); {}",
            cpu.verdict()
        ),
    );
    report.detail(format!(
        "{figure}: `--rate {}` on both sides, `--concurrency {CONCURRENCY}`. Efficiency = the \
         fastest schedule the rolling windows allow for the requests that came before the reissues \
         (the key's identification) and the accepted reissues (greedy: each starts as soon as \
         every window has room; no margin) ÷ the span from the first of those requests to the \
         last accepted reissue by the simulator's arrival stamps. Command {:.2} s, exit {}; {}",
        QUOTAS.join(" --rate "),
        done.wall.as_secs_f64(),
        done.code,
        cpu.describe()
    ));
}

/// The defaults: 150 orders with no `--rate` against a simulator enforcing DigiCert's limits.
fn defaults_figure(report: &mut Report, work: &Path, csv: &Path) {
    let sim = Simulator::start(work, "defaults", &["--rate", "100/5s", "--rate", "1000/3m"]);
    let journal = work.join("defaults.db");
    let sample = Sample::begin();
    let started = Instant::now();
    let done = Command::new(BIN)
        .arg("run")
        .arg(csv)
        .args(["--journal", &journal.display().to_string()])
        .args(["--base-url", &sim.base_url(), "--yes"])
        .measure(Some(&work.join("defaults.err")));
    let cpu = sample.end(&done, Some(&sim));
    let ledger = sim.ledger();
    // After the run, so that the probe does not count against the run's windows.
    let (probe_us, probe_at) = sim.probe();
    drop(sim);
    let starts = accepted_reissues(&ledger);
    let refused = ledger.requests.iter().filter(|r| r.status == 429).count();
    let started_us = probe_us.saturating_sub(micros(probe_at.duration_since(started)));
    // Every request counts in the windows: the key's identification (`GET /user/me`) takes one
    // of the first 100 slots, so the 100th request is the 99th reissue, and the 100th reissue
    // waits for the identification to leave the 5-s window.
    let mut answered: Vec<u64> = ledger
        .requests
        .iter()
        .filter(|r| r.status != 429)
        .map(|r| r.received_us)
        .collect();
    answered.sort_unstable();
    let since_start = |t: u64| Duration::from_micros(t.saturating_sub(started_us));
    let hundredth_request = answered.get(99).copied().map(since_start);
    let hundredth_reissue = starts.get(99).copied().map(since_start);
    let before_reissues = answered
        .iter()
        .take_while(|t| starts.first().is_some_and(|first| *t < first))
        .count();
    let once = starts.len() == 150 && ledger.distinct_orders() == 150;
    report.row(
        "defaults",
        format!(
            "150 orders, no `--rate`: the first 100 requests ({before_reissues} identifying the \
             key, then reissues) reached the server **{}** after the command started; the 100th \
             reissue {} (its slot is the identification's, free again after 5 s); \
             **{refused} × 429**; {} accepted for {} orders",
            opt_secs(hundredth_request),
            opt_secs(hundredth_reissue),
            starts.len(),
            ledger.distinct_orders()
        ),
        "100th request ≤ 2 s, 0 × 429",
        met(hundredth_request.is_some_and(|d| d <= Duration::from_secs(2)) && refused == 0 && once),
        format!(
            "starting the process, validating and planning, then `--concurrency 10` round \
             trips: the 100-per-5-s window lets the first 100 requests go at once; {}",
            cpu.verdict()
        ),
    );
    report.detail(format!(
        "defaults: `reissuer run` of 150 orders with the default quotas (100/5s + 1000/3m) and \
         the default `--concurrency 10`, against a simulator enforcing the same. The 101st to \
         150th wait for the first to leave the 5-s window. Command {:.2} s, exit {}; {}",
        done.wall.as_secs_f64(),
        done.code,
        cpu.describe()
    ));
}

/// The 100,000-order campaign at the defaults, in virtual time (in this process: the runner,
/// limiter, journal, client and simulator on a paused tokio clock).
fn virtual_figure(report: &mut Report, work: &Path, csv: &Path) {
    let quotas = reissuer::config::default_quotas();
    let campaign = virtual_time::campaign(csv, work, &quotas);
    let fastest = ideal_span(usize::try_from(campaign.orders).expect("fits"), &quotas);
    let over = campaign.span.as_secs_f64() / fastest.as_secs_f64().max(1e-9) - 1.0;
    let once =
        campaign.accepted as u64 == campaign.orders && campaign.distinct as u64 == campaign.orders;
    let within = campaign
        .worst
        .iter()
        .all(|(quota, most)| *most <= quota.limit as usize);
    let hours = campaign.span.as_secs_f64() / 3600.0;
    report.row(
        "virtual-time campaign",
        format!(
            "{} orders at the defaults: first to last reissue **{:.0} s** ({hours:.2} h) in \
             virtual time; the windows allow {:.0} s: **{:+.3} %**; **{} × 429**; {} accepted \
             for {} orders",
            campaign.orders,
            campaign.span.as_secs_f64(),
            fastest.as_secs_f64(),
            over * 100.0,
            campaign.refused,
            campaign.accepted,
            campaign.distinct
        ),
        "within 1 % of the bound, 0 × 429",
        met(over <= 0.01 && campaign.refused == 0 && once && within),
        "the 1000-per-3-min window: 99 full windows after the first thousand (sent in ten \
         bursts of 100 over 45 s); each costs its margin (19 ms) and a timer tick"
            .to_owned(),
    );
    let worst: Vec<String> = campaign
        .worst
        .iter()
        .map(|(quota, most)| {
            format!(
                "{most} in one {}",
                reissuer::config::format_duration(quota.window)
            )
        })
        .collect();
    report.detail(format!(
        "virtual-time campaign: the real runner, limiter, SQLite journal and HTTP client against \
         the simulator on loopback, all on one tokio runtime with a paused clock, moved only when \
         nothing but time could let the next request start ({} moves, {} nudges with nothing \
         waiting). The bound: 99,000 ÷ 1000 × 3 min = 17,820 s after the first thousand, whose \
         last burst starts at 45 s: {:.0} s from the first reissue to the last. The simulator \
         saw at most {}; {} other requests (lookups); {}. Wall clock: planning {:.1} s, sending \
         {:.1} s.",
        campaign.advances,
        campaign.nudges,
        fastest.as_secs_f64(),
        worst.join(", "),
        campaign.other_requests,
        campaign.summary,
        campaign.planning.as_secs_f64(),
        campaign.sending.as_secs_f64()
    ));
}

/// The arrival stamps of the accepted reissues, in order.
fn accepted_reissues(ledger: &Ledger) -> Vec<u64> {
    let mut starts: Vec<u64> = ledger
        .requests
        .iter()
        .filter(|r| r.is_reissue() && r.status == 201)
        .map(|r| r.received_us)
        .collect();
    starts.sort_unstable();
    starts
}

/// What the engine figure hands to the figures that compare with it.
struct Engine {
    orders_per_sec: f64,
    send_per_sec: Option<f64>,
    maxrss_kib: u64,
    floor_kib: u64,
}

fn engine_figure(report: &mut Report, work: &Path, csv: &Path) -> Engine {
    let sim = Simulator::start(work, "engine", &[]);
    let journal = work.join("engine.db");
    let stderr = work.join("engine.err");
    let sample = Sample::begin();
    let done = Command::new(BIN)
        .arg("run")
        .arg(csv)
        .args(send_args(&journal, &sim))
        .args(["--rate", "unlimited"])
        .measure(Some(&stderr));
    let cpu = sample.end(&done, Some(&sim));
    let ledger = sim.ledger();
    drop(sim);
    let summary = read(&stderr);
    let send = SendLine::find(&summary);
    let whole = ENGINE_ORDERS as f64 / done.wall.as_secs_f64();
    let send_text = send.as_ref().map_or_else(
        || "no summary line".to_owned(),
        |s| {
            format!(
                "{:.0}/s send phase ({} requests in {:.1} s)",
                s.rate, s.requests, s.secs
            )
        },
    );
    report.row(
        "engine overhead",
        format!(
            "**{send_text}**; **{whole:.0}/s** whole command ({:.2} s incl. validating and planning); `--concurrency {CONCURRENCY}`",
            done.wall.as_secs_f64()
        ),
        "≥ 3,000/s",
        &format!(
            "send: {}; whole: {}",
            met(send.as_ref().is_some_and(|s| s.rate >= 3000.0)),
            met(whole >= 3000.0)
        ),
        cpu.verdict(),
    );
    report.detail(format!(
        "engine overhead: {ENGINE_ORDERS} orders, simulator without quotas or latency, `--rate \
         unlimited --concurrency {CONCURRENCY}`, journal with `synchronous=FULL`. Exit {}; \
         simulator accepted {} reissues ({} distinct orders); {}",
        done.code,
        ledger.accepted.len(),
        ledger.distinct_orders(),
        cpu.describe()
    ));
    Engine {
        orders_per_sec: whole,
        send_per_sec: send.map(|s| s.rate),
        maxrss_kib: done.usage.maxrss_kib,
        floor_kib: done.floor_kib,
    }
}

/// The engine-overhead run with the journal in a PostgreSQL database of a throwaway cluster
/// (fsync off: what is measured is the engine's round trips, not the disk).
fn postgres_figure(report: &mut Report, work: &Path, csv: &Path) {
    let Some(url) = pg_cluster::fresh_database() else {
        report.detail("postgres journal: not measured (no PostgreSQL server binaries)".to_owned());
        return;
    };
    let sim = Simulator::start(work, "postgres", &[]);
    let stderr = work.join("postgres.err");
    let done = Command::new(BIN)
        .arg("run")
        .arg(csv)
        .args(send_args(Path::new(&url), &sim))
        .args(["--rate", "unlimited"])
        .measure(Some(&stderr));
    let ledger = sim.ledger();
    drop(sim);
    let summary = read(&stderr);
    let send = SendLine::find(&summary);
    let whole = ENGINE_ORDERS as f64 / done.wall.as_secs_f64();
    let send_text = send.as_ref().map_or_else(
        || "no summary line".to_owned(),
        |s| {
            format!(
                "{:.0}/s send phase ({} requests in {:.1} s)",
                s.rate, s.requests, s.secs
            )
        },
    );
    report.row(
        "postgres journal",
        format!(
            "**{send_text}**; **{whole:.0}/s** whole command ({:.2} s); `--concurrency {CONCURRENCY}`",
            done.wall.as_secs_f64()
        ),
        "one host outruns any quota",
        "—",
        String::new(),
    );
    report.detail(format!(
        "postgres journal: the engine-overhead run ({ENGINE_ORDERS} orders, unlimited) with \
         `--journal postgres://…` on a local throwaway cluster (fsync off). Exit {}; simulator \
         accepted {} reissues ({} distinct orders)",
        done.code,
        ledger.accepted.len(),
        ledger.distinct_orders(),
    ));
}

/// A sender and a standby on one account with the journal in PostgreSQL, against a simulator
/// enforcing a quota: the sender is killed -9 mid-run; the figure is the time from the kill to
/// the first request of the standby reaching the simulator (its arrival stamp), against the
/// bound the README promises, `--lease` plus `--timeout`.
fn takeover_figure(report: &mut Report, work: &Path, csv: &Path) {
    let Some(url) = pg_cluster::fresh_database() else {
        report.detail(
            "takeover after kill -9: not measured (no PostgreSQL server binaries)".to_owned(),
        );
        return;
    };
    let sim = Simulator::start(work, "takeover", &["--rate", TAKEOVER_QUOTA]);
    let sending = || {
        let mut command = Command::new(BIN);
        command
            .arg("run")
            .arg(csv)
            .args(send_args(Path::new(&url), &sim))
            .args(["--rate", TAKEOVER_RATE, "--lease", TAKEOVER_LEASE])
            .args(["--timeout", TAKEOVER_TIMEOUT, "--settle", TAKEOVER_SETTLE]);
        command
    };
    let sender_log = work.join("takeover-sender.err");
    let standby_log = work.join("takeover-standby.err");
    let (sender, _) = spawn(&mut sending(), Some(&sender_log));
    let sender_pid = child_pid(&sender);
    wait_until("the sender's first reissue", || {
        !sim.ledger().accepted.is_empty()
    });
    let standby = spawn(&mut sending(), Some(&standby_log));
    wait_until("the standby standing by", || {
        read(&standby_log).contains("standing by")
    });
    wait_until("the sender's reissues before the kill", || {
        sim.ledger().accepted.len() >= TAKEOVER_KILL_AFTER
    });
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(sender_pid, libc::SIGKILL) };
    let killed_at = Instant::now();
    let accepted_at_kill = sim.ledger().accepted.len();
    let _ = wait4(sender_pid);
    drop(sender);
    let done = reap(standby, killed_at);
    let ledger = sim.ledger();
    // After the run, so that the probe does not count against the standby's windows.
    let (probe_us, probe_at) = sim.probe();
    drop(sim);
    let killed_us = probe_us.saturating_sub(micros(probe_at.duration_since(killed_at)));
    let after_kill = |request: &&RequestRecord| request.received_us > killed_us;
    let first_request = ledger.requests.iter().find(after_kill);
    let first_reissue = ledger
        .requests
        .iter()
        .filter(|r| r.is_reissue())
        .find(after_kill);
    let since_kill = |r: Option<&RequestRecord>| {
        r.map(|r| Duration::from_micros(r.received_us.saturating_sub(killed_us)))
    };
    let takeover = since_kill(first_request);
    let lease = humantime::parse_duration(TAKEOVER_LEASE).expect("a duration");
    let timeout = humantime::parse_duration(TAKEOVER_TIMEOUT).expect("a duration");
    let bound = lease + timeout;
    // The standby's own work between the takeover and its first request (planning the
    // manifest, reading what the dead sender left): not part of the bound, allowed a second.
    let allowance = Duration::from_secs(1);
    let refused = ledger.requests.iter().filter(|r| r.status == 429).count();
    let once = ledger.accepted.len() == TAKEOVER_ORDERS as usize
        && ledger.distinct_orders() == TAKEOVER_ORDERS as usize;
    let standby_said = read(&standby_log);
    let took_over = standby_said.contains("taking over");
    report.row(
        "takeover after kill -9",
        format!(
            "PostgreSQL journal, `--lease {TAKEOVER_LEASE} --timeout {TAKEOVER_TIMEOUT}`: the \
             standby's first request reached the simulator **{}** after the kill (its first \
             reissue {}); bound {} (lease + timeout){}; standby exit {}{}; **{refused} × 429**; \
             {} accepted for {} of {TAKEOVER_ORDERS} orders",
            opt_secs(takeover),
            opt_secs(since_kill(first_reissue)),
            humantime::format_duration(bound),
            takeover
                .and_then(|t| t.checked_sub(bound))
                .map(|over| format!(
                    ", over it by {:.1} s: the standby's own start (planning, reading what was left)",
                    over.as_secs_f64()
                ))
                .unwrap_or_default(),
            done.code,
            if took_over { ", said it took over" } else { ", **did not say it took over**" },
            ledger.accepted.len(),
            ledger.distinct_orders(),
        ),
        "≤ lease + timeout (+ ≤ 1 s to start), 0 × 429, exactly once",
        met(takeover.is_some_and(|t| t <= bound + allowance)
            && refused == 0
            && once
            && done.code == 0
            && took_over),
        format!(
            "by design: the lease runs out {} to {} after the kill (renewed every third of it), \
             then the standby waits out the dead sender's `--timeout` before it reconciles",
            opt_secs(Some(lease * 2 / 3)),
            opt_secs(Some(lease)),
        ),
    );
    report.detail(format!(
        "takeover after kill -9: `reissuer run` of {TAKEOVER_ORDERS} orders twice at once on one \
         account, journal in a throwaway PostgreSQL cluster (fsync off), `--rate \
         {TAKEOVER_RATE} --settle {TAKEOVER_SETTLE}` (the simulator enforcing {TAKEOVER_QUOTA}); \
         the second stands by; the sender is killed -9 after \
         {accepted_at_kill} accepted reissues. The kill's moment is put on the simulator's clock \
         by a probe after the run; the first request after it is the standby's (a reconciliation \
         lookup of what the dead sender left in flight, or its first reissue). Standby ran {:.1} \
         s from the kill to its exit",
        done.wall.as_secs_f64()
    ));
}

/// Polls every 50 ms for up to a minute.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn shell_figure(report: &mut Report, work: &Path, csv: &Path, engine: &Engine) {
    let available = ["curl", "xargs"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !available {
        println!("curl or xargs not found: shell baseline skipped");
        report.row(
            "shell baseline",
            "skipped (curl or xargs not found)".to_owned(),
            "reissuer ≥ 10×",
            "—",
            String::new(),
        );
        return;
    }
    // The bodies reissuer would send, one file per order, prepared before the clock starts.
    let bodies = work.join("bodies");
    fs::create_dir_all(&bodies).expect("create the bodies directory");
    let mut printing = Command::new(BIN)
        .arg("validate")
        .arg("--print")
        .arg(csv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run reissuer validate --print");
    let ids_path = work.join("order-ids");
    let mut ids = BufWriter::new(File::create(&ids_path).expect("create the id list"));
    let stdout = printing.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read validate --print");
        let printed: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        let order_id = printed["order_id"].as_u64().expect("an order id");
        let body = serde_json::to_vec(&printed["body"]).expect("a body");
        fs::write(bodies.join(format!("{order_id}.json")), body).expect("write a body");
        writeln!(ids, "{order_id}").expect("write the id list");
    }
    ids.flush().expect("write the id list");
    drop(ids);
    assert!(
        printing.wait().is_ok_and(|status| status.success()),
        "reissuer validate --print failed"
    );

    let sim = Simulator::start(work, "shell", &[]);
    let codes_path = work.join("shell-codes");
    let sample = Sample::begin();
    let done = Command::new("xargs")
        .args([
            "-P",
            SHELL_PARALLELISM,
            "-I{}",
            "curl",
            "-sS",
            "-o",
            "/dev/null",
        ])
        .args(["-w", "%{http_code}\\n"])
        .args(["-H", &format!("X-DC-DEVKEY: {API_KEY}")])
        .args(["-H", "Content-Type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}/{{}}.json", bodies.display()))
        .arg(format!("{}/order/certificate/{{}}/reissue", sim.base_url()))
        .stdin(File::open(&ids_path).expect("open the id list"))
        .stdout(File::create(&codes_path).expect("create the codes file"))
        .measure(Some(&work.join("shell.err")));
    let cpu = sample.end(&done, Some(&sim));
    let ledger = sim.ledger();
    drop(sim);
    let codes = read(&codes_path);
    let created = codes.lines().filter(|l| l.trim() == "201").count();
    let rate = ENGINE_ORDERS as f64 / done.wall.as_secs_f64();
    let ratio = engine.orders_per_sec / rate;
    report.row(
        "shell baseline",
        format!(
            "`xargs -P {SHELL_PARALLELISM} curl`: **{rate:.0}/s** ({:.1} s, {created} × 201); reissuer **{ratio:.1}×** faster (whole command{})",
            done.wall.as_secs_f64(),
            engine
                .send_per_sec
                .map(|s| format!("; {:.1}× on the send phase", s / rate))
                .unwrap_or_default()
        ),
        "reissuer ≥ 10×",
        &format!(
            "whole: {}; send: {}",
            met(ratio >= 10.0),
            met(engine.send_per_sec.is_some_and(|s| s / rate >= 10.0))
        ),
        cpu.verdict(),
    );
    report.detail(format!(
        "shell baseline: `xargs -P {SHELL_PARALLELISM} -I{{}} curl -sS -o /dev/null -w '%{{http_code}}\\n' \
         -H 'X-DC-DEVKEY: …' -H 'Content-Type: application/json' --data-binary @bodies/{{}}.json \
         <base>/order/certificate/{{}}/reissue`, fed the {ENGINE_ORDERS} order ids; the bodies are \
         the ones `reissuer validate --print` builds, written to files before the clock starts. \
         Exit {}; simulator accepted {}; {} (CPU of the xargs tree, curls included)",
        done.code,
        ledger.accepted.len(),
        cpu.describe()
    ));
}

fn big_and_resume_figures(report: &mut Report, work: &Path, csv: &Path, engine: &Engine) {
    // The simulator accepts exactly BIG_DONE reissues in the hour and refuses the rest (429,
    // Retry-After 1 s): the run stalls at BIG_DONE done, and is stopped with SIGTERM as a user
    // would, leaving a run of BIG_ORDERS items of which BIG_DONE are done.
    // One more request than reissues: the key's identification counts in the window too.
    let allowance = format!("{}/1h", BIG_DONE + 1);
    let sim = Simulator::start(work, "big", &["--rate", &allowance, "--retry-after", "1s"]);
    let journal = work.join("big.db");
    let stderr = work.join("big.err");
    let sample = Sample::begin();
    let started = Instant::now();
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .arg(csv)
        .args(send_args(&journal, &sim))
        .args(["--rate", "unlimited"]);
    let child = spawn(&mut command, Some(&stderr));
    let mut planned_at = None;
    let mut stalled_at = None;
    while started.elapsed() < Duration::from_secs(240) {
        std::thread::sleep(Duration::from_millis(20));
        let log = read(&stderr);
        if planned_at.is_none() && log.contains(" already done (skipped)") {
            planned_at = Some(started.elapsed());
        }
        if log.contains("throttled") {
            stalled_at = Some(started.elapsed());
            break;
        }
    }
    // SAFETY: kill(2) on the pid of our own child, not reaped yet.
    unsafe { libc::kill(child_pid(&child.0), libc::SIGTERM) };
    let done = reap(child, started);
    let cpu = sample.end(&done, Some(&sim));
    drop(sim);
    let log = read(&stderr);
    let stop_line = log
        .lines()
        .find(|l| l.starts_with("run ") && l.contains("interrupted"))
        .unwrap_or("no summary line")
        .to_owned();
    let send_rate = match (planned_at, stalled_at) {
        (Some(a), Some(b)) if b > a => Some(BIG_DONE as f64 / (b - a).as_secs_f64()),
        _ => None,
    };
    let flat = done.usage.maxrss_kib as f64 / engine.maxrss_kib.max(1) as f64;
    report.row(
        "memory",
        format!(
            "peak RSS **{}** (20,000 orders), **{}** (100,000 orders): ×{flat:.2}",
            mib(engine.maxrss_kib),
            mib(done.usage.maxrss_kib)
        ),
        "≤ 100 MiB, flat in N",
        met(engine.maxrss_kib.max(done.usage.maxrss_kib) <= 100 * 1024 && flat < 1.5),
        "—".to_owned(),
    );
    report.detail(format!(
        "memory: peak RSS from `wait4` (`ru_maxrss`); a child cannot be seen below the \
         benchmark's own RSS when it spawned it ({} and {}, its high-water mark reset first)",
        mib(engine.floor_kib),
        mib(done.floor_kib)
    ));
    report.detail(format!(
        "100,000-order run: planned after {}, {BIG_DONE} accepted after {} ({}), then SIGTERM; \
         exit {}; `{}`; {}",
        opt_secs(planned_at),
        opt_secs(stalled_at),
        send_rate.map_or_else(
            || "rate unknown".to_owned(),
            |r| format!("≈ {r:.0}/s sending")
        ),
        done.code,
        stop_line.trim(),
        cpu.describe()
    ));

    // What opening the journal costs by itself: `status` opens and checks it the same way.
    let status = Command::new(BIN)
        .arg("status")
        .arg("--journal")
        .arg(&journal)
        .measure(None);

    let sim = Simulator::start(work, "resume", &[]);
    let (probe_us, probe_at) = sim.probe();
    let sample = Sample::begin();
    let started = Instant::now();
    let done = Command::new(BIN)
        .arg("resume")
        .args(send_args(&journal, &sim))
        .args(["--rate", "unlimited"])
        .measure_from(started, Some(&work.join("resume.err")));
    let cpu = sample.end(&done, Some(&sim));
    let ledger = sim.ledger();
    drop(sim);
    // The simulator stamps requests on its own clock; the probe ties that clock to ours.
    let first_send = ledger
        .requests
        .iter()
        .filter(|r| r.is_reissue())
        .map(|r| r.received_us)
        .min()
        .map(|us| {
            secs_us(us.saturating_sub(probe_us)) - started.duration_since(probe_at).as_secs_f64()
        });
    let lookups = ledger
        .requests
        .iter()
        .filter(|r| r.method == "GET")
        .count()
        .saturating_sub(1);
    report.row(
        "resume",
        match first_send {
            Some(secs) => format!(
                "**{secs:.3} s** from starting `reissuer resume` to the first reissue reaching the simulator; the last {} sent in {:.2} s",
                ledger.accepted.len(),
                done.wall.as_secs_f64()
            ),
            None => format!("nothing was sent (exit {})", done.code),
        },
        "≤ 1 s",
        met(first_send.is_some_and(|s| s <= 1.0)),
        format!(
            "opening the {} journal (`status` on it alone: {:.3} s)",
            file_size(&journal),
            status.wall.as_secs_f64()
        ),
    );
    report.detail(format!(
        "resume: journal of {BIG_ORDERS} items with {BIG_DONE} done; exit {}; simulator accepted {} \
         reissues ({} distinct orders), {lookups} reconciliation lookups; peak RSS {}; {}",
        done.code,
        ledger.accepted.len(),
        ledger.distinct_orders(),
        mib(done.usage.maxrss_kib),
        cpu.describe()
    ));
}

/// The 100,000-order manifest whose every row has its own CSR, sent in full, then `run` of it
/// again: how long the rerun takes (every CSR parsed, none verified again, every order found
/// done) and what it adds to the journal.
fn noop_rerun_figure(report: &mut Report, work: &Path, csv: &Path) {
    let bytes = |path: &Path| {
        ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let mut name = path.as_os_str().to_owned();
                name.push(suffix);
                fs::metadata(PathBuf::from(name)).ok()
            })
            .map(|m| m.len())
            .sum::<u64>()
    };
    let sim = Simulator::start(work, "noop", &[]);
    let journal = work.join("noop.db");
    let first = Command::new(BIN)
        .arg("run")
        .arg(csv)
        .args(send_args(&journal, &sim))
        .args(["--rate", "unlimited"])
        .measure(Some(&work.join("noop-first.err")));
    let before = bytes(&journal);
    let accepted = sim.ledger().accepted.len();
    let stderr = work.join("noop-rerun.err");
    let sample = Sample::begin();
    // `--rate unlimited` as for the first run: at the default quotas the identity request would
    // wait for the first run's 100,000 requests to leave the 1000-per-3-minutes window.
    let done = Command::new(BIN)
        .arg("run")
        .arg(csv)
        .args(send_args(&journal, &sim))
        .args(["--rate", "unlimited"])
        .measure(Some(&stderr));
    // Not the simulator's CPU: its counter started with the first run.
    let cpu = sample.end(&done, None);
    let sent = sim.ledger().accepted.len() - accepted;
    drop(sim);
    let added = bytes(&journal).saturating_sub(before);
    let secs = done.wall.as_secs_f64();
    let share = added as f64 / before.max(1) as f64;
    // How the rerun was planned: from an earlier run's plan (nothing validated), or by
    // validating every row (then how many CSRs were verified again).
    let plan_line = read(&stderr)
        .lines()
        .find_map(|line| {
            line.split_once("plan taken from ")
                .map(|(_, rest)| format!("plan taken from {rest}"))
                .or_else(|| {
                    line.split_once("CSRs: ")
                        .map(|(_, rest)| format!("CSRs: {rest}"))
                })
        })
        .unwrap_or_else(|| "neither a plan line nor a CSR line".to_owned());
    report.row(
        "no-op rerun",
        format!(
            "**{secs:.2} s** for {BIG_ORDERS} orders all done (each its own CSR); **{:.1} bytes \
             per order** added ({added} bytes, {:.2} % of the first run's {before}); exit {}, \
             {sent} sent",
            added as f64 / BIG_ORDERS as f64,
            share * 100.0,
            done.code
        ),
        "≤ 1 s, ≤ 5 %",
        met(secs <= 1.0 && share <= 0.05 && sent == 0),
        cpu.verdict(),
    );
    report.detail(format!(
        "no-op rerun: the first run (exit {}, {accepted} accepted) took {:.1} s and left a \
         {before}-byte journal; the rerun's log: `{plan_line}`; peak RSS {}; {}",
        first.code,
        first.wall.as_secs_f64(),
        mib(done.usage.maxrss_kib),
        cpu.describe()
    ));
}

fn send_args(journal: &Path, sim: &Simulator) -> Vec<String> {
    vec![
        "--journal".into(),
        journal.display().to_string(),
        "--base-url".into(),
        sim.base_url(),
        "--concurrency".into(),
        CONCURRENCY.into(),
        "--yes".into(),
    ]
}

/// The start of each of `n` requests in the fastest schedule rolling windows allow (greedy:
/// each starts as soon as every window allows). Written here, apart from the limiter's own
/// model, so that the figure does not grade the limiter by its own arithmetic.
fn ideal_starts(n: usize, quotas: &[Quota]) -> Vec<Duration> {
    let mut starts: Vec<Duration> = Vec::with_capacity(n);
    for i in 0..n {
        let mut at = starts.last().copied().unwrap_or_default();
        for quota in quotas {
            let limit = quota.limit as usize;
            if i >= limit {
                at = at.max(starts[i - limit] + quota.window);
            }
        }
        starts.push(at);
    }
    starts
}

/// The shortest span in which `n` requests can start under rolling windows.
fn ideal_span(n: usize, quotas: &[Quota]) -> Duration {
    ideal_starts(n, quotas).last().copied().unwrap_or_default()
}

/// How often, in that schedule, a request waits for a window (the batches after the first).
fn ideal_waits(n: usize, quotas: &[Quota]) -> usize {
    ideal_starts(n, quotas)
        .windows(2)
        .filter(|pair| pair[1] > pair[0])
        .count()
}

// ---------------------------------------------------------------------------------------------
// Manifests

/// A cached CSV manifest of `rows` TLS orders (ids from 100,000) with inline CSRs, cycling
/// through `distinct` keys: the layout of `examples/gen_manifest.rs big ROWS DISTINCT`.
fn manifest(dir: &Path, rows: u64, distinct: u64) -> PathBuf {
    let path = dir.join(format!("orders-{rows}-{distinct}.csv"));
    if path.exists() {
        return path;
    }
    let began = Instant::now();
    let host = |i: u64| format!("host{i}.example.com");
    let csrs: Vec<String> = (0..distinct.min(rows))
        .into_par_iter()
        .map(|i| csr(&host(i), &[host(i), format!("www.{}", host(i))]))
        .collect();
    let partial = path.with_extension("partial");
    let mut out = csv::Writer::from_writer(BufWriter::new(
        File::create(&partial).expect("create a manifest"),
    ));
    out.write_record([
        "order_id",
        "common_name",
        "dns_names",
        "csr",
        "server_platform.id",
        "signature_hash",
        "dcv_method",
        "skip_approval",
    ])
    .expect("write a manifest");
    for row in 0..rows {
        let which = row % distinct;
        let index = usize::try_from(which).expect("fits in memory");
        out.write_record([
            (100_000 + row).to_string().as_str(),
            &host(which),
            &format!("{};www.{}", host(which), host(which)),
            &csrs[index],
            "2",
            "sha256",
            "dns-txt-token",
            "true",
        ])
        .expect("write a manifest");
    }
    out.flush().expect("write a manifest");
    drop(out);
    fs::rename(&partial, &path).expect("move the manifest into place");
    println!(
        "   generated {} ({rows} rows, {distinct} distinct CSRs) in {:.1} s",
        path.display(),
        began.elapsed().as_secs_f64()
    );
    path
}

/// A P-256 CSR; the private key is discarded at once.
fn csr(common_name: &str, dns_names: &[String]) -> String {
    let key = KeyPair::generate().expect("P-256 key generation");
    let mut params = CertificateParams::new(dns_names.to_vec()).expect("valid DNS names");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .serialize_request(&key)
        .expect("CSR serialisation")
        .pem()
        .expect("PEM encoding")
}

// ---------------------------------------------------------------------------------------------
// Processes

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu: f64,
    maxrss_kib: u64,
}

/// A finished command.
struct Done {
    wall: Duration,
    code: i32,
    usage: Usage,
    /// The benchmark's own RSS when it started the command: peaks below it cannot be seen.
    floor_kib: u64,
}

trait Measure {
    /// Runs to the end; wall time from the spawn, CPU and peak RSS from `wait4`.
    fn measure(&mut self, stderr: Option<&Path>) -> Done;
    /// The same, with the clock started by the caller.
    fn measure_from(&mut self, started: Instant, stderr: Option<&Path>) -> Done;
}

impl Measure for Command {
    fn measure(&mut self, stderr: Option<&Path>) -> Done {
        self.measure_from(Instant::now(), stderr)
    }

    fn measure_from(&mut self, started: Instant, stderr: Option<&Path>) -> Done {
        let child = spawn(self, stderr);
        reap(child, started)
    }
}

fn spawn(command: &mut Command, stderr: Option<&Path>) -> (Child, u64) {
    let stderr = match stderr {
        Some(path) => Stdio::from(File::create(path).expect("create a stderr file")),
        None => Stdio::null(),
    };
    let program = command.get_program().to_owned();
    command
        .env("DIGICERT_API_KEY", API_KEY)
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .stderr(stderr);
    if program.as_os_str() == OsStr::new(BIN) {
        command.stdin(Stdio::null()).stdout(Stdio::null());
    }
    lower_our_peak_rss();
    let floor = rss_floor();
    let child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {}: {err}", program.to_string_lossy()));
    (child, floor)
}

/// A child started with vfork+exec inherits, in its peak RSS, the peak of the process it was
/// spawned from (exec records the old address space's high-water mark): so the benchmark
/// returns what it can to the system and resets its own high-water mark before every spawn.
/// What remains is the floor below which a child's peak RSS cannot be told (see [`rss_floor`]).
fn lower_our_peak_rss() {
    // SAFETY: malloc_trim only releases free heap memory.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
    // "5": reset the peak resident set size (proc(5), Linux 4.0+).
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// The benchmark's own resident set, in KiB: the floor of every peak RSS it measures.
fn rss_floor() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn child_pid(child: &Child) -> libc::pid_t {
    libc::pid_t::try_from(child.id()).expect("a pid")
}

/// Waits for the child with `wait4`, which also reports its CPU time and peak RSS (those of
/// its waited-for descendants included).
fn reap((child, floor_kib): (Child, u64), started: Instant) -> Done {
    let pid = child_pid(&child);
    let (code, usage) = wait4(pid);
    Done {
        wall: started.elapsed(),
        code,
        usage,
        floor_kib,
    }
}

fn wait4(pid: libc::pid_t) -> (i32, Usage) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child; the pointers are to live locals.
        let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if got == pid {
            break;
        }
        let err = io::Error::last_os_error();
        assert!(
            err.kind() == io::ErrorKind::Interrupted,
            "wait4({pid}): {err}"
        );
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let usage = Usage {
        cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        maxrss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    };
    (code, usage)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU seconds a live process has used, from `/proc/<pid>/stat` (utime + stime).
fn process_cpu(pid: libc::pid_t) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `fields` starts at field 3.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks()
}

/// Busy CPU seconds of the whole machine so far, from `/proc/stat`.
fn machine_busy() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = values
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy as f64 / clock_ticks()
}

/// CPU accounting of one figure: the command, the simulator, everything else on the machine.
struct Sample {
    machine: f64,
}

struct Cpu {
    wall: f64,
    client: f64,
    simulator: Option<f64>,
    others: f64,
    cores: f64,
}

impl Sample {
    fn begin() -> Self {
        Self {
            machine: machine_busy(),
        }
    }

    /// Call before anything else (the ledger fetch) makes the simulator work.
    fn end(self, done: &Done, sim: Option<&Simulator>) -> Cpu {
        let machine = machine_busy() - self.machine;
        let simulator = sim.map(|s| process_cpu(s.pid) - s.cpu_at_start);
        let ours = done.usage.cpu + simulator.unwrap_or(0.0);
        Cpu {
            wall: done.wall.as_secs_f64(),
            client: done.usage.cpu,
            simulator,
            others: (machine - ours).max(0.0),
            cores: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
        }
    }
}

impl Cpu {
    fn describe(&self) -> String {
        let share = |cpu: f64| cpu / self.wall.max(1e-9);
        let mut text = format!(
            "wall {:.2} s; CPU: client {:.2} s ({:.2} core)",
            self.wall,
            self.client,
            share(self.client)
        );
        if let Some(sim) = self.simulator {
            let _ = write!(text, ", simulator {sim:.2} s ({:.2} core)", share(sim));
        }
        let _ = write!(
            text,
            ", other processes ≈ {:.2} s ({:.2} core, from /proc/stat)",
            self.others,
            share(self.others)
        );
        text
    }

    /// Which CPU-bound component limits the figure, as far as CPU time can tell.
    fn verdict(&self) -> String {
        let wall = self.wall.max(1e-9);
        let client = self.client / wall;
        let sim = self.simulator.unwrap_or(0.0) / wall;
        let others = self.others / wall;
        let busy = client + sim + others;
        let who = if sim > client {
            format!("simulator {sim:.2} core, client {client:.2}")
        } else if self.simulator.is_some() {
            format!("client {client:.2} core, simulator {sim:.2}")
        } else {
            format!("client {client:.2} core")
        };
        if busy >= 0.85 * self.cores {
            format!("CPU: the machine is saturated ({who}, others {others:.2})")
        } else if client >= 0.9 || sim >= 0.9 {
            format!("CPU of one component ({who})")
        } else {
            format!(
                "waiting, not CPU ({who}): serial round trips (journal statements, fsync, HTTP)"
            )
        }
    }
}

/// `reissuer simulate` as a child process on loopback; stopped (SIGTERM, reaped) on drop.
struct Simulator {
    child: Option<Child>,
    pid: libc::pid_t,
    port: u16,
    cpu_at_start: f64,
}

impl Simulator {
    fn start(work: &Path, name: &str, args: &[&str]) -> Self {
        let port_file = work.join(format!("{name}.port"));
        let mut command = Command::new(BIN);
        command
            .arg("simulate")
            .arg("--port-file")
            .arg(&port_file)
            .args(args);
        let (child, _) = spawn(&mut command, Some(&work.join(format!("{name}-sim.err"))));
        let pid = child_pid(&child);
        let mut sim = Self {
            child: Some(child),
            pid,
            port: 0,
            cpu_at_start: 0.0,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while sim.port == 0 {
            assert!(Instant::now() < deadline, "the simulator did not start");
            std::thread::sleep(Duration::from_millis(10));
            if let Ok(text) = fs::read_to_string(&port_file) {
                sim.port = text.trim().parse().unwrap_or(0);
            }
        }
        sim.cpu_at_start = process_cpu(pid);
        sim
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/services/v2", self.port)
    }

    fn ledger(&self) -> Ledger {
        let body = http_get(self.port, "/__simulator/ledger", None).expect("GET the ledger");
        serde_json::from_slice(&body).expect("the ledger is JSON")
    }

    /// One request the simulator stamps on its clock; returns that stamp and when (on ours)
    /// the request was about half-way.
    fn probe(&self) -> (u64, Instant) {
        let before = Instant::now();
        http_get(self.port, "/services/v2/order/certificate/1", Some(API_KEY))
            .expect("probe the simulator");
        let after = Instant::now();
        let midway = before + (after - before) / 2;
        let ledger = self.ledger();
        let stamp = ledger
            .requests
            .last()
            .expect("the probe is in the ledger")
            .received_us;
        (stamp, midway)
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
            let _ = wait4(child_pid(&child));
        }
    }
}

#[derive(Deserialize)]
struct Ledger {
    accepted: Vec<Accepted>,
    requests: Vec<RequestRecord>,
}

#[derive(Deserialize)]
struct Accepted {
    order_id: u64,
}

#[derive(Deserialize)]
struct RequestRecord {
    received_us: u64,
    method: String,
    path: String,
    status: u16,
}

impl Ledger {
    fn distinct_orders(&self) -> usize {
        let mut ids: Vec<u64> = self.accepted.iter().map(|a| a.order_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

impl RequestRecord {
    fn is_reissue(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/reissue")
    }
}

/// A plain HTTP/1.1 GET on loopback; returns the body of a 200.
fn http_get(port: u16, path: &str, key: Option<&str>) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    let key = key
        .map(|k| format!("X-DC-DEVKEY: {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{key}Connection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let mut length = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(io::Error::other(format!("GET {path}: {}", status.trim())));
    }
    Ok(body)
}

/// `N requests in Xs (R/s)` from the run's summary.
struct SendLine {
    requests: u64,
    secs: f64,
    rate: f64,
}

impl SendLine {
    fn find(log: &str) -> Option<Self> {
        let line = log.lines().find(|l| l.contains(" requests in "))?.trim();
        let (requests, rest) = line.split_once(" requests in ")?;
        let (secs, rest) = rest.split_once("s (")?;
        let rate = rest.strip_suffix("/s)")?;
        Some(Self {
            requests: requests.trim().parse().ok()?,
            secs: secs.parse().ok()?,
            rate: rate.parse().ok()?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The report

struct Report {
    cores: usize,
    rows: Vec<[String; 5]>,
    details: Vec<String>,
    total: Duration,
}

impl Report {
    fn new(cores: usize) -> Self {
        Self {
            cores,
            rows: Vec::new(),
            details: Vec::new(),
            total: Duration::ZERO,
        }
    }

    fn row(&mut self, figure: &str, result: String, target: &str, met: &str, limit: String) {
        println!("   {figure}: {result} [target {target}: {met}]");
        self.rows.push([
            figure.to_owned(),
            result,
            target.to_owned(),
            met.to_owned(),
            limit,
        ]);
    }

    fn detail(&mut self, text: String) {
        println!("   {text}");
        self.details.push(text);
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let date = time::OffsetDateTime::now_utc().date();
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Written by `cargo bench --bench throughput` on {date} (UTC): {} core(s) \
             (`available_parallelism`), {cpu_model}; load average at the end {}; the whole \
             benchmark took {:.0} s. Figures are measured, not asserted: on a shared machine \
             they move from run to run.\n",
            self.cores,
            load.join(" "),
            self.total.as_secs_f64()
        );
        let _ = writeln!(md, "| figure | result | target | met | what limits it |");
        let _ = writeln!(md, "|---|---|---|---|---|");
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(md, "\n## Details\n");
        for detail in &self.details {
            let _ = writeln!(md, "- {}", detail.replace('|', "\\|"));
        }
        let _ = writeln!(
            md,
            "\nEvery command but the virtual-time campaign is the release `reissuer` binary run as a child process against a \
             fresh `reissuer simulate` on 127.0.0.1 (HTTP/1.1, no TLS), journal in a temporary \
             directory with its normal durability (WAL, `synchronous=FULL`, every item committed \
             `in_flight` before its request leaves). Run manifests cycle through \
             {RUN_DISTINCT_CSRS} CSRs so that the simulator's CSR cache keeps its share of the CPU \
             small; the validate manifest gives every one of its rows its own key. Peak RSS and \
             client CPU come from `wait4`, simulator CPU from `/proc/<pid>/stat`, the rest of the \
             machine's CPU from `/proc/stat`. \"What limits it\" reads those CPU shares: a \
             component near 1 core (or the machine near all cores) is CPU-bound; well below, the \
             time goes to waiting on serial round trips (journal statements, fsync, HTTP)."
        );
        md
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn secs_us(us: u64) -> f64 {
    us as f64 / 1e6
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "?".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
}

fn file_size(path: &Path) -> String {
    fs::metadata(path).map_or_else(
        |_| "?".to_owned(),
        |m| format!("{:.0} MB", m.len() as f64 / 1e6),
    )
}

fn read(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
