//! The journal in PostgreSQL (a throwaway cluster per test binary, a database per test): the
//! same commands and promises as with SQLite, and kill -9 at random moments.

use std::time::Duration;

use reissuer::simulator::{Faults, Scenario};
use time::format_description::well_known::Rfc3339;

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
    // Nothing changed: planned from the first run, as on SQLite.
    assert!(
        text(&out).contains("plan taken from run 1's"),
        "{}",
        text(&out)
    );
    let mut report = on_postgres(reissuer(dir.path()), &url);
    report.args(["report", "--format", "json", "--run", "2"]);
    let out = output(report).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 120);
    assert!(
        rows.iter()
            .all(|row| row["state"] == "skipped" && row["from_run"] == 1),
        "{rows:?}"
    );
    // With options the first run did not have (a default every order sets already) the
    // manifest is validated: its one CSR was verified by the first run, whose journal
    // remembers it.
    let mut again = on_postgres(
        support::run_against(dir.path(), &manifest, &sim.base_url()),
        &url,
    );
    again.args(["--rate", "unlimited", "--set", "signature_hash=sha256"]);
    let out = output(again).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sim.ledger().accepted.len(), 120, "a rerun sent again");
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

/// The kill -9 torture with two processes at once on one PostgreSQL journal: one sends, the
/// other stands by; at random moments one of them (sender or standby) is killed and a new one
/// started in its place. Every order is accepted exactly once, and a final run finds nothing
/// left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_killed_at_random_moments_on_postgres_never_send_twice_nor_drop_one() {
    let Some(url) = pg_cluster::fresh_database() else {
        return;
    };
    let seed = support::torture_seed("two-process torture");
    let orders = 200;
    let wanted_kills = 10;
    let sim = support::simulator(support::torture_scenario(seed)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=orders);
    let mut next = support::picker(seed);
    let start = || {
        let mut cmd = on_postgres(
            support::run_against(dir.path(), &manifest, &sim.base_url()),
            &url,
        );
        // A quota keeps each life short of finishing; a short lease makes takeovers quick.
        cmd.args(["--max-attempts", "20", "--rate", "20/1s", "--timeout", "2s"]);
        cmd.args(["--settle", "3s", "--lease", "1s"]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd.spawn().expect("spawns")
    };
    let mut pair = [start(), start()];
    let mut kills = 0;
    while kills < wanted_kills {
        tokio::time::sleep(Duration::from_millis(300 + next(1200))).await;
        let victim = usize::try_from(next(2)).expect("0 or 1");
        if pair
            .iter_mut()
            .all(|child| child.try_wait().expect("polls").is_some())
        {
            eprintln!("both ended by themselves after {kills} kills");
            break;
        }
        support::kill_nine(&mut pair[victim]);
        kills += 1;
        pair[victim] = start();
    }
    for child in &mut pair {
        support::kill_nine(child);
    }
    let out = support::rerun_until_done(5, || {
        let mut cmd = on_postgres(
            support::run_against(dir.path(), &manifest, &sim.base_url()),
            &url,
        );
        cmd.args(["--rate", "unlimited", "--max-attempts", "20"]);
        cmd.args(["--timeout", "2s", "--settle", "3s", "--lease", "1s"]);
        cmd
    })
    .await;
    eprintln!(
        "{kills} kills (seed {seed}); last run, exit {:?}:\n{}",
        out.status.code(),
        text(&out)
    );
    support::assert_exactly_once(&sim.ledger(), 1..=orders);
    assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", text(&out));
    assert!(
        kills >= wanted_kills * 4 / 5,
        "seed {seed}: only {kills} kills landed before the run finished"
    );
    sim.shutdown().await;
}

/// A child whose stderr goes to a file in the test directory, for reading after it ends.
fn spawn_logged(
    mut cmd: std::process::Command,
    dir: &std::path::Path,
    name: &str,
) -> (std::process::Child, std::path::PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    cmd.stdout(std::process::Stdio::null()).stderr(file);
    (cmd.spawn().expect("spawns"), log)
}

