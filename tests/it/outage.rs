//! Outages pause the run, they do not fail it: nothing listening, 500 to everything, and giving
//! up after `--give-up-after` with exit 6 and every unsent order still pending.

use std::time::{Duration, Instant};

use reissuer::simulator::{Faults, ReservedPort, Scenario};

use crate::support::{self, KEY, output, reissuer, text};

const ORDERS: u64 = 300;

fn run_cmd(
    dir: &std::path::Path,
    manifest: &std::path::Path,
    base_url: &str,
) -> std::process::Command {
    let mut cmd = support::run_unlimited(dir, manifest, base_url);
    cmd.args(["--max-attempts", "3"]);
    cmd
}

/// The report's rows as (state, attempts).
async fn report_rows(dir: &std::path::Path) -> Vec<(String, u32)> {
    support::report_json(dir)
        .await
        .iter()
        .map(|row| {
            (
                row["state"].as_str().expect("state").to_owned(),
                u32::try_from(row["attempts"].as_u64().expect("attempts")).expect("small"),
            )
        })
        .collect()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_while_nothing_listens_waits_and_sends_each_order_once_when_it_appears() {
    let reserved = ReservedPort::loopback().expect("a port");
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=ORDERS);
    let cmd = run_cmd(dir.path(), &manifest, &reserved.base_url());
    let running = tokio::task::spawn_blocking(move || {
        let mut cmd = cmd;
        cmd.output().expect("runs")
    });
    tokio::time::sleep(Duration::from_secs(8)).await;
    let sim = reserved
        .serve(Scenario {
            api_key: Some(KEY.to_owned()),
            ..Scenario::default()
        })
        .await
        .expect("serves");
    let out = running.await.expect("joins");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=ORDERS);
    // Refused connections cost no order an attempt.
    let rows = report_rows(dir.path()).await;
    assert_eq!(rows.len(), ORDERS as usize);
    assert!(
        rows.iter()
            .all(|(state, attempts)| state == "succeeded" && *attempts == 1),
        "{rows:?}"
    );
    // Cron sees why it waited.
    let log = stderr(&out);
    assert!(log.contains("CertCentral unreachable since"), "{log}");
    assert!(log.contains("next probe in"), "{log}");
    assert!(log.contains("CertCentral answers again"), "{log}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_500_to_everything_gets_probes_not_a_flood_and_each_order_once() {
    let outage = Duration::from_secs(8);
    let sim = support::simulator(Scenario {
        all_500_for: outage,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=ORDERS);
    let out = output(run_cmd(dir.path(), &manifest, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ledger = sim.ledger();
    support::assert_exactly_once(&ledger, 1..=ORDERS);
    let in_outage: Vec<_> = ledger
        .requests
        .iter()
        .filter(|r| u128::from(r.received_us) < outage.as_micros())
        .collect();
    let during = in_outage.len();
    let posts = in_outage.iter().filter(|r| r.method == "POST").count();
    eprintln!(
        "requests during the {outage:?} outage: {during} ({posts} reissues, {} GETs)",
        during - posts
    );
    // The first answers (up to --concurrency at once, 10) before the run of 500s is recognized,
    // then one probe at a time at 0.5-1 s, 1-2 s, 2-4 s, 4-8 s: well under three dozen.
    assert!(during <= 36, "{during} requests during the outage");
    assert!(during >= 3, "the outage was never seen: {during} requests");
    // The 500s cost no order an attempt: not those answered once the outage was recognized,
    // nor (given back) the two before it.
    let rows = report_rows(dir.path()).await;
    assert!(
        rows.iter()
            .all(|(state, attempts)| state == "succeeded" && *attempts == 1),
        "{rows:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_in_the_middle_of_a_run_pauses_it_and_costs_no_attempts() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=ORDERS);
    // A quota keeps sends waiting at the limiter when the outage begins: they must wait it out.
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--rate", "100/1s", "--max-attempts", "2"]);
    let running = tokio::task::spawn_blocking(move || {
        let mut cmd = cmd;
        cmd.output().expect("runs")
    });
    // Mid-run: once sending is under way (startup takes longer on a loaded machine).
    support::wait_until("20 reissues sent", Duration::from_secs(30), || {
        sim.ledger().accepted.len() >= 20
    })
    .await;
    sim.set_faults(Faults {
        error_500: 1.0,
        get_error_500: 1.0,
        ..Faults::default()
    });
    let before = sim.ledger().accepted.len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = sim.ledger().count_status(500);
    sim.set_faults(Faults::default());
    let out = running.await.expect("joins");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        before > 0 && before < ORDERS as usize,
        "{before} accepted before"
    );
    support::assert_exactly_once(&sim.ledger(), 1..=ORDERS);
    let rows = report_rows(dir.path()).await;
    assert!(
        rows.iter()
            .all(|(state, attempts)| state == "succeeded" && *attempts == 1),
        "{rows:?}"
    );
    let log = stderr(&out);
    assert!(log.contains("CertCentral unreachable since"), "{log}");
    eprintln!("requests answered 500 during the 4s outage: {during}");
    // Those in flight when it began (--concurrency 10), then probes.
    assert!(during <= 36, "{during} requests during the outage");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_outage_exits_3_and_status_says_since_when_certcentral_was_unreachable() {
    let reserved = ReservedPort::loopback().expect("a port");
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=20);
    let mut cmd = run_cmd(dir.path(), &manifest, &reserved.base_url());
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawns");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("waits"))
        .await
        .expect("joins");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let rows = report_rows(dir.path()).await;
    assert!(
        rows.iter()
            .all(|(state, attempts)| state == "pending" && *attempts == 0),
        "{rows:?}"
    );
    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let shown = output(status).await;
    let runs: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("JSON status");
    assert_eq!(runs[0]["last_stop"], "interrupted", "{runs}");
    assert!(runs[0]["unreachable_since"].is_string(), "{runs}");

    let sim = reserved
        .serve(Scenario {
            api_key: Some(KEY.to_owned()),
            ..Scenario::default()
        })
        .await
        .expect("serves");
    let mut resume = reissuer(dir.path());
    resume.args(["resume", "--rate", "unlimited"]);
    let out = output(resume).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=20);
    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let runs: serde_json::Value =
        serde_json::from_slice(&output(status).await.stdout).expect("JSON status");
    assert!(runs[0]["unreachable_since"].is_null(), "{runs}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_server_at_all_it_gives_up_with_exit_6_every_order_pending_and_resume_sends_each_once()
 {
    let reserved = ReservedPort::loopback().expect("a port");
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=ORDERS);
    let mut cmd = run_cmd(dir.path(), &manifest, &reserved.base_url());
    cmd.args(["--give-up-after", "5s"]);
    let started = Instant::now();
    let out = output(cmd).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let summary = stderr(&out);
    assert!(
        summary.contains("CertCentral unreachable since"),
        "{summary}"
    );
    assert!(summary.contains("reissuer resume"), "{summary}");
    let rows = report_rows(dir.path()).await;
    assert_eq!(rows.len(), ORDERS as usize);
    assert!(
        rows.iter()
            .all(|(state, attempts)| state == "pending" && *attempts == 0),
        "{rows:?}"
    );
    let mut status = reissuer(dir.path());
    status.arg("status");
    let shown = output(status).await;
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("CertCentral unreachable since"), "{shown}");

    let sim = reserved
        .serve(Scenario {
            api_key: Some(KEY.to_owned()),
            ..Scenario::default()
        })
        .await
        .expect("serves");
    let mut resume = reissuer(dir.path());
    resume.args(["resume", "--rate", "unlimited"]);
    let out = output(resume).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=ORDERS);
    let mut status = reissuer(dir.path());
    status.arg("status");
    let shown = output(status).await;
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(!shown.contains("unreachable"), "{shown}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_only_503_without_retry_after_is_an_outage_given_up_with_exit_6() {
    let sim = support::simulator(Scenario {
        all_503_for: Duration::from_secs(600),
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=30);
    let mut cmd = run_cmd(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--give-up-after", "3s"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawns");
    // Taken for throttling, it would pause with ever longer waits and never give up.
    let started = Instant::now();
    while child.try_wait().expect("polls").is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().expect("kill");
            panic!("still running after 60 s: the 503s were never taken for an outage");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = child.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let rows = report_rows(dir.path()).await;
    assert!(
        rows.iter()
            .all(|(state, attempts)| state == "pending" && *attempts == 0),
        "{rows:?}"
    );
    assert!(sim.ledger().accepted.is_empty());
    sim.shutdown().await;
}
