//! Reruns planned from an earlier run of the same inputs: taken only when nothing that shapes a
//! payload changed and the key is the same account's, and planned as the normal path would.

use std::path::Path;

use reissuer::simulator::Scenario;

use crate::support::{self, output, reissuer, text};

const MEMO: &str = "plan taken from run";

/// `run MANIFEST` against `base_url`, as fast as the simulator takes it; the exit code must be
/// `code`. Returns the command's stderr.
async fn rerun(dir: &Path, manifest: &Path, base_url: &str, extra: &[&str], code: i32) -> String {
    let mut cmd = support::run_against(dir, manifest, base_url);
    cmd.args(["--rate", "unlimited"]).args(extra);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn report(dir: &Path, run: u32) -> Vec<serde_json::Value> {
    let mut cmd = reissuer(dir);
    cmd.args(["report", "--format", "json", "--run", &run.to_string()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("json report")
}

/// Makes every run of the journal in `dir` look as if it had recorded no inputs, so the next
/// run takes the normal path.
async fn forget_inputs(dir: &Path) {
    use sqlx::Connection as _;
    let journal = dir.join("journal.db");
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", journal.display()))
        .await
        .expect("open the journal");
    sqlx::query("UPDATE runs SET input_digest = NULL")
        .execute(&mut db)
        .await
        .expect("forget the inputs");
    db.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_rerun_is_planned_from_the_earlier_run_as_the_normal_path_plans_it() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=8);
    let first = rerun(dir.path(), &manifest, &sim.base_url(), &[], 0).await;
    assert!(!first.contains(MEMO), "{first}");

    let memo = rerun(dir.path(), &manifest, &sim.base_url(), &[], 0).await;
    assert!(memo.contains("plan taken from run 1's"), "{memo}");
    assert!(!memo.contains("CSRs:"), "validated all the same: {memo}");
    forget_inputs(dir.path()).await;
    let normal = rerun(dir.path(), &manifest, &sim.base_url(), &[], 0).await;
    assert!(!normal.contains(MEMO), "{normal}");
    support::assert_exactly_once(&sim.ledger(), 1..=8);

    let (memo, normal) = (report(dir.path(), 2).await, report(dir.path(), 3).await);
    assert_eq!(memo.len(), 8);
    assert_eq!(memo, normal);
    for row in &memo {
        assert_eq!(row["state"], "skipped", "{row}");
        assert_eq!(row["from_run"], 1, "{row}");
        assert!(row["request_id"].as_u64().is_some(), "{row}");
    }
    let status = |run: u32| {
        let mut cmd = reissuer(dir.path());
        cmd.args(["status", "--run", &run.to_string()]);
        cmd
    };
    // Everything but the run's number and its times.
    let shown = |out: std::process::Output, run: u32| -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .replace(&format!("run {run}"), "run N")
            .lines()
            .filter(|line| !line.trim_start().starts_with("started "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        shown(output(status(2)).await, 2),
        shown(output(status(3)).await, 3)
    );

    // The run planned from a plan is itself one to plan from.
    let again = rerun(dir.path(), &manifest, &sim.base_url(), &[], 0).await;
    assert!(again.contains("plan taken from run 3's"), "{again}");
    support::assert_exactly_once(&sim.ledger(), 1..=8);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_changed_byte_in_the_manifest_takes_the_normal_path_and_sends_that_row() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=4);
    rerun(dir.path(), &manifest, &sim.base_url(), &[], 0).await;
    let edited = std::fs::read_to_string(&manifest)
        .expect("read")
        .replace("2,example.com,www.", "2,example.com,ww2.");
    std::fs::write(&manifest, edited).expect("write");
    let log = rerun(dir.path(), &manifest, &sim.base_url(), &[], 0).await;
    assert!(!log.contains(MEMO), "{log}");
    let per_order = sim.ledger().accepted_per_order();
    assert_eq!(per_order.get(&2), Some(&2), "the changed row was not sent");
    for order in [1, 3, 4] {
        assert_eq!(per_order.get(&order), Some(&1), "order {order}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_csr_file_takes_the_normal_path_and_sends_every_order_naming_it() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    rerun(dir.path(), &manifest, &sim.base_url(), &[], 0).await;
    // A new key: the manifest's bytes are the same, the CSR file's are not.
    std::fs::write(
        dir.path().join("example.csr"),
        support::csr_pem("example.com"),
    )
    .expect("write csr");
    let log = rerun(dir.path(), &manifest, &sim.base_url(), &[], 0).await;
    assert!(!log.contains(MEMO), "{log}");
    let per_order = sim.ledger().accepted_per_order();
    for order in 1..=3 {
        assert_eq!(per_order.get(&order), Some(&2), "order {order}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_key_takes_the_normal_path_and_sends_every_order() {
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
    rerun(dir.path(), &manifest, &rehearsal.base_url(), &[], 0).await;
    let log = rerun(dir.path(), &manifest, &production.base_url(), &[], 0).await;
    assert!(!log.contains(MEMO), "{log}");
    support::assert_exactly_once(&rehearsal.ledger(), 1..=5);
    support::assert_exactly_once(&production.ledger(), 1..=5);
    rehearsal.shutdown().await;
    production.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_recorded_invalid_rows_is_never_planned_from() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    let mut csv = std::fs::read_to_string(&manifest).expect("read");
    csv.push_str("4,example.com,www.example.com,example.csr,2,md5\n");
    std::fs::write(&manifest, csv).expect("write");
    // Exit 1: a row is invalid (recorded as such), the others are sent.
    let first = rerun(
        dir.path(),
        &manifest,
        &sim.base_url(),
        &["--skip-invalid"],
        1,
    )
    .await;
    assert!(first.contains("recorded as invalid"), "{first}");
    let log = rerun(
        dir.path(),
        &manifest,
        &sim.base_url(),
        &["--skip-invalid"],
        1,
    )
    .await;
    assert!(!log.contains(MEMO), "{log}");
    assert!(log.contains("recorded as invalid"), "{log}");
    support::assert_exactly_once(&sim.ledger(), 1..=3);
    sim.shutdown().await;
}
