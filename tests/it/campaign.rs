//! Key-rotation campaigns: payloads filled from the live order, certificates collected.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use reissuer::simulator::{Faults, Scenario};

use crate::support::{self, output, reissuer, text};

/// A fresh key and a CSR for `name`; returns the key's SubjectPublicKeyInfo and the CSR PEM.
fn key_and_csr(name: &str) -> (Vec<u8>, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    (rcgen::PublicKeyData::subject_public_key_info(&key), csr)
}

/// Orders `ids`, each with its own key and a CSR for the simulator's name of the order.
fn manifest_with_keys(
    dir: &Path,
    ids: impl IntoIterator<Item = u64>,
    explicit: bool,
) -> Vec<(u64, Vec<u8>)> {
    let mut csv = String::from(if explicit {
        "order_id,csr_file,common_name,dns_names,server_platform.id,signature_hash\n"
    } else {
        "order_id,csr_file\n"
    });
    let mut keys = Vec::new();
    for id in ids {
        let name = format!("order-{id}.example.com");
        let (public_key, csr) = key_and_csr(&name);
        std::fs::write(dir.join(format!("{id}.csr")), csr).expect("write csr");
        // The simulator's orders: multiples of 7 run nginx with sha384, the rest apache/sha256.
        let (platform, hash) = if id % 7 == 0 {
            (45, "sha384")
        } else {
            (2, "sha256")
        };
        if explicit {
            writeln!(
                csv,
                "{id},{id}.csr,{name},{name};www.{name},{platform},{hash}"
            )
            .expect("w");
        } else {
            writeln!(csv, "{id},{id}.csr").expect("w");
        }
        keys.push((id, public_key));
    }
    std::fs::write(dir.join("orders.csv"), csv).expect("write manifest");
    keys
}

