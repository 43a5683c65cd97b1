//! Why a run stopped, when it has more than one reason: the one that tells the operator most.

use std::time::{Duration, Instant};

use reissuer::simulator::Scenario;

use crate::support::{self, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_refused_after_ctrl_c_is_reported_as_refused_credentials_with_exit_4() {
    // Every reissue is processed 2 s after it arrives, so requests are still on their way to
    // CertCentral when the signal comes, and are refused once the key is revoked.
    let sim = support::simulator(Scenario {
        commit_delay: Duration::from_secs(2),
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=40);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--rate", "unlimited", "--concurrency", "4"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawns");
    // The first answer opens the other slots: four reissues leave at once and wait out the delay.
    let started = Instant::now();
    while sim.ledger().accepted.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing was sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    sim.revoke_key();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("waits"))
        .await
        .expect("joins");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("credentials refused"),
        "{}",
        text(&out)
    );
    let ledger = sim.ledger();
    assert_eq!(
        ledger.accepted.len(),
        1,
        "only the first reissue was accepted"
    );
    assert!(
        ledger.count_status(403) >= 1,
        "no request was refused after the signal: {:?}",
        ledger.requests
    );
    sim.shutdown().await;
}
