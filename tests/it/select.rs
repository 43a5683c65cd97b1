//! From the account to a manifest: `select` against a simulated account of 2,500 orders, the
//! selection through `keygen --fill-from-order`, `run` and `collect`, and runs scoped by the
//! account the key belongs to.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use reissuer::config::Quota;
use reissuer::simulator::{KeyAccount, Role, Scenario, SimulatorHandle};
use serde_json::Value;

use crate::support::{self, output, reissuer, text};

/// A key of another account on the same server.
const OTHER_KEY: &str = "other-account-key-93e1c7";
const ACCOUNT: u64 = 5_550_001;
const OTHER_ACCOUNT: u64 = 6_660_002;

fn account(orders: u64) -> Scenario {
    Scenario {
        orders,
        seed: 11,
        account_id: Some(ACCOUNT),
        other_keys: vec![KeyAccount {
            key: OTHER_KEY.to_owned(),
            account_id: OTHER_ACCOUNT,
            role: Role::Manager,
        }],
        ..Scenario::default()
    }
}

fn select(dir: &Path, sim: &SimulatorHandle, args: &[&str]) -> std::process::Command {
    let mut cmd = reissuer(dir);
    cmd.arg("select")
        .args(["--base-url", &sim.base_url()])
        .args(args);
    cmd
}

/// `*` matches any run of characters; written here apart from the program's own matcher.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.eq_ignore_ascii_case(name),
        Some((head, tail)) => {
            let name = name.to_ascii_lowercase();
            let Some(rest) = name.strip_prefix(&head.to_ascii_lowercase()) else {
                return false;
            };
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob(tail, &rest[i..]))
        }
    }
}

fn names(order: &Value) -> Vec<String> {
    let certificate = &order["certificate"];
    std::iter::once(&certificate["common_name"])
        .chain(certificate["dns_names"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The manifest rows `select` should write for `orders`, in order: `id,cn,dns;dns`.
fn rows<'a>(orders: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    orders
        .into_iter()
        .map(|order| {
            let dns: Vec<&str> = order["certificate"]["dns_names"]
                .as_array()
                .expect("dns_names")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "{},{},{}",
                order["id"],
                order["certificate"]["common_name"]
                    .as_str()
                    .expect("common_name"),
                dns.join(";")
            )
        })
        .collect()
}

fn written_rows(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("selection written");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("order_id,common_name,dns_names"));
    lines.map(str::to_owned).collect()
}

