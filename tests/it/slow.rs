//! A CertCentral slower than the client's timeout: it commits reissues after the client gave up
//! on them. `--settle` keeps every order exactly once.

use std::time::Duration;

use reissuer::simulator::{Faults, Scenario};

use crate::support::{self, output, reissuer, text};

/// CertCentral commits each reissue 200–600 ms after it arrived, whether or not the client is
/// still there; 3 % get a 500 (not committed), 3 % are committed and their connection dropped.
fn slow_server(seed: u64) -> Scenario {
    Scenario {
        commit_delay: Duration::from_millis(200),
        commit_delay_jitter: Duration::from_millis(400),
        faults: Faults {
            error_500: 0.03,
            drop_after_commit: 0.03,
            ..Faults::default()
        },
        seed,
        ..Scenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_lost_to_a_slow_certcentral_are_waited_for_never_sent_twice() {
    // 300 orders with 50 ms timeouts keep both cores busy.
    let _cores = support::cores_to_myself().await;
    let sim = support::simulator(slow_server(18)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=300);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--rate", "unlimited", "--timeout", "50ms", "--settle", "2s"]);
    let mut out = output(cmd).await;
    // A lookup's GET has the same 50 ms timeout: on a loaded machine one may time out and leave
    // its order uncertain for the next process. `resume` decides those.
    let mut resumes = 0;
    while out.status.code() == Some(1) && resumes < 3 {
        resumes += 1;
        let mut resume = reissuer(dir.path());
        resume.args([
            "resume",
            "--rate",
            "unlimited",
            "--timeout",
            "50ms",
            "--settle",
            "2s",
        ]);
        out = output(resume).await;
    }
    let ledger = sim.ledger();
    support::assert_exactly_once(&ledger, 1..=300);
    assert_eq!(
        out.status.code(),
        Some(0),
        "after {resumes} resume(s): {}",
        text(&out)
    );
    assert!(
        ledger.count_status(0) > 250,
        "the client did not give up on most requests: {} answers lost",
        ledger.count_status(0)
    );
    let posts = ledger
        .requests
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert!(
        posts > 300,
        "no reissue had to be sent again (a 500 commits nothing): {posts} POSTs"
    );
    if resumes == 0 {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("looked up again within --settle"),
            "the summary does not say orders settled: {}",
            text(&out)
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_left_while_orders_settle_says_so_and_resume_decides_them_later() {
    // Everything is committed 1.5 s after it arrives, long after the client gave up.
    let sim = support::simulator(Scenario {
        commit_delay: Duration::from_millis(1500),
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.args([
        "--rate",
        "unlimited",
        "--timeout",
        "100ms",
        "--settle",
        "1m",
    ]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawns");
    // Once all three were committed the run still settles: the lookups that found nothing
    // wait a growing interval. Interrupt it while it waits.
    let started = std::time::Instant::now();
    while sim.ledger().accepted.len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("waits"))
        .await
        .expect("joins");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("still settling: "), "{}", text(&out));

    // The next process counts the window from when the requests were sent; the reissues are
    // there by now, so it finds them at once instead of waiting a minute.
    let mut resume = reissuer(dir.path());
    resume.args(["resume", "--rate", "unlimited", "--settle", "1m"]);
    let resumed = std::time::Instant::now();
    let out = output(resume).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(resumed.elapsed() < Duration::from_secs(30));
    support::assert_exactly_once(&sim.ledger(), 1..=3);
    sim.shutdown().await;
}

/// kill -9 at random moments while the slow server still holds requests it will commit after
/// the client is gone; then finish with `run` and check the ledger. Seeded like the torture
/// test in `faults`: REISSUER_TORTURE_SEED replays a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_against_a_slow_certcentral_never_sends_twice_nor_drops_one() {
    let _cores = support::cores_to_myself().await;
    let seed = support::torture_seed("slow torture");
    let orders = 150;
    let sim = support::simulator(slow_server(seed)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=orders);
    let mut next = support::picker(seed);
    // The server commits up to 600 ms after arrival; the limiter holds a request at most
    // about 200 ms (4 in flight, 20/s). A 2 s window covers both.
    let flags = [
        "--max-attempts",
        "20",
        "--timeout",
        "300ms",
        "--settle",
        "2s",
    ];
    let mut kills = 0;
    while kills < 8 {
        let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
        cmd.args(flags)
            .args(["--rate", "20/1s", "--concurrency", "4"]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let life = Duration::from_millis(200 + next(600));
        if !support::kill_nine_after(cmd, life).await {
            eprintln!("after {kills} kills");
            break;
        }
        kills += 1;
    }
    let out = support::rerun_until_done(5, || {
        let mut cmd = support::run_unlimited(dir.path(), &manifest, &sim.base_url());
        cmd.args(flags);
        cmd
    })
    .await;
    eprintln!("{kills} kills (seed {seed})");
    support::assert_exactly_once(&sim.ledger(), 1..=orders);
    assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", text(&out));
    assert!(kills >= 6, "seed {seed}: only {kills} kills landed");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_help_documents_settle_and_its_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    for command in ["run", "resume", "retry"] {
        let mut help = reissuer(dir.path());
        help.args([command, "--help"]);
        let out = output(help).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("--settle <DURATION>") && text.contains("[default: 10m]"),
            "{command} --help: {text}"
        );
    }
}
