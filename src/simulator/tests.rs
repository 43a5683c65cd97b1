//! End-to-end tests: a real simulator on 127.0.0.1:0 and a real HTTP client (reqwest), so the
//! wire shapes, the connection handling and the ledger are checked as a client sees them.

use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DnType, KeyPair};
use serde_json::{Value, json};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension};

use super::*;
use crate::config::Quota;

const KEY: &str = "test-key-3f9a";

/// A CSR for `names` (the first is the CN), as one line the way the client sends it: header,
/// base64 body and footer with no line break anywhere.
fn one_line_csr(key: &KeyPair, names: &[&str]) -> String {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("valid names");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let pem = params
        .serialize_request(key)
        .expect("rcgen signs the CSR")
        .pem()
        .expect("PEM encoding");
    one_line(&pem)
}

fn one_line(pem: &str) -> String {
    pem.lines().map(str::trim).collect()
}

/// The DER SubjectPublicKeyInfo of a one-line CSR, parsed independently of the simulator.
fn csr_spki(csr: &str) -> Vec<u8> {
    let body = csr
        .trim_start_matches("-----BEGIN CERTIFICATE REQUEST-----")
        .trim_end_matches("-----END CERTIFICATE REQUEST-----");
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body)
        .expect("base64 body");
    let (_, request) = X509CertificationRequest::from_der(&der).expect("CSR parses");
    request.certification_request_info.subject_pki.raw.to_vec()
}

async fn simulator(scenario: Scenario) -> SimulatorHandle {
    start_on_loopback(scenario)
        .await
        .expect("simulator starts on loopback")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds")
}

fn keyed() -> Scenario {
    Scenario {
        api_key: Some(KEY.to_owned()),
        ..Scenario::default()
    }
}

fn body(csr: &str, common_name: &str) -> Value {
    json!({
        "certificate": {
            "common_name": common_name,
            "dns_names": [common_name, format!("www.{common_name}")],
            "csr": csr,
            "server_platform": {"id": 45},
            "signature_hash": "sha256"
        }
    })
}

async fn post(sim: &SimulatorHandle, order_id: u64, body: &Value) -> reqwest::Response {
    client()
        .post(format!(
            "{}/order/certificate/{order_id}/reissue",
            sim.base_url()
        ))
        .header("X-DC-DEVKEY", KEY)
        .json(body)
        .send()
        .await
        .expect("simulator answers")
}

async fn get(sim: &SimulatorHandle, path: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", sim.base_url()))
        .header("X-DC-DEVKEY", KEY)
        .send()
        .await
        .expect("simulator answers")
}

async fn get_json(sim: &SimulatorHandle, path: &str) -> Value {
    let response = get(sim, path).await;
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.expect("JSON body")
}

fn error_codes(value: &Value) -> Vec<String> {
    value["errors"]
        .as_array()
        .expect("an errors list")
        .iter()
        .map(|e| e["code"].as_str().expect("a code").to_owned())
        .collect()
}

fn simple_csr(name: &str) -> String {
    let key = KeyPair::generate().expect("P-256 key");
    one_line_csr(&key, &[name])
}

#[tokio::test]
async fn reissue_answers_201_with_ids_and_lands_in_the_ledger() {
    let sim = simulator(keyed()).await;
    let csr = simple_csr("a.example.com");
    let sent = body(&csr, "a.example.com");
    let response = post(&sim, 42, &sent).await;
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(answer["id"], 42);
    let request_id = answer["requests"][0]["id"].as_u64().expect("a request id");
    assert!(answer.get("certificate_id").is_none(), "no skip_approval");
    assert!(answer.get("dcv_random_value").is_none(), "no token DCV");

    let ledger = sim.ledger();
    assert_eq!(ledger.accepted.len(), 1);
    let accepted = &ledger.accepted[0];
    assert_eq!(accepted.order_id, 42);
    assert_eq!(accepted.request_id, request_id);
    assert_eq!(accepted.csr.as_deref(), Some(csr.as_str()));
    assert_eq!(accepted.body, sent);
    assert_eq!(accepted.certificate_id, None);
    assert!(
        accepted.accepted_at_ms > 1_700_000_000_000,
        "unix milliseconds"
    );
    assert_eq!(ledger.accepted_per_order(), [(42, 1)].into());
    assert_eq!(ledger.requests.len(), 1);
    assert_eq!(ledger.requests[0].method, "POST");
    assert_eq!(
        ledger.requests[0].path,
        "/services/v2/order/certificate/42/reissue"
    );
    assert_eq!(ledger.count_status(201), 1);

    // A second reissue while the first is pending is accepted too, so double sends show up.
    assert_eq!(post(&sim, 42, &sent).await.status(), 201);
    assert_eq!(sim.ledger().accepted_per_order(), [(42, 2)].into());
    sim.shutdown().await;
}

