//! DCV and approvals as a client sees them: real HTTP against the simulator on loopback.

use rcgen::{CertificateParams, DnType, KeyPair};
use serde_json::{Value, json};

use super::*;

const KEY: &str = "test-key-rotation";

async fn simulator(scenario: Scenario) -> SimulatorHandle {
    start_on_loopback(Scenario {
        api_key: Some(KEY.to_owned()),
        ..scenario
    })
    .await
    .expect("simulator starts on loopback")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds")
}

fn csr(name: &str) -> String {
    let key = KeyPair::generate().expect("P-256 key");
    let mut params = CertificateParams::new(vec![name.to_owned()]).expect("valid name");
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params
        .serialize_request(&key)
        .expect("rcgen signs the CSR")
        .pem()
        .expect("PEM encoding");
    pem.lines().map(str::trim).collect()
}

fn reissue_body(name: &str, extra: &Value) -> Value {
    let mut body = json!({
        "certificate": {
            "common_name": name,
            "dns_names": [name, format!("www.{name}")],
            "csr": csr(name),
            "signature_hash": "sha256"
        }
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

/// Sends a request with the key; returns the status and the body (JSON, or `null`).
async fn call(
    sim: &SimulatorHandle,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = client()
        .request(method, format!("{}{path}", sim.base_url()))
        .header("X-DC-DEVKEY", KEY);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("simulator answers");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn reissue(sim: &SimulatorHandle, order_id: u64, body: &Value) -> Value {
    let path = format!("/order/certificate/{order_id}/reissue");
    let (status, answer) = call(sim, reqwest::Method::POST, &path, Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    answer
}

async fn order_status(sim: &SimulatorHandle, order_id: u64) -> String {
    let path = format!("/order/certificate/{order_id}");
    let (_, info) = call(sim, reqwest::Method::GET, &path, None).await;
    info["status"].as_str().expect("a status").to_owned()
}

async fn check_dcv(sim: &SimulatorHandle, order_id: u64) -> (u16, Value) {
    let path = format!("/order/certificate/{order_id}/check-dcv");
    call(sim, reqwest::Method::PUT, &path, None).await
}

fn first_code(answer: &Value) -> &str {
    answer["errors"][0]["code"].as_str().unwrap_or_default()
}

async fn publish(sim: &SimulatorHandle, dns_name: &str, value: &str) {
    let response = client()
        .post(format!(
            "{}{}",
            sim.base_url().trim_end_matches(routes::BASE_PATH),
            routes::PUBLISH_DCV_PATH
        ))
        .json(&json!({"dns_name": dns_name, "value": value}))
        .send()
        .await
        .expect("simulator answers");
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn a_token_reissue_is_issued_only_once_every_name_is_published_and_checked() {
    let sim = simulator(Scenario::default()).await;
    let body = reissue_body("a.example", &json!({"dcv_method": "dns-txt-token"}));
    let token = reissue(&sim, 5, &body).await["dcv_random_value"]
        .as_str()
        .expect("a token")
        .to_owned();
    assert_eq!(order_status(&sim, 5).await, "reissue_pending");

    let (status, answer) = check_dcv(&sim, 5).await;
    assert_eq!((status, first_code(&answer)), (400, "invalid_dns_txt"));
    publish(&sim, "a.example", &token).await;
    publish(&sim, "www.a.example", "some other value").await;
    assert_eq!(
        order_status(&sim, 5).await,
        "reissue_pending",
        "published is not checked"
    );
    let (status, answer) = check_dcv(&sim, 5).await;
    assert_eq!((status, first_code(&answer)), (400, "invalid_dns_txt"));

    sim.publish_dcv_token("WWW.a.example", &token);
    let (status, answer) = check_dcv(&sim, 5).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["dcv_status"], "valid");
    assert_eq!(answer["order_status"], "issued");
    assert!(answer["certificate_id"].is_u64());
    assert_eq!(
        answer["dns_name_validations"],
        json!([{"dns_name": "a.example", "status": "approved"},
               {"dns_name": "www.a.example", "status": "approved"}])
    );
    assert_eq!(order_status(&sim, 5).await, "issued");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_is_replaced_by_dcv_random_value_and_the_new_one_validates() {
    let sim = simulator(Scenario::default()).await;
    let body = reissue_body("b.example", &json!({"dcv_method": "http-token"}));
    let old = reissue(&sim, 6, &body).await["dcv_random_value"]
        .as_str()
        .expect("a token")
        .to_owned();
    let path = "/order/certificate/6/dcv-random-value";
    let (status, current) = call(&sim, reqwest::Method::PUT, path, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        current["dcv_random_value"],
        old.as_str(),
        "same while valid"
    );
    assert!(
        current["expiration_date"]
            .as_str()
            .is_some_and(|d| d.ends_with('Z'))
    );

    sim.expire_dcv_tokens();
    for name in ["b.example", "www.b.example"] {
        sim.publish_dcv_token(name, &old);
    }
    let (status, answer) = check_dcv(&sim, 6).await;
    assert_eq!((status, first_code(&answer)), (400, "expired_random_value"));
    let (_, fresh) = call(&sim, reqwest::Method::PUT, path, None).await;
    let fresh = fresh["dcv_random_value"]
        .as_str()
        .expect("a token")
        .to_owned();
    assert_ne!(fresh, old);
    assert_eq!(sim.dcv_token(6).as_deref(), Some(fresh.as_str()));
    let (status, answer) = check_dcv(&sim, 6).await;
    assert_eq!(
        (status, first_code(&answer)),
        (400, "file_random_value_not_found"),
        "the old token no longer counts"
    );
    for name in ["b.example", "www.b.example"] {
        sim.publish_dcv_token(name, &fresh);
    }
    assert_eq!(check_dcv(&sim, 6).await.0, 200);
    // An order with no token reissue cannot be checked.
    let (status, answer) = check_dcv(&sim, 7).await;
    assert_eq!((status, first_code(&answer)), (400, "invalid_dcv_method"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_request_waiting_for_approval_is_listed_approved_once_and_then_issued() {
    let sim = simulator(Scenario {
        approval_required: true,
        ..Scenario::default()
    })
    .await;
    let waiting = reissue(&sim, 10, &reissue_body("c.example", &json!({}))).await;
    let request_id = waiting["requests"][0]["id"].as_u64().expect("request id");
    let skipped = reissue(
        &sim,
        11,
        &reissue_body("d.example", &json!({"skip_approval": true})),
    )
    .await;
    assert_eq!(order_status(&sim, 10).await, "needs_approval");
    assert_eq!(order_status(&sim, 11).await, "issued");

    let list_path = "/request?filters%5Bstatus%5D=pending&offset=0&limit=1000";
    let (status, list) = call(&sim, reqwest::Method::GET, list_path, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["page"]["total"], 1);
    assert_eq!(list["requests"][0]["id"], request_id);
    assert_eq!(list["requests"][0]["order"]["id"], 10);
    assert_eq!(list["requests"][0]["type"], "reissue");
    let skipped_id = skipped["requests"][0]["id"].as_u64().expect("request id");
    let (_, info) = call(
        &sim,
        reqwest::Method::GET,
        &format!("/request/{skipped_id}"),
        None,
    )
    .await;
    assert_eq!(info["status"], "approved");

    let approve = json!({"status": "approved", "processor_comment": "key rotation"});
    let status_path = format!("/request/{request_id}/status");
    let (status, _) = call(&sim, reqwest::Method::PUT, &status_path, Some(&approve)).await;
    assert_eq!(status, 204);
    let (status, again) = call(&sim, reqwest::Method::PUT, &status_path, Some(&approve)).await;
    assert_eq!(
        (status, first_code(&again)),
        (400, "invalid_request_status")
    );
    let (_, info) = call(
        &sim,
        reqwest::Method::GET,
        &format!("/request/{request_id}"),
        None,
    )
    .await;
    assert_eq!(info["status"], "approved");
    assert!(info["date_processed"].is_string());
    assert_eq!(order_status(&sim, 10).await, "issued");
    let (_, list) = call(&sim, reqwest::Method::GET, list_path, None).await;
    assert_eq!(list["requests"], json!([]));

    let ledger = sim.ledger();
    assert_eq!(ledger.approvals.len(), 1);
    assert_eq!(ledger.approvals[0].request_id, request_id);
    assert_eq!(
        ledger.approvals[0].processor_comment.as_deref(),
        Some("key rotation")
    );
    let (status, _) = call(
        &sim,
        reqwest::Method::PUT,
        "/request/999/status",
        Some(&approve),
    )
    .await;
    assert_eq!(status, 404);
    sim.shutdown().await;
}
