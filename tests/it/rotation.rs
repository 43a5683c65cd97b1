//! Closing the rotation loop against the simulator: `dcv check`, `approve`, and `collect
//! --deploy-hook`.

use std::path::Path;

use reissuer::simulator::{Scenario, SimulatorHandle};

use crate::support::{self, output, reissuer, text};

/// The names of every order in `support::tls_manifest`.
const NAMES: [&str; 3] = ["example.com", "www.example.com", "api.example.com"];

/// Sends `support::tls_manifest(ids)` with `extra` flags; asserts it went out.
async fn run_orders(
    dir: &Path,
    sim: &SimulatorHandle,
    ids: std::ops::RangeInclusive<u64>,
    extra: &[&str],
) {
    let manifest = support::tls_manifest(dir, ids.clone());
    let mut run = support::run_against(dir, &manifest, &sim.base_url());
    run.args(["--rate", "unlimited"]).args(extra);
    let out = output(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), ids);
}

fn publish(sim: &SimulatorHandle, order_id: u64) {
    let token = sim.dcv_token(order_id).expect("the order has a token");
    for name in NAMES {
        sim.publish_dcv_token(name, &token);
    }
}

/// How many check-dcv requests reached the simulator for the order.
fn checks(sim: &SimulatorHandle, order_id: u64) -> usize {
    let path = format!("/order/certificate/{order_id}/check-dcv");
    sim.ledger()
        .requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with(&path))
        .count()
}

async fn order_status(sim: &SimulatorHandle, order_id: u64) -> String {
    let info: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("{}/order/certificate/{order_id}", sim.base_url()))
        .header("X-DC-DEVKEY", support::KEY)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    info["status"].as_str().expect("status").to_owned()
}

fn dcv_check(dir: &Path, sim: &SimulatorHandle, extra: &[&str]) -> std::process::Command {
    let mut cmd = reissuer(dir);
    cmd.args([
        "dcv",
        "check",
        "--base-url",
        &sim.base_url(),
        "--rate",
        "unlimited",
    ])
    .args(extra);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcv_check_validates_exactly_the_published_half_and_names_the_others() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    run_orders(
        dir.path(),
        &sim,
        1..=10,
        &["--set", "dcv_method=dns-txt-token"],
    )
    .await;
    for id in 1..=5 {
        publish(&sim, id);
    }

    let out = output(dcv_check(dir.path(), &sim, &["--wait", "2s"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = stdout.lines().collect();
    assert_eq!(listed.len(), 5, "{}", text(&out));
    for id in 6..=10 {
        let line = format!(
            "order {id} awaits DCV (invalid_dns_txt): example.com www.example.com api.example.com"
        );
        assert!(listed.contains(&line.as_str()), "{line} not in\n{stdout}");
    }
    for id in 1..=5 {
        assert_eq!(order_status(&sim, id).await, "issued", "order {id}");
        assert_eq!(checks(&sim, id), 1, "order {id} was validated at once");
    }
    for id in 6..=10 {
        assert_eq!(
            order_status(&sim, id).await,
            "reissue_pending",
            "order {id}"
        );
        assert_eq!(
            checks(&sim, id),
            2,
            "order {id}: checked at once and after 2s"
        );
    }
    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let runs: serde_json::Value =
        serde_json::from_slice(&output(status).await.stdout).expect("json");
    assert_eq!(runs[0]["rotation"]["awaiting_dcv"], 5, "{runs}");

    for id in 6..=10 {
        publish(&sim, id);
    }
    let out = output(dcv_check(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    for id in 1..=10 {
        assert_eq!(order_status(&sim, id).await, "issued", "order {id}");
        let expected = if id <= 5 { 1 } else { 3 };
        assert_eq!(checks(&sim, id), expected, "order {id}");
    }
    // Nothing awaits DCV any more: nothing is sent.
    let before = sim.ledger().requests.len();
    let out = output(dcv_check(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sim.ledger().requests.len(), before);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_replaced_and_report_dcv_shows_the_new_value() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    run_orders(
        dir.path(),
        &sim,
        31..=32,
        &["--set", "dcv_method=http-token"],
    )
    .await;
    let old = sim.dcv_token(31).expect("token");
    sim.expire_dcv_tokens();
    publish(&sim, 31);
    publish(&sim, 32);

    let out = output(dcv_check(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("new DCV token(s) for order(s) 31, 32"),
        "{stderr}"
    );
    let fresh = sim.dcv_token(31).expect("token");
    assert_ne!(fresh, old);

    let mut report = reissuer(dir.path());
    report.args(["report", "--dcv", "--format", "json"]);
    let out = output(report).await;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows[0]["order_id"], 31);
    assert_eq!(rows[0]["dcv_random_value"], fresh.as_str());
    assert_eq!(rows[0]["dcv_method"], "http-token");

    publish(&sim, 31);
    publish(&sim, 32);
    let out = output(dcv_check(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(order_status(&sim, 32).await, "issued");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcv_check_sends_nothing_for_orders_without_a_token_and_stops_on_a_refused_key() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    run_orders(dir.path(), &sim, 41..=42, &[]).await;
    let before = sim.ledger().requests.len();
    let out = output(dcv_check(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sim.ledger().requests.len(), before, "no token, no check");

    sim.shutdown().await;

    let sim = support::simulator(Scenario::default()).await;
    let other = tempfile::tempdir().expect("tempdir");
    run_orders(
        other.path(),
        &sim,
        43..=44,
        &["--set", "dcv_method=dns-txt-token"],
    )
    .await;
    let mut cmd = dcv_check(other.path(), &sim, &[]);
    cmd.env("DIGICERT_API_KEY", "not-the-key");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(!text(&out).contains("not-the-key"));
    sim.shutdown().await;
}