#[tokio::test]
async fn skip_approval_returns_a_certificate_id() {
    let sim = simulator(keyed()).await;
    let mut sent = body(&simple_csr("b.example.com"), "b.example.com");
    sent["skip_approval"] = json!(true);
    let answer: Value = post(&sim, 7, &sent).await.json().await.expect("JSON");
    let certificate_id = answer["certificate_id"].as_u64().expect("a certificate id");
    assert_eq!(
        sim.ledger().accepted[0].certificate_id,
        Some(certificate_id)
    );
    let list = get_json(&sim, "/order/certificate/7/reissue").await;
    assert_eq!(list["certificates"][0]["id"], certificate_id);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_dcv_methods_get_a_random_value_and_the_seed_fixes_it() {
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let sim = simulator(Scenario {
            seed: 99,
            ..keyed()
        })
        .await;
        let mut sent = body(&simple_csr("c.example.com"), "c.example.com");
        for method in ["dns-txt-token", "dns-cname-token", "http-token"] {
            sent["dcv_method"] = json!(method);
            let answer: Value = post(&sim, 3, &sent).await.json().await.expect("JSON");
            let token = answer["dcv_random_value"].as_str().expect("a token");
            assert_eq!(token.len(), 32);
            assert!(
                token
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            );
            tokens.push(token.to_owned());
        }
        sent["dcv_method"] = json!("email");
        let answer: Value = post(&sim, 3, &sent).await.json().await.expect("JSON");
        assert!(
            answer.get("dcv_random_value").is_none(),
            "email DCV has no token"
        );
        let ledger = sim.ledger();
        assert_eq!(
            ledger.accepted[0].dcv_random_value.as_deref(),
            Some(tokens[tokens.len() - 3].as_str())
        );
        sim.shutdown().await;
    }
    assert_ne!(tokens[0], tokens[1], "tokens differ within a run");
    assert_eq!(tokens[..3], tokens[3..], "one seed, one sequence");
}

