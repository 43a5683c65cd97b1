//! Sending against the simulator: quotas, exactly once, reruns, reports, credentials, locks.

use std::time::{Duration, Instant};

use reissuer::config::Quota;
use reissuer::simulator::Scenario;

use crate::support::{self, KEY, output, reissuer, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_orders_under_tight_quotas_go_out_once_without_a_429() {
    let _cores = support::cores_to_myself().await;
    let short = Quota {
        limit: 40,
        window: Duration::from_secs(1),
    };
    let long = Quota {
        limit: 150,
        window: Duration::from_secs(5),
    };
    let sim = support::simulator(Scenario {
        quotas: vec![short, long],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=300);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--rate", "40/1s", "--rate", "150/5s", "--concurrency", "10"]);
    let started = Instant::now();
    let out = output(cmd).await;
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ledger = sim.ledger();
    support::assert_exactly_once(&ledger, 1..=300);
    assert_eq!(ledger.count_status(429), 0, "the account was throttled");
    assert!(support::most_in_any_window(&ledger, short.window) <= 40);
    assert!(support::most_in_any_window(&ledger, long.window) <= 150);
    // The fastest the windows allow: 150 by 3 s (40 a second), then, as the first leave the
    // 5-s window, 150 more from 5 s to 8 s. A sane pace finishes well before 30 s.
    eprintln!("300 orders took {elapsed:?}");
    assert!(
        elapsed >= Duration::from_secs(8),
        "quotas were not applied: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(30),
        "far slower than the quotas allow: {elapsed:?}"
    );

    // A rerun of the same manifest sends nothing.
    let mut again = reissuer(dir.path());
    again
        .arg("run")
        .arg(&manifest)
        .args(["--base-url", &sim.base_url()]);
    let out = output(again).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sim.ledger().accepted.len(), 300, "a rerun sent again");

    // The report's request ids are the ones the simulator handed out.
    let mut report = reissuer(dir.path());
    report.args(["report", "--run", "1", "--format", "json"]);
    let out = output(report).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(rows.len(), 300);
    for row in &rows {
        let order_id = row["order_id"].as_u64().expect("order id");
        let accepted = ledger
            .accepted
            .iter()
            .find(|a| a.order_id == order_id)
            .expect("in ledger");
        assert_eq!(row["state"], "succeeded");
        assert_eq!(
            row["request_id"].as_u64(),
            Some(accepted.request_id),
            "{row}"
        );
        assert_eq!(row["http_status"].as_u64(), Some(201));
    }
    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let out = output(status).await;
    let runs: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json parses");
    assert_eq!(runs[0]["counts"]["succeeded"], 300);
    assert_eq!(runs[1]["counts"]["skipped"], 300);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_after_one_request_before_anything_is_planned_and_never_shows_the_key()
{
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=20);
    let wrong = "wrong-key-5d2e8f-must-not-leak";
    let mut cmd = reissuer(dir.path());
    cmd.env("DIGICERT_API_KEY", wrong).env("RUST_LOG", "trace");
    cmd.arg("run")
        .arg(&manifest)
        .args(["--base-url", &sim.base_url()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let ledger = sim.ledger();
    assert_eq!(
        ledger.requests.len(),
        1,
        "more than one request after a 401/403"
    );
    assert_eq!(ledger.requests[0].path, "/services/v2/user/me");
    assert!(ledger.accepted.is_empty());
    let shown = text(&out);
    assert!(!shown.contains(wrong), "the key leaked into the output");
    assert!(shown.contains("refused the API key"), "{shown}");
    // The key was asked about before anything was planned: no journal was left behind.
    assert!(!dir.path().join("journal.db").exists());
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        let needle = wrong.as_bytes();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "key found in {}",
            path.display()
        );
    }
    assert!(!shown.contains(KEY));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_order_fails_with_its_404_and_the_rest_succeed() {
    let sim = support::simulator(Scenario {
        missing_orders: vec![13..=13],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 10..=15);
    let cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let mut report = reissuer(dir.path());
    report.args(["report"]);
    let out = output(report).await;
    let csv = String::from_utf8_lossy(&out.stdout).to_string();
    let row = csv
        .lines()
        .find(|l| l.starts_with("13,"))
        .expect("row for 13");
    assert!(row.starts_with("13,failed,1,404,not_found|order,"), "{row}");
    assert_eq!(csv.lines().filter(|l| l.contains(",succeeded,")).count(), 5);
    support::assert_exactly_once(&sim.ledger(), [10, 11, 12, 14, 15]);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_with_exit_5() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=2);
    let held = reissuer::journal::Journal::open(&dir.path().join("journal.db"))
        .await
        .expect("first writer");
    let mut cmd = reissuer(dir.path());
    cmd.arg("run")
        .arg(&manifest)
        .args(["--base-url", "http://127.0.0.1:9/services/v2"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked by another reissuer process"));
    held.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_row_is_sent_and_unchanged_rows_are_skipped() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    let cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    assert_eq!(output(cmd).await.status.code(), Some(0));
    let edited: String = std::fs::read_to_string(&manifest)
        .expect("read")
        .lines()
        .map(|line| match line.starts_with("2,") {
            true => format!("{}\n", line.replace("sha256", "sha384")),
            false => format!("{line}\n"),
        })
        .collect();
    std::fs::write(&manifest, edited).expect("write");
    let cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let per_order = sim.ledger().accepted_per_order();
    assert_eq!(per_order.get(&1), Some(&1));
    assert_eq!(
        per_order.get(&2),
        Some(&2),
        "the corrected row was not sent"
    );
    assert_eq!(per_order.get(&3), Some(&1));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_sends_transient_failures_again_and_all_only_when_asked() {
    let sim = support::simulator(Scenario {
        missing_orders: vec![3..=3],
        faults: reissuer::simulator::Faults {
            error_500: 1.0,
            ..Default::default()
        },
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--max-attempts", "2", "--rate", "unlimited"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(sim.ledger().accepted.is_empty());

    sim.set_faults(reissuer::simulator::Faults::default());
    let mut retry = reissuer(dir.path());
    retry.args(["retry", "--rate", "unlimited"]);
    let out = output(retry).await;
    // Order 3 does not exist: a rejection, which plain retry leaves alone.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), [1, 2]);

    let mut report = reissuer(dir.path());
    report.arg("report");
    let csv = String::from_utf8(output(report).await.stdout).expect("utf8");
    assert!(csv.lines().any(|l| l.starts_with("3,failed,")), "{csv}");

    // --all sends the rejected one again (here to an account where it exists).
    let other = support::simulator(Scenario::default()).await;
    let mut retry = reissuer(dir.path());
    retry.args([
        "retry",
        "--all",
        "--rate",
        "unlimited",
        "--base-url",
        &other.base_url(),
    ]);
    let out = output(retry).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&other.ledger(), [3]);
    sim.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_readable_by_others_is_warned_about_and_still_used() {
    use std::os::unix::fs::PermissionsExt;
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=1);
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("write");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut cmd = reissuer(dir.path());
    cmd.env_remove("DIGICERT_API_KEY");
    cmd.arg("run")
        .arg(&manifest)
        .args(["--base-url", &sim.base_url()]);
    cmd.arg("--api-key-file").arg(&key_file);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("readable by other users"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(KEY));
    support::assert_exactly_once(&sim.ledger(), [1]);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_against_another_account_skips_nothing() {
    let rehearsal = support::simulator(Scenario {
        account_id: Some(1_000_001),
        ..Scenario::default()
    })
    .await;
    let production = support::simulator(Scenario {
        account_id: Some(2_000_002),
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=5);
    for sim in [&rehearsal, &production] {
        let cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    support::assert_exactly_once(&rehearsal.ledger(), 1..=5);
    support::assert_exactly_once(&production.ledger(), 1..=5);
    rehearsal.shutdown().await;
    production.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_taken_over_by_a_newer_run_is_not_sent_from_the_older_one() {
    let sim = support::simulator(Scenario {
        faults: reissuer::simulator::Faults {
            latency: Duration::from_millis(300),
            ..Default::default()
        },
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Run 1 is stopped at once: its orders stay pending with the old CSR.
    let old = support::tls_manifest(dir.path(), 1..=3);
    let mut cmd = support::run_against(dir.path(), &old, &sim.base_url());
    cmd.args(["--rate", "1/10s"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = cmd.spawn().expect("spawns");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("waits"))
        .await
        .expect("joins");
    assert_eq!(out.status.code(), Some(3));
    let sent_by_run_1 = sim.ledger().accepted_per_order();

    // A corrected manifest (new CSR) goes out as run 2.
    let new = support::tls_manifest(dir.path(), 1..=3);
    let mut cmd = support::run_against(dir.path(), &new, &sim.base_url());
    cmd.args(["--rate", "unlimited"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A later plain resume finds nothing of run 1 to send: the stale CSRs never leave.
    let mut resume = reissuer(dir.path());
    resume.args(["resume", "--rate", "unlimited"]);
    let out = output(resume).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ledger = sim.ledger();
    for (order, count) in ledger.accepted_per_order() {
        let expected = 1 + sent_by_run_1.get(&order).copied().unwrap_or(0);
        assert_eq!(count, expected, "order {order}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_pauses_everyone_and_uses_up_no_attempts() {
    let sim = support::simulator(Scenario {
        faults: reissuer::simulator::Faults {
            error_503: 1.0,
            ..Default::default()
        },
        retry_after: Some(Duration::from_secs(1)),
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    // One attempt each: a 503 that counted would fail the order.
    cmd.args(["--max-attempts", "1", "--rate", "unlimited"]);
    let running = tokio::task::spawn_blocking(move || cmd.output().expect("runs"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    sim.set_faults(reissuer::simulator::Faults::default());
    let out = running.await.expect("joins");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ledger = sim.ledger();
    support::assert_exactly_once(&ledger, 1..=3);
    // Everyone waits out Retry-After between tries: at most the three orders once a second
    // (plus the first lone request), not a storm of hundreds.
    let throttled = ledger.count_status(503);
    assert!((1..=12).contains(&throttled), "{throttled} answers of 503");
    let mut report = reissuer(dir.path());
    report.args(["report", "--format", "json"]);
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&output(report).await.stdout).expect("json");
    assert!(rows.iter().all(|row| row["attempts"] == 1), "{rows:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_parse_as_json() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=2);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--log-format", "json"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    assert!(!logs.is_empty(), "{stderr}");
    assert!(logs.iter().all(|log| log["level"].is_string()), "{stderr}");
    sim.shutdown().await;
}
