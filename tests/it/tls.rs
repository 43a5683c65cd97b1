//! Enterprise networks, against the simulator over HTTPS with a throwaway CA: a server
//! certificate nobody trusts stops a command at once (exit 6) with every order as it was;
//! `--ca-file`, `REISSUER_CA_FILE`, `SSL_CERT_FILE` and `SSL_CERT_DIR` trust it; `HTTPS_PROXY`
//! and `ALL_PROXY` send the requests through a CONNECT tunnel, `NO_PROXY` past it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reissuer::simulator::{Scenario, ServerTls, SimulatorHandle, TLS_CA_NAME};

use crate::connect_proxy::ConnectProxy;
use crate::support::{self, output, reissuer, text};

/// The simulator over HTTPS, and its CA certificate written to `dir/ca.pem`.
async fn https_simulator(dir: &Path, tls: ServerTls) -> (SimulatorHandle, PathBuf) {
    let sim = support::simulator(Scenario {
        tls: Some(tls),
        ..Scenario::default()
    })
    .await;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, sim.tls_ca_pem().expect("serving TLS")).expect("write CA");
    (sim, ca)
}

/// The run's rows, from `report --format json`.
async fn report(dir: &Path) -> Vec<serde_json::Value> {
    let mut cmd = reissuer(dir);
    cmd.args(["report", "--run", "1", "--format", "json"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("json report")
}

/// Every row of the run is `pending` and was charged no attempt.
async fn assert_all_pending_unattempted(dir: &Path, orders: usize) {
    let rows = report(dir).await;
    assert_eq!(rows.len(), orders);
    for row in &rows {
        assert_eq!(row["state"], "pending", "{row}");
        assert_eq!(row["attempts"], 0, "{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_stops_the_run_at_once_and_ca_file_then_sends_each_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, ca) = https_simulator(dir.path(), ServerTls::default()).await;
    let manifest = support::tls_manifest(dir.path(), 1..=20);

    let started = Instant::now();
    let out = output(support::run_against(dir.path(), &manifest, &sim.base_url())).await;
    let elapsed = started.elapsed();
    eprintln!("refused after {elapsed:?}");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(TLS_CA_NAME), "issuer not named: {stderr}");
    assert!(stderr.contains("--ca-file"), "no way to trust it: {stderr}");
    // Not retried like an outage: one handshake, then the stop. A retrying run takes tens of
    // seconds of backoff before it gives up.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(sim.ledger().requests.is_empty(), "a request got through");
    assert_all_pending_unattempted(dir.path(), 20).await;

    let mut again = support::run_against(dir.path(), &manifest, &sim.base_url());
    again.arg("--ca-file").arg(&ca);
    let out = output(again).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_given_through_ssl_cert_file_is_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, ca) = https_simulator(dir.path(), ServerTls::default()).await;
    let manifest = support::tls_manifest(dir.path(), 1..=10);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.env("SSL_CERT_FILE", &ca);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_in_a_directory_named_by_ssl_cert_dir_is_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, ca) = https_simulator(dir.path(), ServerTls::default()).await;
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    std::fs::copy(&ca, certs.join("company-ca.pem")).expect("copy CA");
    let manifest = support::tls_manifest(dir.path(), 1..=10);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.env("SSL_CERT_DIR", &certs);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_or_an_expired_one_stops_even_with_its_ca_trusted() {
    let cases = [
        (
            ServerTls {
                names: vec!["certcentral.example.test".into()],
                expired: false,
            },
            "is not for 127.0.0.1",
        ),
        (
            ServerTls {
                expired: true,
                ..ServerTls::default()
            },
            "has expired",
        ),
    ];
    for (tls, says) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sim, ca) = https_simulator(dir.path(), tls).await;
        let manifest = support::tls_manifest(dir.path(), 1..=5);
        let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
        cmd.arg("--ca-file").arg(&ca);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(6), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "expected {says:?}: {stderr}");
        assert!(stderr.contains(TLS_CA_NAME), "issuer not named: {stderr}");
        assert!(sim.ledger().requests.is_empty(), "a request got through");
        assert_all_pending_unattempted(dir.path(), 5).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_https_proxy_every_connection_goes_through_a_connect_tunnel() {
    for variable in ["HTTPS_PROXY", "ALL_PROXY"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sim, ca) = https_simulator(dir.path(), ServerTls::default()).await;
        let proxy = ConnectProxy::start().await;
        let manifest = support::tls_manifest(dir.path(), 1..=10);
        let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
        cmd.arg("--ca-file").arg(&ca).env(variable, proxy.url());
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{variable}: {}", text(&out));
        support::assert_exactly_once(&sim.ledger(), 1..=10);
        let tunnels = proxy.tunnels();
        let port = sim.base_url().split(':').nth(2).expect("port").to_owned();
        let port = port.split('/').next().expect("port");
        let target = format!("127.0.0.1:{port}");
        assert!(!tunnels.is_empty(), "{variable}: no tunnel was opened");
        assert!(
            tunnels.iter().all(|t| *t == target),
            "{variable}: tunnels {tunnels:?}, expected only {target}"
        );
        assert!(proxy.refused().is_empty(), "{:?}", proxy.refused());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_matching_the_host_goes_around_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, ca) = https_simulator(dir.path(), ServerTls::default()).await;
    let proxy = ConnectProxy::start().await;
    let manifest = support::tls_manifest(dir.path(), 1..=10);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.arg("--ca-file")
        .arg(&ca)
        .env("HTTPS_PROXY", proxy.url())
        .env("NO_PROXY", "localhost,127.0.0.1");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=10);
    assert!(proxy.tunnels().is_empty(), "tunnels: {:?}", proxy.tunnels());
    assert!(proxy.refused().is_empty(), "{:?}", proxy.refused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_and_keygen_fill_from_order_stop_the_same_way_and_reissuer_ca_file_trusts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, ca) = https_simulator(dir.path(), ServerTls::default()).await;
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.env("REISSUER_CA_FILE", &ca);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let requests_before = sim.ledger().requests.len();

    let certs = dir.path().join("certs");
    let mut collect = reissuer(dir.path());
    collect.args(["collect", "--out"]).arg(&certs);
    let out = output(collect).await;
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-file"));

    let keys = dir.path().join("keys");
    let ids = dir.path().join("ids.csv");
    std::fs::write(&ids, "order_id\n1\n2\n").expect("write ids");
    let mut keygen = reissuer(dir.path());
    keygen
        .arg("keygen")
        .arg(&ids)
        .arg("--out")
        .arg(&keys)
        .args(["--fill-from-order", "--base-url", &sim.base_url()]);
    let out = output(keygen).await;
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(TLS_CA_NAME));
    let written = std::fs::read_dir(&keys).map_or(0, |entries| entries.count());
    assert_eq!(written, 0, "keygen wrote files");
    assert_eq!(sim.ledger().requests.len(), requests_before);

    let mut collect = reissuer(dir.path());
    collect
        .args(["collect", "--out"])
        .arg(&certs)
        .env("REISSUER_CA_FILE", &ca);
    let out = output(collect).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for id in 1..=3 {
        assert!(certs.join(format!("{id}.pem")).exists(), "order {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_that_holds_no_certificate_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, _ca) = https_simulator(dir.path(), ServerTls::default()).await;
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    for (path, says) in [
        (empty.clone(), "no PEM certificate"),
        (dir.path().join("missing.pem"), "cannot read it"),
    ] {
        let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
        cmd.arg("--ca-file").arg(&path);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&path.display().to_string()) && stderr.contains(says),
            "{stderr}"
        );
    }
    assert!(sim.ledger().requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_talks_to_its_simulator_directly_whatever_the_proxy_variables_say() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = ConnectProxy::start().await;
    let mut demo = reissuer(dir.path());
    demo.arg("demo")
        .arg("--journal")
        .arg(dir.path().join("demo.db"));
    for variable in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"] {
        demo.env(variable, proxy.url());
    }
    let out = output(demo).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(proxy.tunnels().is_empty(), "{:?}", proxy.tunnels());
    assert!(proxy.refused().is_empty(), "{:?}", proxy.refused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_with_tls_ca_out_serves_https_that_ca_file_trusts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, port_file) = (dir.path().join("ca.pem"), dir.path().join("port"));
    let _server = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_reissuer"))
            .arg("simulate")
            .arg("--tls-ca-out")
            .arg(&ca)
            .arg("--port-file")
            .arg(&port_file)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("simulate starts"),
    );
    let started = Instant::now();
    while !port_file.exists() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let port = std::fs::read_to_string(&port_file).expect("port file");
    let base_url = format!("https://127.0.0.1:{}/services/v2", port.trim());
    let manifest = support::tls_manifest(dir.path(), 1..=3);

    let out = output(support::run_against(dir.path(), &manifest, &base_url)).await;
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let mut trusted = support::run_against(dir.path(), &manifest, &base_url);
    trusted.arg("--ca-file").arg(&ca);
    let out = output(trusted).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A child process stopped when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcv_check_stops_at_once_too_rather_than_checking_again_until_its_wait_is_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, ca) = https_simulator(dir.path(), ServerTls::default()).await;
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.args(["--set", "dcv_method=dns-txt-token"])
        .env("REISSUER_CA_FILE", &ca);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let requests_before = sim.ledger().requests.len();

    let mut check = reissuer(dir.path());
    check.args(["dcv", "check", "--wait", "60s"]);
    let started = Instant::now();
    let out = output(check).await;
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(TLS_CA_NAME));
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(sim.ledger().requests.len(), requests_before);

    let mut check = reissuer(dir.path());
    check.args(["dcv", "check"]).env("REISSUER_CA_FILE", &ca);
    let out = output(check).await;
    // Nothing is published: every order still waits, and says so.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(sim.ledger().requests.len() > requests_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_stops_at_once_too_and_approves_each_request_once_when_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = support::simulator(Scenario {
        tls: Some(ServerTls::default()),
        approval_required: true,
        ..Scenario::default()
    })
    .await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sim.tls_ca_pem().expect("serving TLS")).expect("write CA");
    let manifest = support::tls_manifest(dir.path(), 1..=3);
    let mut cmd = support::run_against(dir.path(), &manifest, &sim.base_url());
    cmd.env("REISSUER_CA_FILE", &ca);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let requests_before = sim.ledger().requests.len();

    let mut approve = reissuer(dir.path());
    approve.arg("approve");
    let started = Instant::now();
    let out = output(approve).await;
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(TLS_CA_NAME), "issuer not named: {stderr}");
    assert!(stderr.contains("--ca-file"), "no way to trust it: {stderr}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(sim.ledger().requests.len(), requests_before);
    assert!(sim.ledger().approvals.is_empty());

    let mut approve = reissuer(dir.path());
    approve.arg("approve").arg("--ca-file").arg(&ca);
    let out = output(approve).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut approved: Vec<u64> = sim.ledger().approvals.iter().map(|a| a.order_id).collect();
    approved.sort_unstable();
    assert_eq!(approved, [1, 2, 3], "each request approved once");
}
