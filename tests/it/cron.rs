//! Cron-grade operation: plain output off a terminal, NO_COLOR on one, reruns whose report keeps
//! the server's ids, a journal that reruns barely grow and `prune` shrinks, completions and man.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use reissuer::simulator::Scenario;

use crate::support::{self, output, reissuer, text};

const ESC: u8 = 0x1b;

/// The journal's size on disk: the database and whatever WAL is left beside it.
fn journal_size(dir: &Path) -> u64 {
    ["journal.db", "journal.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(name)).ok())
        .map(|m| m.len())
        .sum()
}

fn fast_run(dir: &Path, manifest: &Path, base_url: &str) -> std::process::Command {
    let mut cmd = support::run_against(dir, manifest, base_url);
    cmd.args(["--rate", "unlimited", "--concurrency", "32"]);
    cmd
}

async fn report_json(dir: &Path, run: Option<u32>) -> Vec<serde_json::Value> {
    let mut cmd = reissuer(dir);
    cmd.args(["report", "--format", "json"]);
    if let Some(run) = run {
        cmd.args(["--run", &run.to_string()]);
    }
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("json report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_is_not_a_terminal_carries_no_escape_byte() {
    let _cores = support::cores_to_myself().await;
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=20);
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let mut cmd = fast_run(dir.path(), &manifest, &sim.base_url());
        // Debug lines too: every level's formatting is exercised.
        cmd.env("RUST_LOG", "debug");
        outputs.push(output(cmd).await);
    }
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["report"],
        vec!["report", "--format", "json"],
        vec!["prune", "--keep", "1", "--dry-run"],
    ] {
        let mut cmd = reissuer(dir.path());
        cmd.args(&args);
        outputs.push(output(cmd).await);
    }
    // `--color always` asks for colour even in a file, but NO_COLOR (a crontab's, say) wins.
    let mut cmd = fast_run(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--color", "always"])
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1");
    outputs.push(output(cmd).await);
    for out in &outputs {
        assert_eq!(out.status.code(), Some(0), "{}", text(out));
        assert!(!out.stderr.is_empty() || !out.stdout.is_empty());
        assert!(
            !out.stdout.contains(&ESC) && !out.stderr.contains(&ESC),
            "an escape byte off a terminal:\n{}",
            text(out)
        );
    }
    // The log lines are there, plain: "INFO" with no styling around it.
    let first = String::from_utf8_lossy(&outputs[0].stderr);
    assert!(first.contains(" INFO "), "{first}");
    sim.shutdown().await;
}

/// Runs `reissuer ARGS` with a pseudo-terminal as stdin, stdout and stderr; returns all it
/// wrote there.
fn on_a_terminal(dir: &Path, args: &[&str], no_color: bool) -> (Option<i32>, Vec<u8>) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the integers it is given; the null pointers
    // ask for no name, default terminal settings and default window size.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors were just opened by openpty and are owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut cmd = reissuer(dir);
    cmd.args(args)
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    cmd.stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("spawns");
    // The parent's copies of the slave are gone with `cmd`; reading the master ends (EIO) once
    // the child has exited and closed its copies.
    drop(cmd);
    let mut master = std::fs::File::from(master);
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match master.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
    let status = child.wait().expect("waits");
    (status.code(), seen)
}

