//! The account side of the simulator over real HTTP: who a key is, and the order list with its
//! filters and pages.

use serde_json::{Value, json};

use super::*;

const KEY: &str = "list-test-key-0b7e";
const OTHER_KEY: &str = "list-test-other-key-5c1d";

async fn simulator(orders: u64) -> SimulatorHandle {
    start_on_loopback(Scenario {
        api_key: Some(KEY.to_owned()),
        account_id: Some(4_242),
        other_keys: vec![KeyAccount {
            key: OTHER_KEY.to_owned(),
            account_id: 7_777,
            role: Role::StandardUser,
        }],
        orders,
        seed: 5,
        ..Scenario::default()
    })
    .await
    .expect("simulator starts")
}

async fn get(sim: &SimulatorHandle, key: &str, path: &str) -> (u16, Value) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("{}{path}", sim.base_url()))
        .header("X-DC-DEVKEY", key)
        .send()
        .await
        .expect("simulator answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

fn ids(page: &Value) -> Vec<u64> {
    page["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| o["id"].as_u64().expect("id"))
        .collect()
}

#[tokio::test]
async fn user_me_and_account_name_the_account_and_roles_of_each_key() {
    let sim = simulator(0).await;
    let (status, me) = get(&sim, KEY, "/user/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["account_id"], 4_242);
    assert_eq!(
        me["access_roles"],
        json!([{"id": 1, "name": "Administrator"}])
    );
    assert!(me["username"].is_string() && me["id"].is_u64());
    let (_, other) = get(&sim, OTHER_KEY, "/user/me").await;
    assert_eq!(other["account_id"], 7_777);
    assert_eq!(other["access_roles"][0]["name"], "Standard User");
    let (_, account) = get(&sim, OTHER_KEY, "/account").await;
    assert_eq!(account["id"], 7_777);
    assert_eq!(account["cert_central_type"], "enterprise");
    let (status, refused) = get(&sim, "not-a-key", "/user/me").await;
    assert_eq!(status, 403);
    assert_eq!(
        refused["errors"][0]["code"],
        "access_denied|access_denied_invalid_key"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn pages_hold_every_order_once_and_say_the_total() {
    let sim = simulator(2_500).await;
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let (status, page) = get(
            &sim,
            KEY,
            &format!("/order/certificate?sort=id&limit=1000&offset={offset}"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(page["page"]["total"], 2_500);
        assert_eq!(page["page"]["limit"], 1_000);
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 1_000);
        if page_ids.is_empty() {
            break;
        }
        offset += page_ids.len();
        seen.extend(page_ids);
    }
    let expected: Vec<u64> = (FIRST_LISTED_ORDER..FIRST_LISTED_ORDER + 2_500).collect();
    assert_eq!(seen, expected);
    let (status, too_big) = get(&sim, KEY, "/order/certificate?limit=1001").await;
    assert_eq!(status, 400, "{too_big}");
    let (_, newest_first) = get(&sim, KEY, "/order/certificate?limit=2").await;
    assert_eq!(
        ids(&newest_first),
        [FIRST_LISTED_ORDER + 2_499, FIRST_LISTED_ORDER + 2_498]
    );
    assert_eq!(sim.listed_orders().len(), 2_500);
    sim.shutdown().await;
}

#[tokio::test]
async fn documented_filters_narrow_the_list_and_unknown_ones_are_refused() {
    let sim = simulator(600).await;
    let all = sim.listed_orders();
    let (status, refused) = get(
        &sim,
        KEY,
        "/order/certificate?filters%5Bsignature_hash%5D=sha1",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(refused["errors"][0]["code"], "invalid_filter");

    let (_, issued) = get(
        &sim,
        KEY,
        "/order/certificate?filters%5Bstatus%5D=issued&limit=1000",
    )
    .await;
    let expected: Vec<u64> = all
        .iter()
        .filter(|o| o["status"] == "issued" || o["status"] == "expired")
        .map(|o| o["id"].as_u64().expect("id"))
        .rev()
        .collect();
    assert!(
        all.iter().any(|o| o["status"] == "expired"),
        "some orders have expired"
    );
    assert_eq!(ids(&issued), expected, "issued also lists expired orders");

    let some = &all[17];
    let domain = some["certificate"]["dns_names"]
        .as_array()
        .and_then(|names| names.last())
        .and_then(Value::as_str)
        .expect("a DNS name");
    let (_, by_domain) = get(
        &sim,
        KEY,
        &format!("/order/certificate?filters%5Bdomain_name%5D={domain}"),
    )
    .await;
    assert!(ids(&by_domain).contains(&some["id"].as_u64().expect("id")));
    for order in by_domain["orders"].as_array().expect("orders") {
        let names: Vec<&str> = std::iter::once(&order["certificate"]["common_name"])
            .chain(order["certificate"]["dns_names"].as_array().expect("names"))
            .filter_map(Value::as_str)
            .collect();
        assert!(names.contains(&domain), "{order}");
    }

    let till = some["certificate"]["valid_till"].as_str().expect("date");
    let (_, before) = get(
        &sim,
        KEY,
        &format!("/order/certificate?filters%5Bvalid_till%5D=%3C{till}&limit=1000"),
    )
    .await;
    let expected = all
        .iter()
        .filter(|o| o["certificate"]["valid_till"].as_str().expect("date") < till)
        .count();
    assert_eq!(before["page"]["total"], expected);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_refused_filter_is_a_400_and_an_ignored_one_widens_the_list() {
    let sim = start_on_loopback(Scenario {
        orders: 300,
        refused_list_filters: vec!["domain_name".into()],
        ignored_list_filters: vec!["product_name_id".into()],
        ..Scenario::default()
    })
    .await
    .expect("simulator starts");
    let (status, _) = get(
        &sim,
        KEY,
        "/order/certificate?filters%5Bdomain_name%5D=www1.example.com",
    )
    .await;
    assert_eq!(status, 400);
    let (status, page) = get(
        &sim,
        KEY,
        "/order/certificate?filters%5Bproduct_name_id%5D=ssl_basic&limit=1000",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["page"]["total"], 300, "the filter was not applied");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_listed_order_answers_order_info_with_its_own_names_and_after_a_reissue_lists_the_new_ones()
 {
    let sim = simulator(50).await;
    let listed = sim.listed_orders();
    let first = &listed[3];
    let id = first["id"].as_u64().expect("id");
    let (_, info) = get(&sim, KEY, &format!("/order/certificate/{id}")).await;
    assert_eq!(
        info["certificate"]["common_name"],
        first["certificate"]["common_name"]
    );
    assert_eq!(
        info["certificate"]["dns_names"],
        first["certificate"]["dns_names"]
    );
    assert_eq!(
        info["certificate"]["signature_hash"].as_str(),
        first["certificate"]["signature_hash"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref()
    );
    assert_eq!(info["product"]["name_id"], first["product"]["name_id"]);

    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("{}/order/certificate/{id}/reissue", sim.base_url()))
        .header("X-DC-DEVKEY", KEY)
        .json(&json!({"certificate": {
            "common_name": "renamed.example.com",
            "dns_names": ["renamed.example.com"],
            "signature_hash": "sha384",
        }}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 201);
    let now = sim
        .listed_orders()
        .into_iter()
        .find(|o| o["id"] == id)
        .expect("still listed");
    assert_eq!(now["certificate"]["common_name"], "renamed.example.com");
    assert_eq!(now["certificate"]["signature_hash"], "sha384");
    assert_eq!(now["status"], "issued");
    sim.shutdown().await;
}