fn days_from_now(days: i64) -> String {
    let day = time::OffsetDateTime::now_utc().date() + time::Duration::days(days);
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// The list requests the server saw, with their `limit`.
fn list_limits(sim: &SimulatorHandle) -> Vec<u64> {
    sim.ledger()
        .requests
        .iter()
        .filter(|r| r.path == "/services/v2/order/certificate")
        .map(|r| {
            url::form_urlencoded::parse(r.query.as_bytes())
                .find(|(k, _)| k == "limit")
                .and_then(|(_, v)| v.parse().ok())
                .expect("every list request names its limit")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_filters_over_2500_orders_write_exactly_the_matching_ones_in_pages_of_1000_without_a_429()
 {
    let quota = Quota {
        limit: 2,
        window: Duration::from_secs(1),
    };
    let sim = support::simulator(Scenario {
        quotas: vec![quota],
        ..account(2_500)
    })
    .await;
    let listed = sim.listed_orders();
    assert_eq!(listed.len(), 2_500);
    let dir = tempfile::tempdir().expect("tempdir");
    let before = days_from_now(365);

    // SHA-1 or SHA-512 certificates, issued or expired, with a name under example.net or
    // shop.example, expiring within the year: no server filter can say all of that.
    let started = Instant::now();
    let out = output(select(
        dir.path(),
        &sim,
        &[
            "--status",
            "issued",
            "--status",
            "expired",
            "--signature-hash",
            "SHA1",
            "--signature-hash",
            "sha512",
            "--domain",
            "*.example.net",
            "--domain",
            "*.shop.example",
            "--expires-before",
            &before,
            "--rate",
            "2/1s",
            "--out",
            "hashes.csv",
        ],
    ))
    .await;
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let expected: Vec<&Value> = listed
        .iter()
        .filter(|o| ["issued", "expired"].contains(&o["status"].as_str().expect("status")))
        .filter(|o| {
            let hash = o["certificate"]["signature_hash"]
                .as_str()
                .expect("hash")
                .to_ascii_lowercase();
            hash == "sha1" || hash == "sha512"
        })
        .filter(|o| {
            names(o)
                .iter()
                .any(|n| glob("*.example.net", n) || glob("*.shop.example", n))
        })
        .filter(|o| o["certificate"]["valid_till"].as_str().expect("date") < before.as_str())
        .collect();
    assert!(
        expected.len() > 20,
        "a selection worth the name: {}",
        expected.len()
    );
    assert_eq!(
        written_rows(&dir.path().join("hashes.csv")),
        rows(expected.clone())
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "account {ACCOUNT}: listed 2500 order(s) in 3 page(s), 3 request(s); {} matched",
            expected.len()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("hashes.csv"), "{stdout}");

    // Pages of at most 1,000, every request inside the quota, none refused.
    assert_eq!(list_limits(&sim), [1_000, 1_000, 1_000]);
    let ledger = sim.ledger();
    assert_eq!(ledger.count_status(429), 0, "the account was throttled");
    assert_eq!(
        ledger.count_status(400),
        0,
        "an undocumented filter was sent"
    );
    assert!(support::most_in_any_window(&ledger, quota.window) <= 2);
    assert!(
        elapsed >= Duration::from_secs(1),
        "4 requests at 2/1s took {elapsed:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_the_server_applies_list_less_and_select_the_same_orders() {
    let sim = support::simulator(account(2_500)).await;
    let listed = sim.listed_orders();
    let dir = tempfile::tempdir().expect("tempdir");
    // Filters the server can apply, with one it cannot: a product in one container, expiring
    // after a date. The server lists less; the file is the same as filtering everything here.
    let after = days_from_now(30);
    let out = output(select(
        dir.path(),
        &sim,
        &[
            "--product",
            "ssl_multi_domain",
            "--container",
            "202",
            "--organization",
            "301002",
            "--expires-after",
            &after,
            "--out",
            "multi.csv",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let expected: Vec<&Value> = listed
        .iter()
        .filter(|o| o["status"] == "issued")
        .filter(|o| o["product"]["name_id"] == "ssl_multi_domain")
        .filter(|o| o["container"]["id"] == 202 && o["organization"]["id"] == 301_002)
        .filter(|o| o["certificate"]["valid_till"].as_str().expect("date") > after.as_str())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        written_rows(&dir.path().join("multi.csv")),
        rows(expected.clone())
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("listed 2500"),
        "the server filters were not used: {stdout}"
    );
    let limits = list_limits(&sim);
    assert_eq!(limits.len(), 1, "one page of at most 1,000: {limits:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_match_writes_the_header_only_and_a_wrong_key_writes_nothing() {
    let sim = support::simulator(account(300)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = output(select(
        dir.path(),
        &sim,
        &["--domain", "nowhere.invalid", "--out", "none.csv"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("none.csv")).expect("written"),
        "order_id,common_name,dns_names\n"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no order matched"),
        "{}",
        text(&out)
    );

    let wrong = "wrong-key-0c4f-must-not-leak";
    let empty = tempfile::tempdir().expect("tempdir");
    let mut cmd = select(empty.path(), &sim, &["--out", "sel.csv"]);
    cmd.env("DIGICERT_API_KEY", wrong);
    let requests_before = sim.ledger().requests.len();
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(!text(&out).contains(wrong));
    let leftovers: Vec<_> = std::fs::read_dir(empty.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|name| !name.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    let ledger = sim.ledger();
    assert_eq!(ledger.requests.len(), requests_before + 1, "only /user/me");
    assert_eq!(
        ledger.requests.last().map(|r| r.path.as_str()),
        Some("/services/v2/user/me")
    );

    // A bad date or an empty range is refused before anything is asked.
    for flags in [
        &["--expires-before", "2027-02-30"][..],
        &[
            "--expires-after",
            "2027-05-01",
            "--expires-before",
            "2027-05-02",
        ],
        &["--domain", "exa mple.com"],
    ] {
        let mut args = flags.to_vec();
        args.extend(["--out", "x.csv"]);
        let out = output(select(dir.path(), &sim, &args)).await;
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", text(&out));
    }
    assert!(!dir.path().join("x.csv").exists());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_or_refuses_a_filter_neither_widens_nor_narrows_the_selection() {
    // A name of an issued order in container 201, and every such order that carries it.
    let listed = support::simulator(account(2_500)).await.listed_orders();
    let in_scope = |o: &&Value| o["status"] == "issued" && o["container"]["id"] == 201;
    let domain = listed
        .iter()
        .filter(in_scope)
        .find_map(|o| names(o).into_iter().find(|n| !n.contains('*')))
        .expect("a name");
    let expected = rows(
        listed
            .iter()
            .filter(in_scope)
            .filter(|o| names(o).iter().any(|n| n.eq_ignore_ascii_case(&domain))),
    );
    let args = [
        "--status",
        "issued",
        "--domain",
        &domain,
        "--container",
        "201",
        "--out",
        "sel.csv",
    ];
    let mut files = Vec::new();
    for (ignored, refused) in [
        (vec![], vec![]),
        (vec!["status".to_owned(), "domain_name".to_owned()], vec![]),
        (vec![], vec!["container_id".to_owned()]),
    ] {
        let sim = support::simulator(Scenario {
            ignored_list_filters: ignored.clone(),
            refused_list_filters: refused.clone(),
            ..account(2_500)
        })
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let out = output(select(dir.path(), &sim, &args)).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let rows = written_rows(&dir.path().join("sel.csv"));
        if !refused.is_empty() {
            assert_eq!(
                sim.ledger().count_status(400),
                1,
                "refused once, then asked plainly"
            );
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("refused the list's filters"),
                "{}",
                text(&out)
            );
        }
        files.push(rows);
        sim.shutdown().await;
    }
    assert_eq!(files[0], expected);
    assert_eq!(
        files[1], files[0],
        "an ignored filter widened the selection"
    );
    assert_eq!(files[2], files[0], "a refused filter changed the selection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_goes_through_keygen_run_and_collect_and_each_order_is_reissued_once() {
    let sim = support::simulator(account(1_200)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base_url = sim.base_url();

    // The SHA-1 orders of one container: they move to SHA-256 with new keys.
    let out = output(select(
        dir.path(),
        &sim,
        &[
            "--signature-hash",
            "sha1",
            "--container",
            "203",
            "--out",
            "sha1.csv",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let selected: BTreeSet<u64> = written_rows(&dir.path().join("sha1.csv"))
        .iter()
        .map(|row| {
            row.split(',')
                .next()
                .expect("id")
                .parse()
                .expect("order id")
        })
        .collect();
    assert!(selected.len() >= 5, "{selected:?}");

    let mut keygen = reissuer(dir.path());
    keygen.args([
        "keygen",
        "sha1.csv",
        "--out",
        "keys",
        "--fill-from-order",
        "--set",
        "signature_hash=sha256",
        "--base-url",
        &base_url,
    ]);
    let out = output(keygen).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut run = reissuer(dir.path());
    run.args(["run", "keys/manifest.csv", "--base-url", &base_url]);
    let out = output(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ledger = sim.ledger();
    support::assert_exactly_once(&ledger, selected.iter().copied());
    let listed = sim.listed_orders();
    for accepted in &ledger.accepted {
        let order = listed
            .iter()
            .find(|o| o["id"] == accepted.order_id)
            .expect("a listed order");
        let certificate = &accepted.body["certificate"];
        assert_eq!(certificate["signature_hash"], "sha256");
        // The names are the order's own, as listed before the reissue.
        assert_eq!(
            certificate["common_name"], order["certificate"]["common_name"],
            "order {}",
            accepted.order_id
        );
        assert_eq!(certificate["dns_names"], order["certificate"]["dns_names"]);
    }

    let mut collect = reissuer(dir.path());
    collect.args([
        "collect",
        "--out",
        "certs",
        "--wait",
        "30s",
        "--base-url",
        &base_url,
    ]);
    let out = output(collect).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for id in &selected {
        assert!(
            dir.path().join(format!("certs/{id}.pem")).exists(),
            "order {id}"
        );
    }

    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let out = output(status).await;
    let runs: Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(runs[0]["account_id"], ACCOUNT);
    let mut status = reissuer(dir.path());
    status.arg("status");
    let out = output(status).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("account {ACCOUNT} at {base_url}")),
        "{}",
        text(&out)
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_account_through_a_second_url_sends_nothing_again_and_another_account_sends_all() {
    let sim = support::simulator(account(0)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=12);
    let numeric = sim.base_url();
    let named = numeric.replace("127.0.0.1", "localhost");

    let out = output(support::run_against(dir.path(), &manifest, &numeric)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=12);

    // The same key through the other spelling of the host: the same account, nothing sent.
    let out = output(support::run_against(dir.path(), &manifest, &named)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=12);

    // A key of another account: every order is that account's to send.
    let mut other = support::run_against(dir.path(), &manifest, &numeric);
    other.env("DIGICERT_API_KEY", OTHER_KEY);
    let out = output(other).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let per_order = sim.ledger().accepted_per_order();
    assert_eq!(per_order.len(), 12);
    assert!(per_order.values().all(|n| *n == 2), "{per_order:?}");

    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let out = output(status).await;
    let runs: Value = serde_json::from_slice(&out.stdout).expect("status --json");
    let summary: Vec<(Value, Value, Value)> = runs
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                r["account_id"].clone(),
                r["counts"]["succeeded"].clone(),
                r["counts"]["skipped"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (ACCOUNT.into(), 12.into(), 0.into()),
            (ACCOUNT.into(), 0.into(), 12.into()),
            (OTHER_ACCOUNT.into(), 12.into(), 0.into()),
        ]
    );

    // A run is continued only with its own account's key.
    let mut retry = reissuer(dir.path());
    retry
        .args(["retry", "--run", "1", "--base-url", &numeric])
        .env("DIGICERT_API_KEY", OTHER_KEY);
    let out = output(retry).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "run 1 was started against account {ACCOUNT}, but this API key belongs to account {OTHER_ACCOUNT}"
        )),
        "{}",
        text(&out)
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_recorded_before_accounts_are_claimed_through_their_url_and_keep_their_successes() {
    let sim = support::simulator(account(0)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = support::tls_manifest(dir.path(), 1..=6);
    let out = output(support::run_against(dir.path(), &manifest, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Make run 1 look like a run of the previous release: no account recorded.
    let journal = dir.path().join("journal.db");
    {
        use sqlx::Connection as _;
        let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", journal.display()))
            .await
            .expect("open the journal");
        sqlx::query("UPDATE runs SET account_id = NULL")
            .execute(&mut db)
            .await
            .expect("forget the account");
        db.close().await.expect("close");
    }
    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let runs: Value = serde_json::from_slice(&output(status).await.stdout).expect("status --json");
    assert_eq!(runs[0]["account_id"], Value::Null);

    // The rerun through the same URL claims it: nothing is sent again.
    let out = output(support::run_against(dir.path(), &manifest, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    support::assert_exactly_once(&sim.ledger(), 1..=6);
    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let runs: Value = serde_json::from_slice(&output(status).await.stdout).expect("status --json");
    assert_eq!(runs[0]["account_id"], ACCOUNT, "the old run was claimed");
    assert_eq!(runs[1]["counts"]["skipped"], 6);
    sim.shutdown().await;
}

/// `select`, then `keygen --fill-from-order`, then `run`, each process right after the last,
/// under a quota the three together overrun: each counts the requests the one before it made
/// (recorded in the journal), so the server sees no window overfull and answers no 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_keygen_and_run_one_after_another_count_each_others_requests() {
    let _cores = support::cores_to_myself().await;
    let quota = Quota {
        limit: 6,
        window: Duration::from_secs(3),
    };
    let sim = support::simulator(Scenario {
        quotas: vec![quota],
        ..account(2_500)
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base_url = sim.base_url();
    let rate = ["--rate", "6/3s"];

    // Who the key is, then three pages of up to 1,000.
    let mut first = select(dir.path(), &sim, &["--status", "any", "--out", "all.csv"]);
    first.args(rate);
    let out = output(first).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let three: Vec<String> = written_rows(&dir.path().join("all.csv"))
        .into_iter()
        .take(3)
        .collect();
    std::fs::write(
        dir.path().join("three.csv"),
        format!("order_id,common_name,dns_names\n{}\n", three.join("\n")),
    )
    .expect("write three");

    // Who the key is, then each order's facts: in the same windows as select's.
    let mut keygen = reissuer(dir.path());
    keygen
        .args(["keygen", "three.csv", "--out", "keys", "--fill-from-order"])
        .args(["--set", "signature_hash=sha256", "--base-url", &base_url])
        .args(rate);
    let out = output(keygen).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut run = reissuer(dir.path());
    run.args(["run", "keys/manifest.csv", "--base-url", &base_url, "--yes"])
        .args(rate);
    let out = output(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let ledger = sim.ledger();
    assert!(ledger.requests.len() >= 12, "{}", ledger.requests.len());
    assert_eq!(ledger.count_status(429), 0, "the account was throttled");
    assert!(support::most_in_any_window(&ledger, quota.window) <= 6);
    assert_eq!(ledger.accepted_per_order().len(), 3);
    sim.shutdown().await;
}