/// Whether `bytes` hold an SGR sequence (`ESC [ digits;… m`): colour or styling.
fn has_sgr(bytes: &[u8]) -> bool {
    bytes.windows(2).enumerate().any(|(at, pair)| {
        pair == [ESC, b'[']
            && bytes[at + 2..]
                .iter()
                .find(|b| !(b.is_ascii_digit() || **b == b';'))
                .is_some_and(|end| *end == b'm')
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_color_on_a_terminal_means_no_colour_and_without_it_there_is_colour() {
    let _cores = support::cores_to_myself().await;
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=5);
    let manifest = manifest.display().to_string();
    let base_url = sim.base_url();
    let args = [
        "run",
        manifest.as_str(),
        "--base-url",
        &base_url,
        "--yes",
        "--rate",
        "unlimited",
    ];
    let path = dir.path().to_owned();
    let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let (plains, coloured) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        let plain = on_a_terminal(&path, &args, true);
        // NO_COLOR wins over an explicit `--color always` too.
        let forced = [args.as_slice(), &["--color", "always"]].concat();
        let forced = on_a_terminal(&path, &forced, true);
        let coloured = on_a_terminal(&path, &args, false);
        ([plain, forced], coloured)
    })
    .await
    .expect("joins");
    let shown = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    for plain in &plains {
        assert_eq!(plain.0, Some(0), "{}", shown(&plain.1));
        assert!(shown(&plain.1).contains("INFO"), "{}", shown(&plain.1));
        assert!(
            !has_sgr(&plain.1),
            "colour under NO_COLOR: {:?}",
            shown(&plain.1)
        );
    }
    // The same on a terminal without NO_COLOR is coloured: the check above can see colour.
    assert_eq!(coloured.0, Some(0), "{}", shown(&coloured.1));
    assert!(
        has_sgr(&coloured.1),
        "no colour on a terminal: {:?}",
        shown(&coloured.1)
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reruns_keep_their_ids_add_little_and_prune_gives_the_space_back() {
    const ORDERS: u64 = 2000;
    let _cores = support::cores_to_myself().await;
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=ORDERS);
    let out = output(fast_run(dir.path(), &manifest, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first = journal_size(dir.path());
    let ledger = sim.ledger();
    assert_eq!(ledger.accepted.len(), ORDERS as usize);
    let accepted = |order_id: u64| {
        ledger
            .accepted
            .iter()
            .find(|a| a.order_id == order_id)
            .expect("accepted")
    };

    let mut size = first;
    for rerun in 2..=6 {
        let out = output(fast_run(dir.path(), &manifest, &sim.base_url())).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let now = journal_size(dir.path());
        let added = now.saturating_sub(size);
        eprintln!("run {rerun}: +{added} bytes ({first} after run 1)");
        assert!(
            added * 20 <= first,
            "rerun {rerun} added {added} bytes, more than 5 % of the first run's {first}"
        );
        size = now;
    }
    assert_eq!(sim.ledger().accepted.len(), ORDERS as usize, "a rerun sent");

    // The newest rerun's report: every order, with the server's request id and the run it
    // came from.
    let check_report = |rows: &[serde_json::Value]| {
        assert_eq!(rows.len(), ORDERS as usize);
        for row in rows {
            let order_id = row["order_id"].as_u64().expect("order id");
            assert_eq!(row["state"], "skipped", "{row}");
            let accepted = accepted(order_id);
            assert_eq!(
                row["request_id"].as_u64(),
                Some(accepted.request_id),
                "{row}"
            );
            assert_eq!(
                row["certificate_id"].as_u64(),
                accepted.certificate_id,
                "{row}"
            );
            assert_eq!(row["from_run"], 1, "{row}");
        }
    };
    check_report(&report_json(dir.path(), None).await);
    let mut csv = reissuer(dir.path());
    csv.args(["report", "--run", "6"]);
    let out = output(csv).await;
    let csv = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(csv.lines().next().expect("header").ends_with(",from_run"));
    assert_eq!(csv.lines().count(), ORDERS as usize + 1);
    assert!(
        csv.lines().skip(1).all(|line| line.ends_with(",1")),
        "{csv}"
    );

    // A dry run changes nothing; the real prune leaves the first run's successes (the newest
    // run stands for them) and the newest run.
    let mut dry = reissuer(dir.path());
    dry.args(["prune", "--keep", "1", "--dry-run"]);
    let out = output(dry).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("would remove run 2"), "{}", text(&out));
    assert_eq!(journal_size(dir.path()), size);
    let mut prune = reissuer(dir.path());
    prune.args(["prune", "--keep", "1"]);
    let out = output(prune).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = text(&out);
    for run in 2..=5 {
        assert!(said.contains(&format!("removed run {run} ")), "{said}");
    }
    assert!(said.contains("removed run 1 "), "{said}");
    assert!(said.contains("kept its 2000 success(es)"), "{said}");
    let pruned = journal_size(dir.path());
    eprintln!("after prune --keep 1: {pruned} bytes ({first} after run 1)");
    assert!(
        pruned * 5 <= first * 6,
        "{pruned} bytes after prune, more than 1.2 × {first}"
    );
    check_report(&report_json(dir.path(), None).await);
    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let out = output(status).await;
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("status");
    let ids: Vec<u64> = runs.iter().filter_map(|r| r["run"].as_u64()).collect();
    assert_eq!(ids, [1, 6]);
    assert_eq!(runs[1]["sent_nothing"], true);
    assert_eq!(runs[0]["counts"]["succeeded"], ORDERS);
    // And the next rerun still sends nothing.
    let out = output(fast_run(dir.path(), &manifest, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        sim.ledger().accepted.len(),
        ORDERS as usize,
        "sent after prune"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_the_newest_runs_first_and_says_which_sent_nothing() {
    let _cores = support::cores_to_myself().await;
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    for _ in 0..12 {
        let out = output(fast_run(dir.path(), &manifest, &sim.base_url())).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let mut status = reissuer(dir.path());
    status.arg("status");
    let out = output(status).await;
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let firsts: Vec<&str> = shown.lines().filter(|l| l.starts_with("run ")).collect();
    assert_eq!(firsts.len(), 10, "{shown}");
    assert!(firsts[0].starts_with("run 12 "), "{shown}");
    assert!(firsts[0].contains("sent nothing"), "{shown}");
    assert!(firsts[9].starts_with("run 3 "), "{shown}");
    assert!(shown.contains("the newest 10 of 12 runs"), "{shown}");
    let mut all = reissuer(dir.path());
    all.args(["status", "--all"]);
    let out = output(all).await;
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let firsts: Vec<&str> = shown.lines().filter(|l| l.starts_with("run ")).collect();
    assert_eq!(firsts.len(), 12, "{shown}");
    assert!(firsts[11].starts_with("run 1 "), "{shown}");
    assert!(!firsts[11].contains("sent nothing"), "{shown}");
    // Piped into `head`, which stops reading: a quiet exit 0, as for any Unix filter.
    for args in [&["status", "--all"][..], &["status", "--all", "--json"][..]] {
        let mut cmd = reissuer(dir.path());
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawns");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("waits");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out));
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_the_man_page_come_from_the_command_line_definitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef reissuer"),
        ("fish", "complete -c reissuer"),
        ("elvish", "edit:completion:arg-completer[reissuer]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let mut cmd = reissuer(dir.path());
        cmd.args(["completions", shell]);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("prune"), "{shell} misses a subcommand");
    }
    // bash accepts the script and knows reissuer afterwards.
    let mut cmd = reissuer(dir.path());
    cmd.args(["completions", "bash"]);
    let script = output(cmd).await.stdout;
    std::fs::write(dir.path().join("reissuer.bash"), script).expect("write");
    let out = output({
        let mut bash = std::process::Command::new("bash");
        bash.arg("-c")
            .arg("source ./reissuer.bash && complete -p reissuer")
            .current_dir(dir.path());
        bash
    })
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut cmd = reissuer(dir.path());
    cmd.arg("man");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH reissuer"),
        "{page}"
    );
    for needle in ["\\-\\-journal", "prune", "completions", "\\-\\-color"] {
        assert!(page.contains(needle), "man page misses {needle}");
    }
}

/// A CSV manifest of TLS reissues for `order_ids`, each with its own CSR file (`host{id}.csr`,
/// for `host{id}.example`), written unless `reuse` and already there.
fn own_csr_manifest(dir: &Path, order_ids: std::ops::RangeInclusive<u64>, reuse: bool) -> PathBuf {
    use std::fmt::Write as _;
    let mut csv = String::from("order_id,common_name,csr_file,server_platform.id,signature_hash\n");
    for id in order_ids {
        let name = format!("host{id}.example");
        let file = dir.join(format!("host{id}.csr"));
        if !(reuse && file.exists()) {
            std::fs::write(&file, support::csr_pem(&name)).expect("write csr");
        }
        writeln!(csv, "{id},{name},host{id}.csr,2,sha256").expect("write");
    }
    let path = dir.join("own.csv");
    std::fs::write(&path, csv).expect("write manifest");
    path
}

/// [`fast_run`] with a default that every order of [`own_csr_manifest`] sets already: the same
/// payloads, but options no earlier run had, so the manifest is validated, not planned from
/// an earlier run.
fn validating_run(dir: &Path, manifest: &Path, base_url: &str) -> std::process::Command {
    let mut cmd = fast_run(dir, manifest, base_url);
    cmd.args(["--set", "signature_hash=sha256"]);
    cmd
}

/// The numbers of the log line that says how many CSRs were verified and how many were not
/// verified again.
fn csrs_verified(out: &std::process::Output) -> (u64, u64) {
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find_map(|line| line.split_once("CSRs: ").map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("no CSR line in:\n{log}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_verifies_no_csr_again_a_changed_one_is_verified_and_prune_forgets_them() {
    const ORDERS: u64 = 40;
    let _cores = support::cores_to_myself().await;
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = own_csr_manifest(dir.path(), 1..=ORDERS, false);
    let run = |sim_url: String| {
        let dir = dir.path().to_owned();
        let manifest = manifest.clone();
        async move { output(fast_run(&dir, &manifest, &sim_url)).await }
    };

    let out = run(sim.base_url()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(csrs_verified(&out), (ORDERS, 0));

    // The identical rerun is planned from the first run: no CSR is even parsed.
    let out = run(sim.base_url()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("plan taken from run 1's"),
        "{}",
        text(&out)
    );
    // A rerun whose options differ (a default no order takes: the payloads are the same) is
    // validated: it parses every CSR but verifies none, sends nothing and adds little.
    let out = output(validating_run(dir.path(), &manifest, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(csrs_verified(&out), (0, ORDERS));
    assert_eq!(sim.ledger().accepted.len(), ORDERS as usize, "a rerun sent");

    // One CSR altered in place (its signature no longer verifies): its text is new, so it is
    // verified, and refused; nothing is sent.
    let altered = dir.path().join("host7.csr");
    let pem = std::fs::read_to_string(&altered).expect("read csr");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64_decode(&body);
    let last = der.len() - 1;
    der[last] ^= 0x01;
    std::fs::write(
        &altered,
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64_encode(&der)
        ),
    )
    .expect("write csr");
    let out = run(sim.base_url()).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("host7.csr: the CSR's signature does not verify"),
        "{}",
        text(&out)
    );
    assert_eq!(sim.ledger().accepted.len(), ORDERS as usize);

    // New CSRs for every order: all verified (and sent, as new payloads).
    let manifest = own_csr_manifest(dir.path(), 1..=ORDERS, false);
    let out = output(fast_run(dir.path(), &manifest, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(csrs_verified(&out), (ORDERS, 0));
    assert_eq!(sim.ledger().accepted.len(), 2 * ORDERS as usize);

    // Pruning the first run forgets the CSRs only it verified; the newest run's stay.
    let mut prune = reissuer(dir.path());
    prune.args(["prune", "--keep", "1"]);
    let out = output(prune).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{ORDERS} verified CSR(s) forgotten")),
        "{}",
        text(&out)
    );
    let out = output(validating_run(dir.path(), &manifest, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(csrs_verified(&out), (0, ORDERS));
    assert_eq!(sim.ledger().accepted.len(), 2 * ORDERS as usize);
    sim.shutdown().await;
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
