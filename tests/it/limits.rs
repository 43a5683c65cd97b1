//! The account's rate limits across a whole campaign: every request of every command counts,
//! and each command starts with the windows as the last one left them.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use reissuer::config::Quota;
use reissuer::simulator::Scenario;

use crate::support::{self, output, reissuer, text};

/// Orders `ids` that name only the order and its CSR (a fresh key each, for the simulator's
/// name of the order); the rest is filled from the live order.
fn fill_manifest(dir: &Path, ids: impl IntoIterator<Item = u64>) {
    let mut csv = String::from("order_id,csr_file\n");
    for id in ids {
        let csr = support::csr_pem(&format!("order-{id}.example.com"));
        std::fs::write(dir.join(format!("{id}.csr")), csr).expect("write csr");
        writeln!(csv, "{id},{id}.csr").expect("write");
    }
    std::fs::write(dir.join("orders.csv"), csv).expect("write manifest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_reissue_collect_and_a_rerun_one_after_another_stay_inside_every_window() {
    let short = Quota {
        limit: 20,
        window: Duration::from_secs(1),
    };
    let long = Quota {
        limit: 50,
        window: Duration::from_secs(4),
    };
    let sim = support::simulator(Scenario {
        quotas: vec![short, long],
        ..Scenario::default()
    })
    .await;
    let rates = ["--rate", "20/1s", "--rate", "50/4s"];
    let dir = tempfile::tempdir().expect("tempdir");
    fill_manifest(dir.path(), 1..=20);

    // 20 order lookups and 20 reissues: the long window is nearly full when it ends.
    let mut run = support::run_against(dir.path(), Path::new("orders.csv"), &sim.base_url());
    run.arg("--fill-from-order").args(rates);
    let out = output(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first_line = stderr.lines().find(|line| line.contains("run 1:"));
    assert!(
        first_line.is_some_and(
            |line| line.contains("20 reissues: ") && line.contains(" at 20/1s + 50/4s")
        ),
        "no expected duration in the first log line: {stderr}"
    );

    // Right after: 20 reissue lists and 20 downloads, in a new process that must count the
    // requests `run` made.
    let mut collect = reissuer(dir.path());
    collect
        .args(["collect", "--out", "certs", "--wait", "20s"])
        .args(["--base-url", &sim.base_url()])
        .args(rates);
    let out = output(collect).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Right after that: new keys for the same orders, in a third process that must count what
    // `collect` asked.
    fill_manifest(dir.path(), 1..=20);
    let mut rerun = support::run_against(dir.path(), Path::new("orders.csv"), &sim.base_url());
    rerun.arg("--fill-from-order").args(rates);
    let out = output(rerun).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let ledger = sim.ledger();
    assert_eq!(ledger.count_status(429), 0, "the account was throttled");
    assert!(support::most_in_any_window(&ledger, short.window) <= 20);
    assert!(support::most_in_any_window(&ledger, long.window) <= 50);
    let per_order = ledger.accepted_per_order();
    assert_eq!(per_order.len(), 20);
    assert!(per_order.values().all(|n| *n == 2), "{per_order:?}");
    // The windows were really full: at least 20 order lookups (the rerun reads the journal's
    // facts), 40 reissues, 40 collect requests.
    assert!(ledger.requests.len() >= 100, "{}", ledger.requests.len());
    sim.shutdown().await;
}

#[test]
fn run_help_names_the_default_quotas_and_who_shares_them() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reissuer"))
        .args(["run", "--help"])
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--rate 100/5s --rate 1000/3m"), "{help}");
    assert!(help.contains("per API key"), "{help}");
}