async fn wait_for(mut child: std::process::Child) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || child.wait().expect("waits"))
        .await
        .expect("joins")
}

fn signal(child: &std::process::Child, signal: i32) {
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal {signal}");
}

async fn accepted_grows(
    sim: &reissuer::simulator::SimulatorHandle,
    from: usize,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if sim.ledger().accepted.len() > from {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_stands_by_or_exits_five_with_no_wait() {
    let Some(url) = pg_cluster::fresh_database() else {
        return;
    };
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=40);
    let sending = |extra: &[&str]| {
        let mut cmd = on_postgres(
            support::run_against(dir.path(), &manifest, &sim.base_url()),
            &url,
        );
        cmd.args(["--rate", "10/1s", "--lease", "2s"]).args(extra);
        cmd
    };
    let (first, first_log) = spawn_logged(sending(&[]), dir.path(), "first");
    assert!(
        accepted_grows(&sim, 0, Duration::from_secs(20)).await,
        "the first never sent"
    );
    let mut status = on_postgres(reissuer(dir.path()), &url);
    status.arg("status");
    let out = output(status).await;
    assert!(
        text(&out).contains(&format!("(pid {}) since", first.id())),
        "status does not show the sender: {}",
        text(&out)
    );
    let lease = lease_in_status_json(dir.path(), &url).await;
    assert_eq!(lease["account"], "1234567", "{lease}");
    assert_eq!(lease["pid"], first.id(), "{lease}");
    assert_eq!(lease["live"], true, "{lease}");
    assert!(
        lease["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{lease}"
    );
    assert!(lease["since"].as_str().is_some_and(is_rfc3339), "{lease}");
    let expires_at = lease["expires_at"].as_str().expect("an expiry");
    let left = time::OffsetDateTime::parse(expires_at, &Rfc3339).expect("RFC 3339")
        - time::OffsetDateTime::now_utc();
    // Renewed every third of the 2-s lease.
    assert!(
        left > time::Duration::ZERO && left <= time::Duration::seconds(2),
        "{lease}"
    );
    let out = output(sending(&["--no-wait"])).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("pid {}", first.id())),
        "does not name the holder: {}",
        text(&out)
    );
    let (second, second_log) = spawn_logged(sending(&[]), dir.path(), "second");
    let first_pid = first.id();
    let first_status = wait_for(first).await;
    let second_status = wait_for(second).await;
    let first_log = std::fs::read_to_string(first_log).expect("log");
    let second_log = std::fs::read_to_string(second_log).expect("log");
    assert_eq!(first_status.code(), Some(0), "{first_log}");
    assert_eq!(second_status.code(), Some(0), "{second_log}");
    assert!(
        second_log.contains("standing by"),
        "the second did not say it stands by: {second_log}"
    );
    assert!(
        first_log.contains(&format!("(pid {}) from now on", first_pid)),
        "the sender did not say it sends: {first_log}"
    );
    support::assert_exactly_once(&sim.ledger(), 1..=40);
    let lease = lease_in_status_json(dir.path(), &url).await;
    assert_eq!(lease["live"], false, "given up, yet shown live: {lease}");
    sim.shutdown().await;
}

fn is_rfc3339(text: &str) -> bool {
    time::OffsetDateTime::parse(text, &Rfc3339).is_ok()
}

/// The lease on the account of the newest run, from `status --json`.
async fn lease_in_status_json(dir: &std::path::Path, url: &str) -> serde_json::Value {
    let mut status = on_postgres(reissuer(dir), url);
    status.args(["status", "--json"]);
    let out = output(status).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    runs.as_array()
        .and_then(|runs| runs.last())
        .map(|run| run["lease"].clone())
        .unwrap_or_default()
}

