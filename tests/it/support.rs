//! Test equipment: the simulator on loopback, manifests with real CSRs, the real binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use reissuer::simulator::{Ledger, Scenario, SimulatorHandle};

pub const KEY: &str = "test-key-7c1f9a2b-do-not-print";

/// Starts the simulator on 127.0.0.1:0 with the test key.
pub async fn simulator(scenario: Scenario) -> SimulatorHandle {
    reissuer::simulator::start_on_loopback(Scenario {
        api_key: Some(KEY.to_owned()),
        ..scenario
    })
    .await
    .expect("simulator starts")
}

/// A CSR for `name` (one fresh P-256 key), as PEM.
pub fn csr_pem(name: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
    let mut params = params;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

/// A CSV manifest of TLS reissues for `order_ids`, all with one CSR for `example.com`.
pub fn tls_manifest(dir: &Path, order_ids: impl IntoIterator<Item = u64>) -> PathBuf {
    std::fs::write(dir.join("example.csr"), csr_pem("example.com")).expect("write csr");
    let mut csv =
        String::from("order_id,common_name,dns_names,csr_file,server_platform.id,signature_hash\n");
    for id in order_ids {
        writeln!(
            csv,
            "{id},example.com,www.example.com;api.example.com,example.csr,2,sha256"
        )
        .expect("write");
    }
    let path = dir.join("orders.csv");
    std::fs::write(&path, csv).expect("write manifest");
    path
}

/// Environment variables that change where requests go or whom they trust.
pub const NETWORK_VARIABLES: [&str; 11] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REISSUER_CA_FILE",
];

/// The binary with the test key in its environment and the journal in `dir`.
pub fn reissuer(dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_reissuer"));
    cmd.env("DIGICERT_API_KEY", KEY)
        .env("REISSUER_JOURNAL", dir.join("journal.db"))
        .env_remove("DIGICERT_BASE_URL")
        .env_remove("RUST_LOG")
        .current_dir(dir);
    // The machine's proxies and trust settings are not the test's: a test sets what it needs.
    for name in NETWORK_VARIABLES {
        cmd.env_remove(name);
    }
    cmd
}

/// `reissuer run MANIFEST --base-url URL` with the journal in `dir`.
pub fn run_against(dir: &Path, manifest: &Path, base_url: &str) -> std::process::Command {
    let mut cmd = reissuer(dir);
    cmd.arg("run").arg(manifest).args(["--base-url", base_url]);
    cmd
}

/// Runs a command off the async runtime, so the in-process simulator keeps serving.
pub async fn output(mut cmd: std::process::Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("runs"))
        .await
        .expect("joins")
}

pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The most requests whose arrival falls in any interval of length `window`.
pub fn most_in_any_window(ledger: &Ledger, window: Duration) -> usize {
    let mut times: Vec<u64> = ledger
        .requests
        .iter()
        .filter(|r| r.status != 429)
        .map(|r| r.received_us)
        .collect();
    times.sort_unstable();
    let window = u64::try_from(window.as_micros()).expect("fits");
    let mut most = 0;
    let mut first = 0;
    for last in 0..times.len() {
        while times[last] - times[first] >= window {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

/// Every order in `ids` was accepted exactly once, and no other order was.
pub fn assert_exactly_once(ledger: &Ledger, ids: impl IntoIterator<Item = u64>) {
    let per_order = ledger.accepted_per_order();
    let ids: Vec<u64> = ids.into_iter().collect();
    let twice: Vec<_> = per_order.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let missing: Vec<_> = ids
        .iter()
        .filter(|id| !per_order.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "never accepted: {missing:?}");
    assert_eq!(per_order.len(), ids.len(), "unexpected orders accepted");
}

/// Held by tests that saturate both cores (thousands of orders at an unlimited rate) and by
/// tests whose quota checks compare arrival times at the simulator: a starved simulator sees
/// requests the client spaced out arrive bunched, and answers 429 where the client kept its
/// quota. The two kinds take turns instead.
pub async fn cores_to_myself() -> tokio::sync::MutexGuard<'static, ()> {
    static CORES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    CORES.lock().await
}

/// `run_against` with no quota: for tests about faults, not pacing.
pub fn run_unlimited(dir: &Path, manifest: &Path, base_url: &str) -> std::process::Command {
    let mut cmd = run_against(dir, manifest, base_url);
    cmd.args(["--rate", "unlimited"]);
    cmd
}

/// The run's rows (the newest run), from `report --format json`.
pub async fn report_json(dir: &Path) -> Vec<serde_json::Value> {
    let mut report = reissuer(dir);
    report.args(["report", "--format", "json"]);
    let out = output(report).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

/// Polls `done` every 20 ms; fails the test, naming `what`, if it is not true within `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `kill -9` and reap.
pub fn kill_nine(child: &mut std::process::Child) {
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
}

/// The seed of a torture test: `REISSUER_TORTURE_SEED` to replay one, else the clock. Printed.
pub fn torture_seed(test: &str) -> u64 {
    let seed = std::env::var("REISSUER_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test} seed: {seed} (replay with REISSUER_TORTURE_SEED={seed})");
    seed
}

/// The torture tests' CertCentral: 5 % 500s, 3 % 503s (Retry-After 1 s), 3 % answers lost after
/// the commit, 5–45 ms of latency; its faults drawn from `seed`.
pub fn torture_scenario(seed: u64) -> reissuer::simulator::Scenario {
    use reissuer::simulator::{Faults, Scenario};
    Scenario {
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
    }
}

/// xorshift from `seed`: numbers below a bound, enough for picking kill moments reproducibly.
pub fn picker(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed | 1;
    move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    }
}

/// Spawns `cmd`, lets it live `life`, then kills it with -9. False when it ended by itself.
pub async fn kill_nine_after(mut cmd: std::process::Command, life: Duration) -> bool {
    let mut child = cmd.spawn().expect("spawns");
    tokio::time::sleep(life).await;
    if let Some(status) = child.try_wait().expect("polls") {
        eprintln!("life ended by itself with {status}");
        return false;
    }
    kill_nine(&mut child);
    true
}

/// Runs the command `make` builds until it exits 0, at most `tries` times; the last output.
pub async fn rerun_until_done(
    tries: usize,
    mut make: impl FnMut() -> std::process::Command,
) -> Output {
    let mut last = None;
    for _ in 0..tries {
        let out = output(make()).await;
        let done = out.status.code() == Some(0);
        last = Some(out);
        if done {
            break;
        }
    }
    last.expect("ran at least once")
}
