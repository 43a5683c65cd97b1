//! Exactly once under faults, signals and kill -9; reconciliation outcomes; secrets; bad journals.

use std::time::{Duration, Instant};

use reissuer::simulator::{Faults, Scenario};

use crate::support::{self, KEY, output, reissuer, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_dropped_connections_still_end_exactly_once() {
    let sim = support::simulator(Scenario {
        faults: Faults {
            error_500: 0.05,
            error_503: 0.03,
            error_500_after_commit: 0.03,
            drop_after_commit: 0.03,
            ..Faults::default()
        },
        retry_after: Some(Duration::from_secs(1)),
        seed: 7,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=200);
    let mut cmd = support::run_unlimited(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--max-attempts", "10"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=200);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_found_by_reconciliation_not_sent_again() {
    let sim = support::simulator(Scenario {
        faults: Faults {
            drop_after_commit: 1.0,
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=5);
    let out = output(support::run_unlimited(
        dir.path(),
        &manifest,
        &sim.base_url(),
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=5);
    let mut report = reissuer(dir.path());
    report.arg("report");
    let csv = String::from_utf8(output(report).await.stdout).expect("utf8");
    assert_eq!(
        csv.matches("confirmed by reconciliation").count(),
        5,
        "{csv}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_arrived_is_sent_again() {
    let sim = support::simulator(Scenario {
        faults: Faults {
            error_500: 1.0,
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    let mut cmd = support::run_unlimited(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--max-attempts", "20"]);
    let running = tokio::task::spawn_blocking(move || cmd.output().expect("runs"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sim.set_faults(Faults::default());
    let out = running.await.expect("joins");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ledger = sim.ledger();
    support::assert_exactly_once(&ledger, 1..=3);
    assert!(ledger.count_status(500) >= 3, "the faults never fired");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecidable_outcome_stays_uncertain_until_it_can_be_decided() {
    let sim = support::simulator(Scenario {
        faults: Faults {
            drop_after_commit: 1.0,
            get_error_500: 1.0,
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=2);
    let out = output(support::run_unlimited(
        dir.path(),
        &manifest,
        &sim.base_url(),
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let mut report = reissuer(dir.path());
    report.arg("report");
    let csv = String::from_utf8(output(report).await.stdout).expect("utf8");
    assert_eq!(csv.matches(",uncertain,").count(), 2, "{csv}");
    assert_eq!(sim.ledger().accepted.len(), 2);

    sim.set_faults(Faults::default());
    let mut resume = reissuer(dir.path());
    resume.args(["resume", "--rate", "unlimited"]);
    let out = output(resume).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=2);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_with_exit_3_and_resume_finishes_exactly_once() {
    let sim = support::simulator(Scenario {
        faults: Faults {
            latency: Duration::from_millis(50),
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=200);
    // A quota keeps sends queued at the limiter when the signal comes: they must not leave.
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--concurrency", "4", "--rate", "10/1s"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawns");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let signalled = Instant::now();
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let accepted_at_signal = sim.ledger().accepted.len();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("waits"))
        .await
        .expect("joins");
    assert!(signalled.elapsed() < Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let sent_before = sim.ledger().accepted.len();
    // At most one request may have been on the wire as the signal landed.
    assert!(
        sent_before <= accepted_at_signal + 1,
        "{} reissues arrived after the signal",
        sent_before - accepted_at_signal
    );
    assert!(
        sent_before > 0 && sent_before < 200,
        "{sent_before} sent before the signal"
    );

    let mut resume = reissuer(dir.path());
    resume.args(["resume", "--rate", "unlimited"]);
    let out = output(resume).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=200);
    sim.shutdown().await;
}

/// Really kill -9s the binary at random moments against a faulty server, reruns until done,
/// and checks the server's ledger. Seeded: REISSUER_TORTURE_SEED replays a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_at_random_moments_never_sends_twice_nor_drops_one() {
    let seed = support::torture_seed("torture");
    // Larger runs for a soak: REISSUER_TORTURE_ORDERS=2000 REISSUER_TORTURE_KILLS=40.
    let env_number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let orders = env_number("REISSUER_TORTURE_ORDERS", 300);
    let wanted_kills = env_number("REISSUER_TORTURE_KILLS", 10);
    let sim = support::simulator(support::torture_scenario(seed)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=orders);
    let mut next = support::picker(seed);
    let mut kills = 0;
    while kills < wanted_kills {
        // A quota keeps each life short of finishing, so the kills land mid-run.
        let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
        cmd.args(["--max-attempts", "20", "--rate", "20/1s", "--timeout", "3s"]);
        // A killed request is either committed by the simulator within its latency or never.
        cmd.args(["--settle", "3s"]);
        cmd.stdout(std::process::Stdio::null());
        let life = Duration::from_millis(100 + next(500));
        if !support::kill_nine_after(cmd, life).await {
            eprintln!("after {kills} kills");
            break;
        }
        kills += 1;
    }
    let out = support::rerun_until_done(5, || {
        let mut cmd = support::run_unlimited(dir.path(), &manifest, &sim.base_url());
        cmd.args(["--max-attempts", "20", "--timeout", "3s", "--settle", "3s"]);
        cmd
    })
    .await;
    eprintln!("{kills} kills (seed {seed})");
    // Whatever fails below, the last run's own account of itself comes with it.
    eprintln!("last run, exit {:?}:\n{}", out.status.code(), text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=orders);
    assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", text(&out));
    assert!(
        kills >= wanted_kills * 4 / 5,
        "seed {seed}: only {kills} kills landed before the run finished"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_in_no_trace_log_journal_wal_or_report() {
    let sim = support::simulator(Scenario {
        faults: Faults {
            drop_after_commit: 0.3,
            error_500: 0.2,
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=30);
    let mut cmd = support::run_unlimited(dir.path(), &manifest, &sim.base_url());
    cmd.env("RUST_LOG", "trace").args(["--max-attempts", "10"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stderr.len() > 10_000, "trace logging was not on");
    let mut report = reissuer(dir.path());
    report.args(["report", "--output", "report.csv"]);
    assert_eq!(output(report).await.status.code(), Some(0));
    let mut haystacks = vec![("output".to_owned(), [out.stdout, out.stderr].concat())];
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        haystacks.push((
            path.display().to_string(),
            std::fs::read(&path).expect("read"),
        ));
    }
    for (name, bytes) in haystacks {
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "the API key appears in {name}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_is_not_ours_is_refused_untouched_and_nothing_is_sent() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    let journal = dir.path().join("journal.db");
    std::fs::write(
        &journal,
        b"SQLite format 3\0 but then garbage, garbage, garbage",
    )
    .expect("write");
    let before = std::fs::read(&journal).expect("read");
    let out = output(support::run_unlimited(
        dir.path(),
        &manifest,
        &sim.base_url(),
    ))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(std::fs::read(&journal).expect("read"), before);
    assert!(sim.ledger().requests.is_empty());

    std::fs::write(&journal, b"just some notes").expect("write");
    let out = output(support::run_unlimited(
        dir.path(),
        &manifest,
        &sim.base_url(),
    ))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a reissuer journal"));
    assert_eq!(std::fs::read(&journal).expect("read"), b"just some notes");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_damaged_inside_is_refused_untouched_before_the_key_is_identified() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=60);
    let out = output(support::run_unlimited(
        dir.path(),
        &manifest,
        &sim.base_url(),
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let journal = dir.path().join("journal.db");
    // Damage the root page of the items table: the file still opens and its schema reads as
    // current, so only the integrity check (which a rerun runs beside reading the manifest)
    // can find it.
    let root: i64 = {
        use sqlx::Connection as _;
        let mut db =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", journal.display()))
                .await
                .expect("open the journal");
        let root = sqlx::query_scalar("SELECT rootpage FROM sqlite_master WHERE name = 'items'")
            .fetch_one(&mut db)
            .await
            .expect("the items table");
        db.close().await.expect("close");
        root
    };
    let mut bytes = std::fs::read(&journal).expect("read");
    let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65_536,
        size => usize::from(size),
    };
    let page = usize::try_from(root - 1).expect("a page number") * page_size;
    bytes[page] = 0xff; // no b-tree page has this type
    std::fs::write(&journal, &bytes).expect("write");
    let requests = sim.ledger().requests.len();

    let out = output(support::run_unlimited(
        dir.path(),
        &manifest,
        &sim.base_url(),
    ))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is corrupt"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&journal).expect("read"), bytes);
    assert_eq!(sim.ledger().requests.len(), requests, "a request was sent");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once_and_resume_still_sends_each_order_once() {
    let sim = support::simulator(Scenario {
        faults: Faults {
            latency: Duration::from_secs(5),
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=20);
    let mut cmd = support::run_unlimited(dir.path(), &manifest, &sim.base_url());
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawns");
    // Wait until requests are held by the simulator's latency.
    let started = Instant::now();
    while sim.ledger().accepted.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing was sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = Instant::now();
    for _ in 0..2 {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("waits"))
        .await
        .expect("joins");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "the second signal did not stop at once"
    );
    sim.set_faults(Faults::default());
    let mut resume = reissuer(dir.path());
    // Marks whose requests never left are looked up; the simulator commits on arrival.
    resume.args([
        "resume",
        "--rate",
        "unlimited",
        "--timeout",
        "3s",
        "--settle",
        "3s",
    ]);
    let out = output(resume).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=20);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_uncertain_in_one_run_is_held_back_in_the_next() {
    let sim = support::simulator(Scenario {
        faults: Faults {
            drop_after_commit: 1.0,
            get_error_500: 1.0,
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = support::tls_manifest(dir.path(), 1..=1);
    let out = output(support::run_unlimited(dir.path(), &first, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(sim.ledger().accepted.len(), 1);

    // A new manifest with the same order 1 (identical payload) and a new order 2.
    sim.set_faults(Faults {
        get_error_500: 1.0,
        ..Faults::default()
    });
    let second = dir.path().join("second.csv");
    let mut rows = std::fs::read_to_string(&first).expect("read");
    rows.push_str("2,example.com,www.example.com,example.csr,2,sha256\n");
    std::fs::write(&second, rows).expect("write");
    let out = output(support::run_unlimited(dir.path(), &second, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        sim.ledger().accepted_per_order().get(&1),
        Some(&1),
        "order 1 was sent again while its first reissue was unaccounted for"
    );

    // Once CertCentral can be asked, the first run is decided and the second one finishes.
    sim.set_faults(Faults::default());
    let mut resume = reissuer(dir.path());
    resume.args(["resume", "--run", "1", "--rate", "unlimited"]);
    assert_eq!(output(resume).await.status.code(), Some(0));
    let mut resume = reissuer(dir.path());
    resume.args(["resume", "--run", "2", "--rate", "unlimited"]);
    let out = output(resume).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=2);
    sim.shutdown().await;
}
