//! `report --dcv`: the DCV tokens CertCentral returned, with their method and domains.

use reissuer::simulator::Scenario;

use crate::support::{self, output, reissuer, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_dcv_lists_each_token_with_its_method_and_names() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 21..=24);
    let mut run = reissuer(dir.path());
    run.arg("run")
        .arg(&manifest)
        .args(["--set", "dcv_method=dns-txt-token"])
        .args(["--base-url", &sim.base_url(), "--rate", "unlimited"]);
    let out = output(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ledger = sim.ledger();
    support::assert_exactly_once(&ledger, 21..=24);

    let mut report = reissuer(dir.path());
    report.args(["report", "--dcv", "--format", "json"]);
    let out = output(report).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows.len(), 4, "{}", text(&out));
    for row in &rows {
        let order_id = row["order_id"].as_u64().expect("order id");
        let accepted = ledger
            .accepted
            .iter()
            .find(|a| a.order_id == order_id)
            .expect("in the ledger");
        let token = accepted.dcv_random_value.as_deref().expect("a token");
        assert_eq!(row["dcv_random_value"], token, "{row}");
        assert_eq!(row["dcv_method"], "dns-txt-token");
        assert_eq!(row["common_name"], "example.com");
        assert_eq!(
            row["dns_names"],
            serde_json::json!(["www.example.com", "api.example.com"])
        );
    }

    let csv_path = dir.path().join("tokens.csv");
    let mut report = reissuer(dir.path());
    report
        .args(["report", "--dcv", "--run", "1", "--output"])
        .arg(&csv_path);
    let out = output(report).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let csv = std::fs::read_to_string(&csv_path).expect("csv written");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("order_id,dcv_method,dcv_random_value,common_name,dns_names")
    );
    let first = ledger
        .accepted
        .iter()
        .find(|a| a.order_id == 21)
        .expect("21");
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "21,dns-txt-token,{},example.com,www.example.com;api.example.com",
                first.dcv_random_value.as_deref().expect("token")
            )
            .as_str()
        )
    );
    assert_eq!(lines.count(), 3);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_dcv_is_empty_when_no_order_got_a_token() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=2);
    let mut run = reissuer(dir.path());
    run.arg("run")
        .arg(&manifest)
        .args(["--base-url", &sim.base_url(), "--rate", "unlimited"]);
    assert_eq!(output(run).await.status.code(), Some(0));
    let mut report = reissuer(dir.path());
    report.args(["report", "--dcv"]);
    let out = output(report).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "order_id,dcv_method,dcv_random_value,common_name,dns_names\n"
    );
    sim.shutdown().await;
}
