//! Resuming a run whose last orders were in flight when it died.

use std::time::{Duration, Instant};

use reissuer::simulator::Scenario;

use crate::support::{self, output, reissuer, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_orders_in_flight_at_a_kill_are_each_sent_once_on_resume_and_it_exits_0() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    // One request per 10 s: after the first answer, orders 2 and 3 are marked in flight and
    // wait for the limiter, where the kill finds them; they never reached CertCentral.
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--rate", "1/10s", "--concurrency", "3"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawns");
    let started = Instant::now();
    while sim.ledger().accepted.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing was sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    assert_eq!(sim.ledger().accepted.len(), 1, "only order 1 left");
    // On resume their requests may still arrive for a while (--settle after they were
    // marked): the lookups find nothing and look again; the only page, read meanwhile, holds
    // no pending item. Once the window is over they go back to pending and must be sent.
    let mut resume = reissuer(dir.path());
    resume.args([
        "resume",
        "--base-url",
        &sim.base_url(),
        "--rate",
        "unlimited",
        "--timeout",
        "6s",
        "--settle",
        "6s",
    ]);
    let out = output(resume).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=3);
    sim.shutdown().await;
}