/// Three processes on one journal and one account, quotas enforced by the server, 500s and
/// answers lost after the commit: the sender is killed -9, the one that took over is frozen
/// past its lease and then continued. Every order is accepted exactly once without a 429, a
/// standby says it stands by and takes over, the frozen one sends nothing more, and a final run
/// finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_kill_nine_and_a_frozen_sender_still_send_each_order_once() {
    let Some(url) = pg_cluster::fresh_database() else {
        return;
    };
    let _cores = support::cores_to_myself().await;
    let orders = 800;
    let sim = support::simulator(Scenario {
        quotas: vec![
            reissuer::config::Quota {
                limit: 40,
                window: Duration::from_secs(1),
            },
            reissuer::config::Quota {
                limit: 400,
                window: Duration::from_secs(10),
            },
        ],
        faults: Faults {
            error_500: 0.03,
            drop_after_commit: 0.02,
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=orders);
    let sending = || {
        let mut cmd = on_postgres(
            support::run_against(dir.path(), &manifest, &sim.base_url()),
            &url,
        );
        cmd.args([
            "--rate",
            "38/1s",
            "--rate",
            "390/10s",
            "--max-attempts",
            "20",
        ]);
        cmd.args(["--lease", "2s", "--timeout", "2s", "--settle", "20s"]);
        cmd
    };
    let (first, _) = spawn_logged(sending(), dir.path(), "first");
    assert!(accepted_grows(&sim, 0, Duration::from_secs(20)).await);
    let (second, second_log) = spawn_logged(sending(), dir.path(), "second");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut first = first;
    first.kill().expect("kill -9");
    first.wait().expect("reaped");
    let killed_at = tokio::time::Instant::now();
    let before = sim.ledger().accepted.len();
    // Within the lease (2 s) and the request timeout (2 s), plus time to start sending.
    assert!(
        accepted_grows(&sim, before, Duration::from_secs(15)).await,
        "nobody took over: {}",
        std::fs::read_to_string(&second_log).unwrap_or_default()
    );
    eprintln!("first reissue after the kill -9: {:?}", killed_at.elapsed());
    let (third, third_log) = spawn_logged(sending(), dir.path(), "third");
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&second, libc::SIGSTOP);
    // Past the second's lease: the third takes over and sends.
    let frozen = sim.ledger().accepted.len();
    assert!(
        accepted_grows(&sim, frozen + 5, Duration::from_secs(20)).await,
        "the third did not take over from the frozen second"
    );
    signal(&second, libc::SIGCONT);
    let second_status = wait_for(second).await;
    let third_status = wait_for(third).await;
    let second_log = std::fs::read_to_string(second_log).expect("log");
    let third_log = std::fs::read_to_string(third_log).expect("log");
    assert!(second_log.contains("standing by"), "{second_log}");
    assert!(second_log.contains("taking over"), "{second_log}");
    assert_eq!(
        second_status.code(),
        Some(5),
        "the frozen sender did not stop on its lost lease: {second_log}"
    );
    assert!(third_log.contains("taking over"), "{third_log}");
    assert_eq!(third_status.code(), Some(0), "{third_log}");

    let out = output(sending()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ledger = sim.ledger();
    support::assert_exactly_once(&ledger, 1..=orders);
    assert_eq!(ledger.count_status(429), 0, "the account was throttled");
    sim.shutdown().await;
}

/// A hook that notes each start under `hooks/` and takes a moment, so that two collects overlap.
const SLOW_HOOK: &str = r#"
echo start >> "hooks/$REISSUER_ORDER_ID.runs"
sleep 0.3
"#;

fn hook_starts(dir: &std::path::Path, order_id: u64) -> usize {
    std::fs::read_to_string(dir.join(format!("hooks/{order_id}.runs")))
        .map(|log| log.lines().filter(|l| *l == "start").count())
        .unwrap_or(0)
}

/// Two hosts running the same cron job on one PostgreSQL journal: two `collect --deploy-hook`
/// at once. One collects and runs the hooks while the other stands by; the other then takes the
/// lease, finds every certificate deployed and runs no hook: each hook ran exactly once. A
/// third with --no-wait exits 5 at once, naming the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collects_at_once_on_postgres_run_each_deploy_hook_exactly_once() {
    let Some(url) = pg_cluster::fresh_database() else {
        return;
    };
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = 1..=8;
    let manifest = support::tls_manifest(dir.path(), ids.clone());
    let mut run = on_postgres(
        support::run_against(dir.path(), &manifest, &sim.base_url()),
        &url,
    );
    run.args(["--rate", "unlimited"]);
    let out = output(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::create_dir_all(dir.path().join("hooks")).expect("hooks dir");
    std::fs::write(dir.path().join("hook.sh"), SLOW_HOOK).expect("write hook");
    let collecting = |out_dir: &str, extra: &[&str]| {
        let mut cmd = on_postgres(reissuer(dir.path()), &url);
        cmd.args(["collect", "--out", out_dir, "--deploy-hook", "sh hook.sh"])
            .args(["--base-url", &sim.base_url(), "--rate", "unlimited"])
            .args(["--lease", "2s"])
            .args(extra);
        cmd
    };
    let (first, first_log) = spawn_logged(collecting("certs-a", &[]), dir.path(), "first");
    let first_pid = first.id();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while hook_starts(dir.path(), 1) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no hook started: {}",
            std::fs::read_to_string(&first_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (second, second_log) = spawn_logged(collecting("certs-b", &[]), dir.path(), "second");
    let out = output(collecting("certs-c", &["--no-wait"])).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("pid {first_pid}")),
        "does not name the holder: {}",
        text(&out)
    );
    let first_status = wait_for(first).await;
    let second_status = wait_for(second).await;
    let first_log = std::fs::read_to_string(first_log).expect("log");
    let second_log = std::fs::read_to_string(second_log).expect("log");
    assert_eq!(first_status.code(), Some(0), "{first_log}");
    assert_eq!(second_status.code(), Some(0), "{second_log}");
    assert!(
        second_log.contains(&format!("(pid {first_pid}) since"))
            && second_log.contains("standing by"),
        "the second did not stand by for the first: {second_log}"
    );
    assert!(
        second_log.contains("deploy hook: 0 succeeded now"),
        "the second ran hooks: {second_log}"
    );
    for id in ids {
        assert_eq!(hook_starts(dir.path(), id), 1, "order {id}: {second_log}");
    }
    assert!(!second_log.contains(support::KEY) && !first_log.contains(support::KEY));
    sim.shutdown().await;
}