fn leaf_key(pem: &str) -> Vec<u8> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
    let certificate = block.parse_x509().expect("x509");
    certificate.tbs_certificate.subject_pki.raw.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_from_order_builds_the_same_bodies_as_an_explicit_manifest() {
    let explicit_sim = support::simulator(Scenario::default()).await;
    let filled_sim = support::simulator(Scenario::default()).await;
    let explicit = tempfile::tempdir().expect("tempdir");
    let sparse = tempfile::tempdir().expect("tempdir");
    manifest_with_keys(explicit.path(), 1..=14, true);
    manifest_with_keys(sparse.path(), 1..=14, false);
    // Same CSRs on both sides, so the bodies can be compared whole.
    for id in 1..=14 {
        std::fs::copy(
            explicit.path().join(format!("{id}.csr")),
            sparse.path().join(format!("{id}.csr")),
        )
        .expect("copy");
    }

    let mut cmd = reissuer(explicit.path());
    cmd.args(["run", "orders.csv", "--base-url", &explicit_sim.base_url()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut cmd = reissuer(sparse.path());
    cmd.args([
        "run",
        "orders.csv",
        "--fill-from-order",
        "--base-url",
        &filled_sim.base_url(),
    ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let bodies = |sim: &reissuer::simulator::SimulatorHandle| {
        let mut bodies: Vec<(u64, serde_json::Value)> = sim
            .ledger()
            .accepted
            .iter()
            .map(|a| (a.order_id, a.body.clone()))
            .collect();
        bodies.sort_by_key(|(id, _)| *id);
        bodies
    };
    assert_eq!(bodies(&filled_sim), bodies(&explicit_sim));
    assert_eq!(bodies(&filled_sim).len(), 14);

    // A rerun reads the facts from the journal: no order is asked about twice.
    let mut cmd = reissuer(sparse.path());
    cmd.args([
        "run",
        "orders.csv",
        "--fill-from-order",
        "--base-url",
        &filled_sim.base_url(),
    ]);
    assert_eq!(output(cmd).await.status.code(), Some(0));
    let order_info_gets = filled_sim
        .ledger()
        .requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/certificate/{}", 7)))
        .count();
    assert_eq!(order_info_gets, 1);
    assert_eq!(
        filled_sim.ledger().accepted.len(),
        14,
        "the rerun sent again"
    );
    explicit_sim.shutdown().await;
    filled_sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_writes_every_certificate_for_the_key_that_was_generated() {
    let sim = support::simulator(Scenario {
        issuance_delay: Duration::from_millis(1500),
        needs_approval_orders: vec![49..=50],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = manifest_with_keys(dir.path(), 1..=50, true);
    let mut cmd = support::run_against(dir.path(), Path::new("orders.csv"), &sim.base_url());
    cmd.args(["--rate", "unlimited"]);
    assert_eq!(output(cmd).await.status.code(), Some(0));

    let mut cmd = reissuer(dir.path());
    cmd.args([
        "collect",
        "--out",
        "certs",
        "--wait",
        "8s",
        "--rate",
        "unlimited",
    ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("order 49: not issued yet (needs_approval)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("order 50: not issued yet (needs_approval)"),
        "{stderr}"
    );
    for (id, public_key) in &keys {
        let path = dir.path().join("certs").join(format!("{id}.pem"));
        if *id >= 49 {
            assert!(!path.exists());
            continue;
        }
        let pem = std::fs::read_to_string(&path).expect("certificate written");
        assert_eq!(&leaf_key(&pem), public_key, "order {id}: wrong key");
        assert!(pem.matches("BEGIN CERTIFICATE").count() >= 2, "no chain");
    }
    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let runs: serde_json::Value =
        serde_json::from_slice(&output(status).await.stdout).expect("json");
    assert_eq!(runs[0]["collection"]["downloaded"], 48);
    assert_eq!(runs[0]["collection"]["awaiting_issuance"], 2);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reissue_sent_without_a_csr_is_counted_as_not_collectable_not_as_awaiting_issuance() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    manifest_with_keys(dir.path(), 1..=2, true);
    let mut csv = std::fs::read_to_string(dir.path().join("orders.csv")).expect("manifest");
    csv.push_str("3,,order-3.example.com,order-3.example.com,2,sha256\n");
    std::fs::write(dir.path().join("orders.csv"), csv).expect("manifest");
    let mut cmd = support::run_against(dir.path(), Path::new("orders.csv"), &sim.base_url());
    cmd.args(["--rate", "unlimited"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut cmd = reissuer(dir.path());
    cmd.args([
        "collect",
        "--out",
        "certs",
        "--wait",
        "5s",
        "--rate",
        "unlimited",
    ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("order 3: the reissue carried no CSR"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 downloaded in all, 0 issued not downloaded, 0 awaiting issuance, 1 cannot be collected"),
        "{stderr}"
    );
    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let runs: serde_json::Value =
        serde_json::from_slice(&output(status).await.stdout).expect("json");
    assert_eq!(runs[0]["collection"]["downloaded"], 2, "{runs}");
    assert_eq!(runs[0]["collection"]["awaiting_issuance"], 0, "{runs}");
    assert_eq!(runs[0]["collection"]["cannot_collect"], 1, "{runs}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collect_killed_midway_resumes_without_downloading_again() {
    let sim = support::simulator(Scenario {
        faults: Faults {
            latency: Duration::from_millis(100),
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = manifest_with_keys(dir.path(), 1..=20, true);
    let mut cmd = support::run_against(dir.path(), Path::new("orders.csv"), &sim.base_url());
    cmd.args(["--rate", "unlimited"]);
    assert_eq!(output(cmd).await.status.code(), Some(0));

    let collect = || {
        let mut cmd = reissuer(dir.path());
        cmd.args([
            "collect",
            "--out",
            "certs",
            "--rate",
            "unlimited",
            "--concurrency",
            "1",
        ]);
        cmd
    };
    let mut child = collect()
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawns");
    let certs = dir.path().join("certs");
    let started = std::time::Instant::now();
    while std::fs::read_dir(&certs).map(|d| d.count()).unwrap_or(0) < 5 {
        assert!(started.elapsed() < Duration::from_secs(30), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let out = output(collect()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for (id, public_key) in &keys {
        let pem = std::fs::read_to_string(certs.join(format!("{id}.pem"))).expect("written");
        assert_eq!(&leaf_key(&pem), public_key);
    }
    let downloads = sim
        .ledger()
        .requests
        .iter()
        .filter(|r| r.path.contains("/download/"))
        .count();
    // One download may have been under way at the kill; none written before it is repeated.
    assert!(
        downloads <= keys.len() + 1,
        "{downloads} downloads for {} orders",
        keys.len()
    );
    sim.shutdown().await;
}

/// The README's walkthrough: a list of order ids → keys and CSRs named after the live orders →
/// reissues → certificates for exactly those keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_run_collect_from_a_list_of_order_ids() {
    let sim = support::simulator(Scenario {
        issuance_delay: Duration::from_millis(500),
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ids: Vec<u64> = (101..=150).collect();
    let list: String = std::iter::once("order_id".to_owned())
        .chain(ids.iter().map(u64::to_string))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("ids.csv"), list + "\n").expect("write");

    let mut keygen = reissuer(dir.path());
    keygen.args([
        "keygen",
        "ids.csv",
        "--out",
        "campaign",
        "--fill-from-order",
    ]);
    keygen.args(["--base-url", &sim.base_url(), "--rate", "unlimited"]);
    let out = output(keygen).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut run = reissuer(dir.path());
    run.args([
        "run",
        "campaign/manifest.csv",
        "--base-url",
        &sim.base_url(),
    ]);
    run.args(["--rate", "unlimited"]);
    let out = output(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), ids.iter().copied());
    let reissue = &sim.ledger().accepted[0];
    let name = format!("order-{}.example.com", reissue.order_id);
    assert_eq!(reissue.body["certificate"]["common_name"], name.as_str());

    let mut collect = reissuer(dir.path());
    collect.args([
        "collect",
        "--out",
        "certs",
        "--wait",
        "20s",
        "--rate",
        "unlimited",
    ]);
    let out = output(collect).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for id in &ids {
        let key_pem =
            std::fs::read_to_string(dir.path().join(format!("campaign/{id}.key"))).expect("key");
        let key = rcgen::KeyPair::from_pem(&key_pem).expect("key parses");
        let cert = std::fs::read_to_string(dir.path().join(format!("certs/{id}.pem")))
            .expect("certificate");
        assert_eq!(
            leaf_key(&cert),
            rcgen::PublicKeyData::subject_public_key_info(&key),
            "order {id}"
        );
    }
    sim.shutdown().await;
}
