//! The journal in PostgreSQL (a throwaway cluster per test binary, a database per test): the
//! same commands and promises as with SQLite, and kill -9 at random moments.

use std::time::Duration;

use reissuer::simulator::{Faults, Scenario};

use crate::pg_cluster;
use crate::support::{self, output, reissuer, text};

/// The binary with its journal in `url` instead of the test directory's SQLite file.
fn on_postgres(mut cmd: std::process::Command, url: &str) -> std::process::Command {
    cmd.env("REISSUER_JOURNAL", url);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_postgres_sends_each_order_once_and_reports_like_sqlite() {
    let Some(url) = pg_cluster::fresh_database() else {
        return;
    };
    let sim = support::simulator(Scenario {
        faults: Faults {
            error_500: 0.05,
            drop_after_commit: 0.05,
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=120);
    let mut cmd = on_postgres(
        support::run_against(dir.path(), &manifest, &sim.base_url()),
        &url,
    );
    cmd.args(["--rate", "unlimited", "--max-attempts", "10"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=120);
    assert!(
        !text(&out).contains("journal.db"),
        "the SQLite file was used: {}",
        text(&out)
    );

    let mut status = on_postgres(reissuer(dir.path()), &url);
    status.args(["status", "--run", "1"]);
    let out = output(status).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("succeeded 120"), "{}", text(&out));

    let mut report = on_postgres(reissuer(dir.path()), &url);
    report.args(["report", "--format", "json"]);
    let out = output(report).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(rows.as_array().map(Vec::len), Some(120), "{rows}");

    // A rerun of the same manifest finds every order done and sends nothing.
    let mut again = on_postgres(
        support::run_against(dir.path(), &manifest, &sim.base_url()),
        &url,
    );
    again.args(["--rate", "unlimited"]);
    let out = output(again).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sim.ledger().accepted.len(), 120, "a rerun sent again");
    // Its one CSR was verified by the first run, whose journal remembers it.
    assert!(
        text(&out).contains("CSRs: 0 verified, 1 verified by an earlier run"),
        "{}",
        text(&out)
    );
    assert!(
        !dir.path().join("journal.db").exists(),
        "a SQLite journal appeared beside the PostgreSQL one"
    );
    sim.shutdown().await;
}

/// The SQLite kill -9 torture against a PostgreSQL journal: each life is killed at a random
/// moment, the next one resumes, every order is accepted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_at_random_moments_on_postgres_never_sends_twice_nor_drops_one() {
    let Some(url) = pg_cluster::fresh_database() else {
        return;
    };
    let seed: u64 = std::env::var("REISSUER_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("torture seed: {seed} (replay with REISSUER_TORTURE_SEED={seed})");
    let orders = 200;
    let wanted_kills = 8;
    let sim = support::simulator(Scenario {
        faults: Faults {
            error_500: 0.05,
            error_503: 0.03,
            drop_after_commit: 0.03,
            latency: Duration::from_millis(5),
            latency_jitter: Duration::from_millis(40),
            ..Faults::default()
        },
        retry_after: Some(Duration::from_secs(1)),
        seed,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=orders);
    let mut state = seed | 1;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let mut kills = 0;
    while kills < wanted_kills {
        let mut cmd = on_postgres(
            support::run_against(dir.path(), &manifest, &sim.base_url()),
            &url,
        );
        cmd.args(["--max-attempts", "20", "--rate", "20/1s", "--timeout", "3s"]);
        cmd.args(["--settle", "3s"]);
        cmd.stdout(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawns");
        tokio::time::sleep(Duration::from_millis(300 + next(500))).await;
        if let Some(status) = child.try_wait().expect("polls") {
            eprintln!("life ended by itself with {status} after {kills} kills");
            break;
        }
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
        kills += 1;
    }
    let mut last = None;
    for _ in 0..5 {
        let mut cmd = on_postgres(
            support::run_against(dir.path(), &manifest, &sim.base_url()),
            &url,
        );
        cmd.args(["--rate", "unlimited", "--max-attempts", "20"]);
        cmd.args(["--timeout", "3s", "--settle", "3s"]);
        let out = output(cmd).await;
        let done = out.status.code() == Some(0);
        last = Some(out);
        if done {
            break;
        }
    }
    let out = last.expect("ran");
    eprintln!("{kills} kills (seed {seed})");
    support::assert_exactly_once(&sim.ledger(), 1..=orders);
    assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", text(&out));
    assert!(
        kills >= wanted_kills * 4 / 5,
        "seed {seed}: only {kills} kills landed before the run finished"
    );
    sim.shutdown().await;
}