/// `approve` takes the account's lease too: while another command holds it (a `collect`
/// waiting for issuance), `approve --no-wait` exits 5 and `approve` stands by; once the holder
/// is gone it approves each waiting request exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_on_postgres_waits_for_the_accounts_lease_and_approves_once() {
    let Some(url) = pg_cluster::fresh_database() else {
        return;
    };
    let sim = support::simulator(Scenario {
        approval_required: true,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = 11..=16;
    let manifest = support::tls_manifest(dir.path(), ids.clone());
    let mut run = on_postgres(
        support::run_against(dir.path(), &manifest, &sim.base_url()),
        &url,
    );
    run.args(["--rate", "unlimited"]);
    let out = output(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Holds the lease while it waits for certificates that wait for approval.
    let mut collect = on_postgres(reissuer(dir.path()), &url);
    collect
        .args(["collect", "--out", "certs", "--wait", "60s"])
        .args([
            "--base-url",
            &sim.base_url(),
            "--rate",
            "unlimited",
            "--lease",
            "2s",
        ]);
    let (holder, holder_log) = spawn_logged(collect, dir.path(), "collect");
    let holder_pid = holder.id();
    let approving = |extra: &[&str]| {
        let mut cmd = on_postgres(reissuer(dir.path()), &url);
        cmd.args([
            "approve",
            "--base-url",
            &sim.base_url(),
            "--rate",
            "unlimited",
        ])
        .args(["--lease", "2s"])
        .args(extra);
        cmd
    };
    support::wait_until(
        "the collect holding the lease",
        Duration::from_secs(20),
        || std::fs::read_to_string(&holder_log).is_ok_and(|log| log.contains("from now on")),
    )
    .await;
    let refused = output(approving(&["--no-wait"])).await;
    assert_eq!(refused.status.code(), Some(5), "{}", text(&refused));
    assert!(
        text(&refused).contains(&format!("pid {holder_pid}")),
        "does not name the holder: {}",
        text(&refused)
    );
    let (approver, approver_log) = spawn_logged(approving(&[]), dir.path(), "approve");
    support::wait_until("the approve standing by", Duration::from_secs(20), || {
        std::fs::read_to_string(&approver_log).is_ok_and(|log| log.contains("standing by"))
    })
    .await;
    assert!(
        sim.ledger().requests.iter().all(|r| r.method != "PUT"),
        "approved while another held the lease"
    );
    signal(&holder, libc::SIGTERM);
    let holder_status = wait_for(holder).await;
    let approver_status = wait_for(approver).await;
    let approver_log = std::fs::read_to_string(approver_log).expect("log");
    assert_eq!(
        holder_status.code(),
        Some(3),
        "{}",
        std::fs::read_to_string(holder_log).unwrap_or_default()
    );
    assert_eq!(approver_status.code(), Some(0), "{approver_log}");
    let ledger = sim.ledger();
    let approvals = ledger.requests.iter().filter(|r| r.method == "PUT").count();
    assert_eq!(approvals, ids.count(), "{approver_log}");
    sim.shutdown().await;
}

/// A run that stops before it sends anything (here an invalid manifest, exit 2) gives the
/// account's lease up at once: another host's run, even with --no-wait, does not find it held
/// for the rest of the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_before_sending_gives_the_lease_up() {
    let Some(url) = pg_cluster::fresh_database() else {
        return;
    };
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=5);
    let mut invalid = std::fs::read_to_string(&manifest).expect("manifest");
    invalid.push_str("not-a-number,example.com,www.example.com,example.csr,2,sha256\n");
    std::fs::write(dir.path().join("invalid.csv"), invalid).expect("write");
    let running = |manifest: &std::path::Path, extra: &[&str]| {
        let mut cmd = on_postgres(
            support::run_against(dir.path(), manifest, &sim.base_url()),
            &url,
        );
        cmd.args(["--rate", "unlimited", "--lease", "30s"])
            .args(extra);
        cmd
    };
    let out = output(running(&dir.path().join("invalid.csv"), &[])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("from now on"),
        "took no lease: {}",
        text(&out)
    );
    let out = output(running(&manifest, &["--no-wait"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=5);
    sim.shutdown().await;
}

/// A standby counts the account's requests again when it takes the lease over: the holder sent
/// most of a 10-s window's quota after the standby started (and first counted), then was
/// killed -9; the standby, taking over within that window, waits for it instead of being
/// refused with 429s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_takes_over_within_a_window_counts_what_the_holder_sent() {
    let Some(url) = pg_cluster::fresh_database() else {
        return;
    };
    let _cores = support::cores_to_myself().await;
    let quota = |limit, secs| reissuer::config::Quota {
        limit,
        window: Duration::from_secs(secs),
    };
    let sim = support::simulator(Scenario {
        quotas: vec![quota(20, 1), quota(60, 10)],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let orders = 100;
    let manifest = support::tls_manifest(dir.path(), 1..=orders);
    let sending = || {
        let mut cmd = on_postgres(
            support::run_against(dir.path(), &manifest, &sim.base_url()),
            &url,
        );
        // Under the server's quotas by the standby's and the final run's identifications.
        cmd.args([
            "--rate",
            "18/1s",
            "--rate",
            "56/10s",
            "--max-attempts",
            "20",
        ]);
        cmd.args(["--lease", "1s", "--timeout", "1s", "--settle", "2s"]);
        cmd
    };
    let (mut holder, _) = spawn_logged(sending(), dir.path(), "holder");
    assert!(accepted_grows(&sim, 0, Duration::from_secs(20)).await);
    let (standby, standby_log) = spawn_logged(sending(), dir.path(), "standby");
    support::wait_until("the standby standing by", Duration::from_secs(20), || {
        std::fs::read_to_string(&standby_log).is_ok_and(|log| log.contains("standing by"))
    })
    .await;
    support::wait_until("the holder's window full", Duration::from_secs(20), || {
        sim.ledger().accepted.len() >= 50
    })
    .await;
    support::kill_nine(&mut holder);
    let status = wait_for(standby).await;
    let log = std::fs::read_to_string(&standby_log).expect("log");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("taking over"), "{log}");
    let ledger = sim.ledger();
    assert_eq!(
        ledger.count_status(429),
        0,
        "the account was throttled: {log}"
    );
    support::assert_exactly_once(&ledger, 1..=orders);
    sim.shutdown().await;
}

/// `dcv check` takes the account's lease too: with --no-wait it exits 5 and checks nothing
/// while another command holds it (a `collect` waiting for issuance); once that one is gone it
/// checks each waiting order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcv_check_on_postgres_waits_for_the_accounts_lease() {
    let Some(url) = pg_cluster::fresh_database() else {
        return;
    };
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    support::tls_manifest(dir.path(), []);
    let ids = 21..=24;
    let mut csv = String::from(
        "order_id,common_name,dns_names,csr_file,server_platform.id,signature_hash,dcv_method\n",
    );
    for id in ids.clone() {
        csv.push_str(&format!(
            "{id},example.com,www.example.com,example.csr,2,sha256,dns-txt-token\n"
        ));
    }
    let manifest = dir.path().join("dcv.csv");
    std::fs::write(&manifest, csv).expect("write manifest");
    let mut run = on_postgres(
        support::run_against(dir.path(), &manifest, &sim.base_url()),
        &url,
    );
    run.args(["--rate", "unlimited"]);
    let out = output(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut collect = on_postgres(reissuer(dir.path()), &url);
    collect
        .args(["collect", "--out", "certs", "--wait", "60s"])
        .args([
            "--base-url",
            &sim.base_url(),
            "--rate",
            "unlimited",
            "--lease",
            "2s",
        ]);
    let (holder, holder_log) = spawn_logged(collect, dir.path(), "collect");
    support::wait_until(
        "the collect holding the lease",
        Duration::from_secs(20),
        || std::fs::read_to_string(&holder_log).is_ok_and(|log| log.contains("from now on")),
    )
    .await;
    let checking = |extra: &[&str]| {
        let mut cmd = on_postgres(reissuer(dir.path()), &url);
        cmd.args(["dcv", "check", "--base-url", &sim.base_url()])
            .args(["--rate", "unlimited", "--lease", "2s"])
            .args(extra);
        cmd
    };
    let checks = || {
        sim.ledger()
            .requests
            .iter()
            .filter(|r| r.path.ends_with("/check-dcv"))
            .count()
    };
    let out = output(checking(&["--no-wait"])).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("pid {}", holder.id())),
        "does not name the holder: {}",
        text(&out)
    );
    assert_eq!(checks(), 0, "checked beside the holder");
    signal(&holder, libc::SIGTERM);
    assert_eq!(wait_for(holder).await.code(), Some(3));
    // The tokens are not published: every order still waits, each checked once.
    let out = output(checking(&["--no-wait"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(checks(), ids.count(), "{}", text(&out));
    sim.shutdown().await;
}