#[tokio::test]
async fn missing_hash_and_bad_csr_are_reported_together_and_commit_nothing() {
    let sim = simulator(keyed()).await;
    let good = simple_csr("d.example.com");
    // One character of the signature changed: it parses, but must not verify.
    let mut tampered: Vec<char> = good.chars().collect();
    let at = tampered.len() - "-----END CERTIFICATE REQUEST-----".len() - 10;
    tampered[at] = if tampered[at] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    for csr in [
        "not a csr",
        "-----BEGIN CERTIFICATE REQUEST-----AAAA-----END CERTIFICATE REQUEST-----",
        &tampered,
    ] {
        let sent = json!({"certificate": {"common_name": "d.example.com", "csr": csr}});
        let response = post(&sim, 5, &sent).await;
        assert_eq!(response.status(), 400);
        let answer: Value = response.json().await.expect("JSON");
        assert_eq!(
            error_codes(&answer),
            [
                "required_param:certificate.signature_hash",
                "csr_invalid_cannot_parse"
            ],
            "csr {csr:?}"
        );
    }
    let wrong_hash = json!({"certificate": {"csr": good, "signature_hash": "md5"}});
    let answer: Value = post(&sim, 5, &wrong_hash).await.json().await.expect("JSON");
    assert_eq!(
        error_codes(&answer),
        ["invalid_param:certificate.signature_hash"]
    );
    assert!(sim.ledger().accepted.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn unparsable_json_is_bad_request_format() {
    let sim = simulator(keyed()).await;
    let response = client()
        .post(format!("{}/order/certificate/1/reissue", sim.base_url()))
        .header("X-DC-DEVKEY", KEY)
        .header("Content-Type", "application/json")
        .body("{\"certificate\": ")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(error_codes(&answer), ["bad_request_format"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn csr_with_line_breaks_and_bare_public_keys_are_accepted() {
    let sim = simulator(keyed()).await;
    let key = KeyPair::generate().expect("key");
    let multi_line = one_line_csr(&key, &["e.example.com"])
        .replace(
            "-----BEGIN CERTIFICATE REQUEST-----",
            "-----BEGIN CERTIFICATE REQUEST-----\n",
        )
        .replace("-----END", "\n-----END");
    assert_eq!(
        post(&sim, 8, &body(&multi_line, "e.example.com"))
            .await
            .status(),
        201
    );
    let public_key = one_line(&key.public_key_pem());
    assert_eq!(
        post(&sim, 8, &body(&public_key, "e.example.com"))
            .await
            .status(),
        201
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn missing_key_is_401_wrong_key_is_403_and_the_key_is_never_echoed() {
    let sim = simulator(keyed()).await;
    let url = format!("{}/order/certificate/1", sim.base_url());
    let missing = client().get(&url).send().await.expect("answer");
    assert_eq!(missing.status(), 401);
    let wrong = client()
        .get(&url)
        .header("X-DC-DEVKEY", "wrong-key-77")
        .send()
        .await
        .expect("answer");
    assert_eq!(wrong.status(), 403);
    let text = wrong.text().await.expect("body");
    assert!(!text.contains("wrong-key-77") && !text.contains(KEY));
    let answer: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        error_codes(&answer),
        ["access_denied|access_denied_invalid_key"]
    );
    assert_eq!(get(&sim, "/order/certificate/1").await.status(), 200);
    assert!(
        !format!("{:?}", keyed()).contains(KEY),
        "Scenario's Debug redacts the key"
    );
    sim.shutdown().await;

    // With no configured key, any non-empty key works.
    let open = simulator(Scenario::default()).await;
    let any = client()
        .get(format!("{}/order/certificate/1", open.base_url()))
        .header("X-DC-DEVKEY", "anything")
        .send()
        .await
        .expect("answer");
    assert_eq!(any.status(), 200);
    open.shutdown().await;
}

#[tokio::test]
async fn missing_orders_answer_404_not_found_order() {
    let sim = simulator(Scenario {
        missing_orders: vec![100..=199, 500..=500],
        ..keyed()
    })
    .await;
    for order_id in [100, 150, 199, 500] {
        let response = post(
            &sim,
            order_id,
            &body(&simple_csr("f.example.com"), "f.example.com"),
        )
        .await;
        assert_eq!(response.status(), 404, "order {order_id}");
        let answer: Value = response.json().await.expect("JSON");
        assert_eq!(error_codes(&answer), ["not_found|order"]);
        let info = get(&sim, &format!("/order/certificate/{order_id}")).await;
        assert_eq!(info.status(), 404);
        let list = get(&sim, &format!("/order/certificate/{order_id}/reissue")).await;
        assert_eq!(list.status(), 404);
    }
    assert_eq!(get(&sim, "/order/certificate/200").await.status(), 200);
    assert!(sim.ledger().accepted.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_answer_404_not_found_route() {
    let sim = simulator(keyed()).await;
    for path in [
        "/order/certificate/1/cancel",
        "/user/you",
        "/certificate/1/download/format/p7b",
    ] {
        let response = get(&sim, path).await;
        assert_eq!(response.status(), 404, "{path}");
        let answer: Value = response.json().await.expect("JSON");
        assert_eq!(error_codes(&answer), ["not_found|route"]);
    }
    sim.shutdown().await;
}

/// Every admitted request's start, per quota: no interval of length `window` holds more than
/// `limit` of them.
fn assert_no_window_overfull(admitted_us: &[u64], quota: Quota) {
    let window_us = u64::try_from(quota.window.as_micros()).expect("small window");
    for (i, &start) in admitted_us.iter().enumerate() {
        let inside = admitted_us[i..]
            .iter()
            .take_while(|&&t| t < start + window_us)
            .count();
        assert!(
            inside <= quota.limit as usize,
            "{inside} requests admitted within {quota} from {start}us"
        );
    }
}

#[tokio::test]
async fn quotas_never_admit_more_than_the_limit_in_any_rolling_window() {
    let quotas: Vec<Quota> = vec![
        "4/300ms".parse().expect("quota"),
        "10/1500ms".parse().expect("quota"),
    ];
    let sim = simulator(Scenario {
        quotas: quotas.clone(),
        retry_after: Some(Duration::from_millis(1500)),
        ..keyed()
    })
    .await;
    let http = client();
    let base = sim.base_url();
    // Bursts of concurrent GETs and POSTs every 50 ms for 2 s: far more than the quotas allow.
    let started = Instant::now();
    let mut rounds = Vec::new();
    while started.elapsed() < Duration::from_secs(2) {
        for i in 0..3u64 {
            let http = http.clone();
            let base = base.clone();
            rounds.push(tokio::spawn(async move {
                let request = if i == 0 {
                    http.post(format!("{base}/order/certificate/{i}/reissue"))
                        .json(&json!({"certificate": {"signature_hash": "sha256"}}))
                } else {
                    http.get(format!("{base}/order/certificate/{i}"))
                };
                let response = request
                    .header("X-DC-DEVKEY", KEY)
                    .send()
                    .await
                    .expect("answer");
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().expect("ASCII").to_owned());
                let answer: Value = response.json().await.expect("JSON");
                (status, retry_after, answer)
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut refused = 0;
    for round in rounds {
        let (status, retry_after, answer) = round.await.expect("task");
        if status == 429 {
            refused += 1;
            assert_eq!(retry_after.as_deref(), Some("2"), "1.5 s rounds up");
            assert_eq!(error_codes(&answer), ["request_limit_exceeded"]);
            assert_eq!(
                answer["errors"][0]["message"],
                "Service unavailable, please limit request volume"
            );
        } else {
            assert!(status == 200 || status == 201, "status {status}");
        }
    }
    let ledger = sim.ledger();
    let mut admitted: Vec<u64> = ledger
        .requests
        .iter()
        .filter(|r| r.status != 429)
        .map(|r| r.received_us)
        .collect();
    admitted.sort_unstable();
    for quota in &quotas {
        assert_no_window_overfull(&admitted, *quota);
    }
    assert_eq!(ledger.count_status(429), refused);
    assert!(refused > 50, "only {refused} refused");
    // The limiter is not merely strict: over 2 s the long quota lets 10 through, then more as
    // the first ones leave its window.
    assert!(admitted.len() >= 11, "only {} admitted", admitted.len());
    assert_eq!(ledger.requests.len(), admitted.len() + refused);
    sim.shutdown().await;
}

#[tokio::test]
async fn drop_after_commit_closes_the_connection_with_no_response() {
    let sim = simulator(Scenario {
        faults: Faults {
            drop_after_commit: 1.0,
            ..Faults::default()
        },
        ..keyed()
    })
    .await;
    let error = client()
        .post(format!("{}/order/certificate/9/reissue", sim.base_url()))
        .header("X-DC-DEVKEY", KEY)
        .json(&body(&simple_csr("g.example.com"), "g.example.com"))
        .send()
        .await
        .expect_err("no response may arrive");
    assert!(!error.is_status() && !error.is_timeout(), "{error:?}");
    let ledger = sim.ledger();
    assert_eq!(ledger.accepted_per_order(), [(9, 1)].into());
    assert_eq!(ledger.count_status(0), 1);

    // Reconciling finds it: the reissue list shows it with the CSR that was sent.
    sim.set_faults(Faults::default());
    let list = get_json(&sim, "/order/certificate/9/reissue").await;
    assert_eq!(list["certificates"].as_array().map(Vec::len), Some(1));
    sim.shutdown().await;
}

#[tokio::test]
async fn error_500_after_commit_commits_and_answers_500() {
    let sim = simulator(Scenario {
        faults: Faults {
            error_500_after_commit: 1.0,
            ..Faults::default()
        },
        ..keyed()
    })
    .await;
    let response = post(
        &sim,
        11,
        &body(&simple_csr("h.example.com"), "h.example.com"),
    )
    .await;
    assert_eq!(response.status(), 500);
    assert_eq!(sim.ledger().accepted_per_order(), [(11, 1)].into());
    sim.shutdown().await;
}

#[tokio::test]
async fn error_500_and_503_commit_nothing_and_503_says_when_to_retry() {
    let sim = simulator(Scenario {
        retry_after: Some(Duration::from_secs(3)),
        faults: Faults {
            error_500: 1.0,
            ..Faults::default()
        },
        ..keyed()
    })
    .await;
    let sent = body(&simple_csr("i.example.com"), "i.example.com");
    assert_eq!(post(&sim, 12, &sent).await.status(), 500);
    sim.set_faults(Faults {
        error_503: 1.0,
        ..Faults::default()
    });
    let response = post(&sim, 12, &sent).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "3");
    assert!(sim.ledger().accepted.is_empty());
    sim.set_faults(Faults::default());
    assert_eq!(post(&sim, 12, &sent).await.status(), 201);
    assert_eq!(sim.ledger().accepted.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn fault_odds_add_up_over_many_reissues() {
    let sim = simulator(Scenario {
        seed: 5,
        faults: Faults {
            error_500: 0.1,
            error_503: 0.1,
            error_500_after_commit: 0.1,
            ..Faults::default()
        },
        ..keyed()
    })
    .await;
    let sent = body(&simple_csr("j.example.com"), "j.example.com");
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for order_id in 0..400 {
        *statuses
            .entry(post(&sim, order_id, &sent).await.status().as_u16())
            .or_default() += 1;
    }
    let (created, failed, busy) = (statuses[&201], statuses[&500], statuses[&503]);
    assert!((240..=320).contains(&created), "{statuses:?}");
    assert!((40..=120).contains(&failed), "{statuses:?}");
    assert!((20..=60).contains(&busy), "{statuses:?}");
    // Committed: the 201s and the 500s after commit, never the 503s or 500s before it.
    let committed = sim.ledger().accepted.len();
    assert!(
        committed > created && committed < created + failed,
        "{committed} {statuses:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn get_faults_and_latency_apply_to_reads() {
    let sim = simulator(Scenario {
        faults: Faults {
            get_error_500: 1.0,
            latency: Duration::from_millis(150),
            ..Faults::default()
        },
        ..keyed()
    })
    .await;
    let started = Instant::now();
    assert_eq!(get(&sim, "/order/certificate/1").await.status(), 500);
    assert_eq!(
        get(&sim, "/order/certificate/1/reissue").await.status(),
        500
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.ledger().count_status(500), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_client_that_gives_up_during_latency_is_recorded_with_status_0_but_committed() {
    let sim = simulator(Scenario {
        faults: Faults {
            latency: Duration::from_secs(6),
            ..Faults::default()
        },
        ..keyed()
    })
    .await;
    let error = client()
        .post(format!("{}/order/certificate/13/reissue", sim.base_url()))
        .header("X-DC-DEVKEY", KEY)
        .timeout(Duration::from_millis(800))
        .json(&body(&simple_csr("k.example.com"), "k.example.com"))
        .send()
        .await
        .expect_err("times out");
    assert!(error.is_timeout());
    // Well before the 6 s delay ends, the server has noticed the closed connection.
    let deadline = Instant::now() + Duration::from_secs(3);
    while sim.ledger().requests.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ledger = sim.ledger();
    assert_eq!(ledger.accepted.len(), 1, "committed before the delay");
    assert_eq!(ledger.count_status(0), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn order_info_starts_issued_then_is_pending_until_the_delay_passes() {
    let sim = simulator(Scenario {
        issuance_delay: Duration::from_millis(1000),
        ..keyed()
    })
    .await;
    let before = get_json(&sim, "/order/certificate/10").await;
    assert_eq!(before["id"], 10);
    assert_eq!(before["status"], "issued");
    assert_eq!(before["certificate"]["common_name"], "order-10.example.com");
    assert_eq!(
        before["certificate"]["dns_names"],
        json!(["order-10.example.com", "www.order-10.example.com"])
    );
    assert_eq!(
        before["certificate"]["server_platform"],
        json!({"id": 2, "name": "apache"})
    );
    assert_eq!(before["certificate"]["signature_hash"], "sha256");
    assert_eq!(before["product"]["name_id"], "ssl_plus");
    assert_eq!(before["product"]["type"], "ssl_certificate");
    assert_eq!(before["requests"][0]["type"], "new_request");
    assert!(before["order_valid_till"].is_string());
    let nginx = get_json(&sim, "/order/certificate/14").await;
    assert_eq!(
        nginx["certificate"]["server_platform"],
        json!({"id": 45, "name": "nginx"})
    );
    assert_eq!(nginx["certificate"]["signature_hash"], "sha384");

    let csr = simple_csr("new.example.com");
    let answer: Value = post(&sim, 10, &body(&csr, "new.example.com"))
        .await
        .json()
        .await
        .expect("JSON");
    let pending = get_json(&sim, "/order/certificate/10").await;
    assert_eq!(pending["status"], "reissue_pending");
    assert_eq!(
        pending["certificate"]["common_name"],
        "order-10.example.com"
    );
    assert_eq!(pending["requests"][0]["id"], answer["requests"][0]["id"]);
    assert_eq!(pending["requests"][0]["type"], "reissue");
    assert_eq!(pending["requests"][0]["status"], "pending");
    assert_eq!(pending["requests"][1]["type"], "new_request");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let issued = get_json(&sim, "/order/certificate/10").await;
    assert_eq!(issued["status"], "issued");
    let certificate = &issued["certificate"];
    assert_eq!(certificate["common_name"], "new.example.com");
    assert_eq!(
        certificate["dns_names"],
        json!(["new.example.com", "www.new.example.com"])
    );
    assert_eq!(certificate["csr"], csr);
    assert_eq!(certificate["server_platform"]["id"], 45);
    assert_eq!(certificate["key_size"], 256);
    assert_ne!(certificate["id"], before["certificate"]["id"]);
    assert_eq!(issued["requests"][0]["status"], "approved");
    sim.shutdown().await;
}

#[tokio::test]
async fn names_come_from_the_csr_when_the_body_has_none() {
    let sim = simulator(keyed()).await;
    let key = KeyPair::generate().expect("key");
    let csr = one_line_csr(&key, &["csr.example.com", "alt.example.com"]);
    let sent = json!({"certificate": {"csr": csr, "signature_hash": "SHA512"}});
    assert_eq!(post(&sim, 15, &sent).await.status(), 201);
    let info = get_json(&sim, "/order/certificate/15").await;
    assert_eq!(info["certificate"]["common_name"], "csr.example.com");
    assert_eq!(
        info["certificate"]["dns_names"],
        json!(["csr.example.com", "alt.example.com"])
    );
    assert_eq!(info["certificate"]["signature_hash"], "sha512");
    sim.shutdown().await;
}

#[tokio::test]
async fn reissue_list_holds_each_reissue_with_the_csr_exactly_as_sent() {
    let sim = simulator(Scenario {
        issuance_delay: Duration::from_millis(1000),
        ..keyed()
    })
    .await;
    let first = simple_csr("l.example.com");
    let second = simple_csr("l.example.com");
    post(&sim, 16, &body(&first, "l.example.com")).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    post(&sim, 16, &body(&second, "l.example.com")).await;
    let list = get_json(&sim, "/order/certificate/16/reissue").await;
    let certificates = list["certificates"].as_array().expect("a list");
    assert_eq!(certificates.len(), 2);
    assert_eq!(certificates[0]["csr"], first);
    assert_eq!(certificates[1]["csr"], second);
    assert_eq!(certificates[0]["status"], "issued");
    assert_eq!(certificates[1]["status"], "pending");
    assert!(certificates[0]["date_issued"].is_string());
    assert!(certificates[1].get("date_issued").is_none());
    for entry in certificates {
        let created = entry["date_created"].as_str().expect("a date");
        assert_eq!(
            created.len(),
            "2026-11-23T10:33:26+00:00".len(),
            "{created}"
        );
        assert!(created.ends_with("+00:00"), "{created}");
        assert_eq!(entry["common_name"], "l.example.com");
        assert_eq!(entry["archived"], 0);
        assert_eq!(entry["key_size"], 256);
        for field in ["id", "thumbprint", "serial_number", "valid_till"] {
            assert!(!entry[field].is_null(), "{field}");
        }
    }
    assert!(
        get_json(&sim, "/order/certificate/17/reissue").await["certificates"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    sim.shutdown().await;
}

/// The certificates of a PEM chain, as DER.
fn chain(pem: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .map(|block| block.expect("PEM block").contents)
        .collect()
}

#[tokio::test]
async fn downloaded_leaf_certifies_the_public_key_of_the_csr() {
    let sim = simulator(keyed()).await;
    for algorithm in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ] {
        let key = KeyPair::generate_for(algorithm).expect("key");
        let csr = one_line_csr(&key, &["m.example.com"]);
        let mut sent = body(&csr, "m.example.com");
        sent["skip_approval"] = json!(true);
        let answer: Value = post(&sim, 18, &sent).await.json().await.expect("JSON");
        let certificate_id = answer["certificate_id"].as_u64().expect("id");

        let download = get(
            &sim,
            &format!("/certificate/{certificate_id}/download/format/pem_all"),
        )
        .await;
        assert_eq!(download.status(), 200);
        let pem = download.text().await.expect("PEM");
        let ders = chain(&pem);
        assert_eq!(ders.len(), 3, "leaf, intermediate, root");
        let (_, leaf) = x509_parser::parse_x509_certificate(&ders[0]).expect("leaf parses");
        assert_eq!(leaf.public_key().raw, csr_spki(&csr).as_slice());
        let cn = leaf.subject().iter_common_name().next().expect("CN");
        assert_eq!(cn.as_str().expect("UTF-8"), "m.example.com");
        let sans: Vec<String> = leaf
            .extensions()
            .iter()
            .filter_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .flat_map(|san| san.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(sans, ["m.example.com", "www.m.example.com"]);
        let (_, intermediate) = x509_parser::parse_x509_certificate(&ders[1]).expect("parses");
        let (_, root) = x509_parser::parse_x509_certificate(&ders[2]).expect("parses");
        leaf.verify_signature(Some(intermediate.public_key()))
            .expect("the intermediate signed the leaf");
        intermediate
            .verify_signature(Some(root.public_key()))
            .expect("the root signed the intermediate");
        let list = get_json(&sim, "/order/certificate/18/reissue").await;
        let entry = list["certificates"]
            .as_array()
            .and_then(|l| l.last())
            .expect("an entry");
        assert_eq!(entry["serial_number"], hex::encode_upper(leaf.raw_serial()));

        let noroot = get(
            &sim,
            &format!("/certificate/{certificate_id}/download/format/pem_noroot"),
        )
        .await;
        let noroot = chain(&noroot.text().await.expect("PEM"));
        assert_eq!(noroot, ders[..2], "the same leaf every time");
        let leaf_only = get(
            &sim,
            &format!("/certificate/{certificate_id}/download/format/pem_nointermediate"),
        )
        .await;
        assert_eq!(chain(&leaf_only.text().await.expect("PEM")), ders[..1]);
    }
    let unknown = get(&sim, "/certificate/1/download/format/pem_all").await;
    assert_eq!(unknown.status(), 404);
    let answer: Value = unknown.json().await.expect("JSON");
    assert_eq!(error_codes(&answer), ["not_found|certificate"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_certificate_cannot_be_downloaded_before_it_is_issued() {
    let sim = simulator(Scenario {
        issuance_delay: Duration::from_millis(1000),
        ..keyed()
    })
    .await;
    let mut sent = body(&simple_csr("n.example.com"), "n.example.com");
    sent["skip_approval"] = json!(true);
    let answer: Value = post(&sim, 19, &sent).await.json().await.expect("JSON");
    let path = format!(
        "/certificate/{}/download/format/pem_all",
        answer["certificate_id"]
    );
    assert_eq!(get(&sim, &path).await.status(), 404);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(&sim, &path).await.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn needs_approval_orders_stay_pending() {
    let sim = simulator(Scenario {
        needs_approval_orders: vec![20..=29],
        ..keyed()
    })
    .await;
    let mut sent = body(&simple_csr("o.example.com"), "o.example.com");
    sent["skip_approval"] = json!(true);
    let answer: Value = post(&sim, 21, &sent).await.json().await.expect("JSON");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let info = get_json(&sim, "/order/certificate/21").await;
    assert_eq!(info["status"], "needs_approval");
    assert_eq!(info["certificate"]["common_name"], "order-21.example.com");
    let list = get_json(&sim, "/order/certificate/21/reissue").await;
    assert_eq!(list["certificates"][0]["status"], "pending");
    let path = format!(
        "/certificate/{}/download/format/pem_all",
        answer["certificate_id"]
    );
    assert_eq!(get(&sim, &path).await.status(), 404);
    // An order outside the range is issued at once.
    post(&sim, 30, &sent).await;
    assert_eq!(
        get_json(&sim, "/order/certificate/30").await["status"],
        "issued"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn status_changes_list_the_orders_that_changed_in_the_period() {
    let sim = simulator(Scenario {
        needs_approval_orders: vec![33..=33],
        ..keyed()
    })
    .await;
    let sent = body(&simple_csr("p.example.com"), "p.example.com");
    for order_id in [31, 32, 33] {
        assert_eq!(post(&sim, order_id, &sent).await.status(), 201);
    }
    get_json(&sim, "/order/certificate/34").await; // looked at, never changed
    let changes = get_json(&sim, "/order/certificate/status-changes?minutes=5").await;
    let orders = changes["orders"].as_array().expect("orders");
    let summary: Vec<(u64, &str)> = orders
        .iter()
        .map(|o| {
            (
                o["order_id"].as_u64().expect("id"),
                o["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(31, "issued"), (32, "issued"), (33, "needs_approval")]
    );
    assert!(orders.iter().all(|o| o["certificate_id"].is_u64()));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = get_json(&sim, "/order/certificate/status-changes?seconds=1").await;
    assert_eq!(later["orders"], json!([]));
    let bad = get(&sim, "/order/certificate/status-changes").await;
    assert_eq!(bad.status(), 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_ledger_endpoint_needs_no_key_and_is_not_itself_recorded() {
    let sim = simulator(Scenario {
        quotas: vec!["1/1m".parse().expect("quota")],
        ..keyed()
    })
    .await;
    post(
        &sim,
        40,
        &body(&simple_csr("q.example.com"), "q.example.com"),
    )
    .await;
    for _ in 0..3 {
        let response = client()
            .get(
                sim.base_url()
                    .replace("/services/v2", "/__simulator/ledger"),
            )
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 200, "no key, no quota");
        let ledger: Ledger = response.json().await.expect("a Ledger");
        assert_eq!(ledger.accepted_per_order(), [(40, 1)].into());
        assert_eq!(ledger.requests.len(), 1);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn h2c_clients_are_served_too() {
    let sim = simulator(keyed()).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2
        .get(format!("{}/order/certificate/1", sim.base_url()))
        .header("X-DC-DEVKEY", KEY)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let sim = simulator(keyed()).await;
    let base = sim.base_url();
    assert_eq!(get(&sim, "/order/certificate/1").await.status(), 200);
    sim.shutdown().await;
    let after = client()
        .get(format!("{base}/order/certificate/1"))
        .header("X-DC-DEVKEY", KEY)
        .send()
        .await;
    assert!(after.is_err(), "still answering after shutdown");
}

#[tokio::test]
async fn base_url_points_at_the_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let sim = start(listener, Scenario::default()).await.expect("starts");
    assert_eq!(
        sim.base_url(),
        format!("http://127.0.0.1:{port}/services/v2")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_reserved_port_refuses_connections_until_the_simulator_serves_on_it() {
    let reserved = ReservedPort::loopback().expect("binds");
    let base = reserved.base_url();
    assert_eq!(
        base,
        format!("http://127.0.0.1:{}/services/v2", reserved.port())
    );
    let refused = client()
        .get(format!("{base}/order/certificate/1"))
        .header("X-DC-DEVKEY", KEY)
        .send()
        .await
        .expect_err("nothing listens yet");
    assert!(refused.is_connect(), "{refused:?}");
    let sim = reserved.serve(keyed()).await.expect("serves");
    assert_eq!(sim.base_url(), base);
    assert_eq!(get(&sim, "/order/certificate/1").await.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn during_an_all_500_outage_everything_is_answered_500_and_nothing_is_committed() {
    let sim = simulator(Scenario {
        all_500_for: Duration::from_millis(400),
        ..keyed()
    })
    .await;
    let csr = simple_csr("down.example.com");
    let during = post(&sim, 1, &body(&csr, "down.example.com")).await;
    assert_eq!(during.status(), 500);
    // Not even the key is looked at.
    let unkeyed = client()
        .get(format!("{}/order/certificate/1", sim.base_url()))
        .send()
        .await
        .expect("answers");
    assert_eq!(unkeyed.status(), 500);
    assert!(sim.ledger().accepted.is_empty());
    assert_eq!(sim.ledger().count_status(500), 2);

    tokio::time::sleep(Duration::from_millis(450)).await;
    let after = post(&sim, 1, &body(&csr, "down.example.com")).await;
    assert_eq!(after.status(), 201);
    assert_eq!(sim.ledger().accepted_per_order().get(&1), Some(&1));
    sim.shutdown().await;
}

/// Throughput with no faults, as the benchmark drives it. Prints; asserts only correctness.
/// `cargo test --release --lib simulator::tests::throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand in release mode"]
async fn throughput_of_20000_reissues() {
    let sim = simulator(keyed()).await;
    let csrs: std::sync::Arc<Vec<String>> = std::sync::Arc::new(
        (0..20_000)
            .map(|i| simple_csr(&format!("t{i}.example.com")))
            .collect(),
    );
    let http = client();
    let base = sim.base_url();
    let started = Instant::now();
    let workers: Vec<_> = (0..32u64)
        .map(|worker| {
            let (http, base, csrs) = (http.clone(), base.clone(), csrs.clone());
            tokio::spawn(async move {
                for order_id in (worker..20_000).step_by(32) {
                    let csr = &csrs[usize::try_from(order_id % 20_000).expect("small")];
                    let response = http
                        .post(format!("{base}/order/certificate/{order_id}/reissue"))
                        .header("X-DC-DEVKEY", KEY)
                        .json(&body(csr, "t.example.com"))
                        .send()
                        .await
                        .expect("answer");
                    assert_eq!(response.status(), 201);
                    response.bytes().await.expect("body");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    let elapsed = started.elapsed();
    let ledger = sim.ledger();
    assert_eq!(ledger.accepted.len(), 20_000);
    assert!(ledger.accepted_per_order().values().all(|&n| n == 1));
    println!(
        "20000 reissues in {elapsed:?}: {:.0}/s",
        20_000.0 / elapsed.as_secs_f64()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn over_tls_a_client_trusting_the_ca_is_served_and_others_are_refused() {
    let sim = simulator(Scenario {
        tls: Some(ServerTls::default()),
        ..keyed()
    })
    .await;
    assert!(sim.base_url().starts_with("https://127.0.0.1:"));
    let ca = reqwest::Certificate::from_pem(sim.tls_ca_pem().expect("TLS").as_bytes())
        .expect("CA parses");
    // ALPN offers h2 first; an HTTP/1.1-only client is served too.
    for (http1_only, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let mut trusting = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone());
        if http1_only {
            trusting = trusting.http1_only();
        }
        let response = trusting
            .build()
            .expect("client")
            .get(format!("{}/order/certificate/1", sim.base_url()))
            .header("X-DC-DEVKEY", KEY)
            .send()
            .await
            .expect("served over TLS");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), version);
    }
    let refused = client()
        .get(format!("{}/order/certificate/1", sim.base_url()))
        .header("X-DC-DEVKEY", KEY)
        .send()
        .await
        .expect_err("the CA is not trusted");
    assert!(refused.is_connect(), "{refused:?}");
    assert_eq!(
        sim.ledger().requests.len(),
        2,
        "the refused request arrived"
    );
    sim.shutdown().await;
}
