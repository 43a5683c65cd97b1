//! Closing the rotation loop against the simulator: `dcv check`, `approve`, and `collect
//! --deploy-hook`.

use std::path::Path;
use std::time::Duration;

use reissuer::simulator::{Faults, KeyAccount, Role, Scenario, SimulatorHandle};

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

/// A keygen campaign for `ids` (keys and CSRs in `campaign/`, names from the live orders), sent;
/// the simulator issues at once.
async fn keygen_campaign(dir: &Path, sim: &SimulatorHandle, ids: &[u64]) {
    let list: String = std::iter::once("order_id".to_owned())
        .chain(ids.iter().map(u64::to_string))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("ids.csv"), list + "\n").expect("write");
    let mut keygen = reissuer(dir);
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
    let mut run = support::run_against(dir, Path::new("campaign/manifest.csv"), &sim.base_url());
    run.args(["--rate", "unlimited"]);
    let out = output(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A hook that logs each run and its environment under `hooks/`, fails for orders with a
/// `hooks/fail-<id>` file and hangs for those with `hooks/hang-<id>`.
const HOOK: &str = r#"
log="hooks/$REISSUER_ORDER_ID"
echo start >> "$log.runs"
env > "$log.env"
if [ -e "hooks/fail-$REISSUER_ORDER_ID" ]; then
    echo "nginx: [emerg] cannot load certificate for $REISSUER_COMMON_NAME" >&2
    exit 3
fi
if [ -e "hooks/hang-$REISSUER_ORDER_ID" ]; then sleep 30; fi
if [ -n "$HOOK_PAUSE" ]; then sleep "$HOOK_PAUSE"; fi
echo "would install $REISSUER_CERT_FILE for $REISSUER_DNS_NAMES"
echo done >> "$log.runs"
"#;

fn collect_with_hook(dir: &Path, sim: &SimulatorHandle, extra: &[&str]) -> std::process::Command {
    std::fs::create_dir_all(dir.join("hooks")).expect("hooks dir");
    std::fs::write(dir.join("hook.sh"), HOOK).expect("write hook");
    let mut cmd = reissuer(dir);
    cmd.args(["collect", "--out", "certs", "--deploy-hook", "sh hook.sh"])
        .args(["--base-url", &sim.base_url(), "--rate", "unlimited"])
        .args(extra);
    cmd
}

/// How many times the hook started for the order.
fn hook_runs(dir: &Path, order_id: u64) -> usize {
    std::fs::read_to_string(dir.join(format!("hooks/{order_id}.runs")))
        .map(|log| log.lines().filter(|l| *l == "start").count())
        .unwrap_or(0)
}

fn leaf_key(pem: &str) -> Vec<u8> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
    let certificate = block.parse_x509().expect("x509");
    certificate.tbs_certificate.subject_pki.raw.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_runs_the_hook_once_per_certificate_with_its_files_and_never_the_key() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ids: Vec<u64> = (201..=206).collect();
    keygen_campaign(dir.path(), &sim, &ids).await;
    std::fs::create_dir_all(dir.path().join("hooks")).expect("hooks dir");
    std::fs::write(dir.path().join("hooks/fail-203"), "").expect("marker");
    std::fs::write(dir.path().join("hooks/hang-204"), "").expect("marker");

    let mut first = collect_with_hook(dir.path(), &sim, &["--hook-timeout", "1s"]);
    first.env("SOME_COPY_OF_THE_KEY", support::KEY);
    let out = output(first).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("order 203: deploy hook failed (exit 3)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("nginx: [emerg] cannot load certificate for order-203.example.com"),
        "{stderr}"
    );
    assert!(
        stderr.contains("order 204: deploy hook failed (timed out after 1s)"),
        "{stderr}"
    );
    assert!(!stderr.contains(support::KEY));
    // What to type once the cause is fixed: the same hook, or no hook runs at all.
    assert!(
        stderr.contains(
            "run the failed hooks again: reissuer collect --run 1 --out certs --deploy-hook 'sh hook.sh'"
        ),
        "{stderr}"
    );

    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    for id in &ids {
        assert_eq!(hook_runs(dir.path(), *id), 1, "order {id}");
        let env = std::fs::read_to_string(dir.path().join(format!("hooks/{id}.env"))).expect("env");
        assert!(
            !env.contains(support::KEY),
            "order {id}: the key reached the hook"
        );
        assert!(!env.contains("DIGICERT_API_KEY"), "order {id}");
        let var = |name: &str| {
            env.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("order {id}: no {name} in\n{env}"))
                .to_owned()
        };
        let cert_file = var("REISSUER_CERT_FILE");
        let key_file = var("REISSUER_KEY_FILE");
        assert_eq!(
            std::fs::canonicalize(&cert_file).expect("cert"),
            root.join(format!("certs/{id}.pem"))
        );
        assert_eq!(
            std::fs::canonicalize(&key_file).expect("key"),
            root.join(format!("campaign/{id}.key"))
        );
        let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key_file).expect("key"))
            .expect("key parses");
        let cert = std::fs::read_to_string(&cert_file).expect("cert");
        assert_eq!(
            leaf_key(&cert),
            rcgen::PublicKeyData::subject_public_key_info(&key),
            "order {id}: the key file does not hold the certificate's key"
        );
        let name = format!("order-{id}.example.com");
        assert_eq!(var("REISSUER_ORDER_ID"), id.to_string());
        assert_eq!(var("REISSUER_COMMON_NAME"), name);
        assert_eq!(var("REISSUER_DNS_NAMES"), format!("{name} www.{name}"));
    }
    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let runs: serde_json::Value =
        serde_json::from_slice(&output(status).await.stdout).expect("json");
    assert_eq!(runs[0]["rotation"]["downloaded"], 6, "{runs}");
    assert_eq!(runs[0]["rotation"]["deployed"], 4, "{runs}");

    // Fixed: the next collect runs only the two that failed.
    std::fs::remove_file(dir.path().join("hooks/fail-203")).expect("fixed");
    std::fs::remove_file(dir.path().join("hooks/hang-204")).expect("fixed");
    let out = output(collect_with_hook(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for id in &ids {
        let expected = if [203, 204].contains(id) { 2 } else { 1 };
        assert_eq!(hook_runs(dir.path(), *id), expected, "order {id}");
    }
    // Everything deployed: a third collect runs nothing.
    let out = output(collect_with_hook(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for id in &ids {
        let expected = if [203, 204].contains(id) { 2 } else { 1 };
        assert_eq!(hook_runs(dir.path(), *id), expected, "order {id}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_whose_file_is_not_on_this_host_is_written_again_before_its_hook_runs() {
    // As when another host's collect downloaded it into its own --out and its hook failed there.
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ids: Vec<u64> = (211..=213).collect();
    keygen_campaign(dir.path(), &sim, &ids).await;
    std::fs::create_dir_all(dir.path().join("hooks")).expect("hooks dir");
    std::fs::write(dir.path().join("hooks/fail-212"), "").expect("marker");
    let out = output(collect_with_hook(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    std::fs::remove_dir_all(dir.path().join("certs")).expect("certs gone");
    std::fs::remove_file(dir.path().join("hooks/fail-212")).expect("fixed");

    let out = output(collect_with_hook(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("order 212:") && stderr.contains("is not on this host"),
        "{stderr}"
    );
    assert_eq!(hook_runs(dir.path(), 212), 2);
    let env = std::fs::read_to_string(dir.path().join("hooks/212.env")).expect("env");
    let cert_file = env
        .lines()
        .find_map(|line| line.strip_prefix("REISSUER_CERT_FILE="))
        .expect("cert file in the hook's environment");
    let cert = std::fs::read_to_string(cert_file).expect("the hook's certificate is there");
    let key = std::fs::read_to_string(dir.path().join("campaign/212.key")).expect("key");
    let key = rcgen::KeyPair::from_pem(&key).expect("key parses");
    assert_eq!(
        leaf_key(&cert),
        rcgen::PublicKeyData::subject_public_key_info(&key)
    );
    // Those deployed already are left alone: no hook, no download.
    for id in [211, 213] {
        assert_eq!(hook_runs(dir.path(), id), 1, "order {id}");
        assert!(
            !dir.path().join(format!("certs/{id}.pem")).exists(),
            "order {id}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collect_killed_during_a_hook_runs_only_that_hook_again() {
    killed_during_hooks(&(301..=306).collect::<Vec<_>>(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collect_killed_during_concurrent_hooks_runs_only_those_again() {
    killed_during_hooks(&(311..=316).collect::<Vec<_>>(), 2).await;
}

/// Kills `collect --hook-concurrency N` with -9 just after the (N + 2)th hook started (each takes
/// a second: two have finished, N run), then collects again: exactly the hooks running at the
/// kill run again, no hook that had finished does.
async fn killed_during_hooks(ids: &[u64], concurrency: usize) {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    keygen_campaign(dir.path(), &sim, ids).await;
    let flag = concurrency.to_string();
    let mut cmd = collect_with_hook(dir.path(), &sim, &["--hook-concurrency", &flag]);
    cmd.env("HOOK_PAUSE", "1")
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawns");
    // Counted at a start, not near an end: every slot holds a hook that runs for a second.
    support::wait_until(
        "two hooks finished and the next started",
        Duration::from_secs(60),
        || {
            ids.iter()
                .map(|id| hook_runs(dir.path(), *id))
                .sum::<usize>()
                >= concurrency + 2
        },
    )
    .await;
    support::kill_nine(&mut child);
    // The hooks running at the kill have started and not finished (each sleeps a second).
    let log = |id: u64| std::fs::read_to_string(dir.path().join(format!("hooks/{id}.runs")));
    let running: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| log(*id).is_ok_and(|log| log == "start\n"))
        .collect();
    assert_eq!(
        running.len(),
        concurrency,
        "{concurrency} hook(s) at a time"
    );
    let finished = ids
        .iter()
        .filter(|id| log(**id).is_ok_and(|log| log == "start\ndone\n"))
        .count();
    assert_eq!(finished, 2, "two hooks had finished");

    let mut again = collect_with_hook(dir.path(), &sim, &[]);
    again.env("HOOK_PAUSE", "0");
    let out = output(again).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let twice: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| hook_runs(dir.path(), *id) == 2)
        .collect();
    // The hooks running at the kill ran again; those finished before it did not.
    assert_eq!(twice, running, "hooks run twice");
    for id in ids {
        assert!((1..=2).contains(&hook_runs(dir.path(), *id)), "order {id}");
    }
    sim.shutdown().await;
}

/// Orders `waiting` (sent without skip_approval) and `skipping` (with it) in one manifest.
fn approval_manifest(dir: &Path, waiting: &[u64], skipping: &[u64]) -> std::path::PathBuf {
    support::tls_manifest(dir, []);
    let mut csv = String::from(
        "order_id,common_name,dns_names,csr_file,server_platform.id,signature_hash,skip_approval\n",
    );
    for (ids, skip) in [(waiting, false), (skipping, true)] {
        for id in ids {
            csv.push_str(&format!(
                "{id},example.com,www.example.com,example.csr,2,sha256,{skip}\n"
            ));
        }
    }
    let path = dir.join("approvals.csv");
    std::fs::write(&path, csv).expect("write manifest");
    path
}

fn approve(dir: &Path, sim: &SimulatorHandle, extra: &[&str]) -> std::process::Command {
    let mut cmd = reissuer(dir);
    cmd.args([
        "approve",
        "--base-url",
        &sim.base_url(),
        "--rate",
        "unlimited",
    ])
    .args(extra);
    cmd
}

/// How many approvals of each order's request the simulator received (PUTs) and committed.
fn approvals(sim: &SimulatorHandle, order_id: u64) -> (usize, usize) {
    let ledger = sim.ledger();
    let Some(request_id) = ledger
        .accepted
        .iter()
        .find(|a| a.order_id == order_id)
        .map(|a| a.request_id)
    else {
        return (0, 0);
    };
    let path = format!("/request/{request_id}/status");
    let puts = ledger
        .requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with(&path))
        .count();
    let committed = ledger
        .approvals
        .iter()
        .filter(|a| a.request_id == request_id)
        .count();
    (puts, committed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_approves_each_waiting_request_once_and_a_second_approve_sends_nothing() {
    let sim = support::simulator(Scenario {
        approval_required: true,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let waiting: Vec<u64> = (51..=58).collect();
    let manifest = approval_manifest(dir.path(), &waiting, &[59, 60]);
    let mut run = support::run_against(dir.path(), &manifest, &sim.base_url());
    run.args(["--rate", "unlimited"]);
    assert_eq!(output(run).await.status.code(), Some(0));
    for id in &waiting {
        assert_eq!(
            order_status(&sim, *id).await,
            "needs_approval",
            "order {id}"
        );
    }

    let out = output(approve(
        dir.path(),
        &sim,
        &["--comment", "key rotation INC-4711"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for id in &waiting {
        assert_eq!(approvals(&sim, *id), (1, 1), "order {id}");
        assert_eq!(order_status(&sim, *id).await, "issued", "order {id}");
    }
    for id in [59, 60] {
        assert_eq!(approvals(&sim, id), (0, 0), "order {id} needed no approval");
    }
    assert!(
        sim.ledger()
            .approvals
            .iter()
            .all(|a| a.processor_comment.as_deref() == Some("key rotation INC-4711"))
    );
    let mut status = reissuer(dir.path());
    status.args(["status", "--json"]);
    let runs: serde_json::Value =
        serde_json::from_slice(&output(status).await.stdout).expect("json");
    assert_eq!(runs[0]["rotation"]["awaiting_approval"], 0, "{runs}");

    let before = sim.ledger().requests.len();
    let out = output(approve(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        sim.ledger().requests.len(),
        before,
        "a second approve sent something"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_users_key_stops_approve_with_exit_4_and_approves_nothing() {
    const USER_KEY: &str = "standard-user-key-3b9e-do-not-print";
    let sim = support::simulator(Scenario {
        approval_required: true,
        user_keys: vec![USER_KEY.to_owned()],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let waiting: Vec<u64> = (71..=73).collect();
    let manifest = approval_manifest(dir.path(), &waiting, &[]);
    let mut run = support::run_against(dir.path(), &manifest, &sim.base_url());
    run.args(["--rate", "unlimited"]);
    assert_eq!(output(run).await.status.code(), Some(0));

    let mut cmd = approve(dir.path(), &sim, &["--concurrency", "1"]);
    cmd.env("DIGICERT_API_KEY", USER_KEY);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Administrator or Manager"), "{stderr}");
    assert!(!text(&out).contains(USER_KEY), "the key was printed");
    assert!(sim.ledger().approvals.is_empty(), "a user's key approved");
    let refused = sim
        .ledger()
        .requests
        .iter()
        .filter(|r| r.method == "PUT" && r.status == 403)
        .count();
    assert_eq!(refused, 1, "approve went on after the first refusal");

    // The administrator's key approves each request once: the refusal left nothing behind.
    let out = output(approve(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for id in &waiting {
        assert_eq!(order_status(&sim, *id).await, "issued", "order {id}");
        let committed = sim
            .ledger()
            .approvals
            .iter()
            .filter(|a| a.order_id == *id)
            .count();
        assert_eq!(committed, 1, "order {id}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approve_killed_while_an_approval_is_answered_never_approves_twice() {
    let sim = support::simulator(Scenario {
        approval_required: true,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let waiting: Vec<u64> = (61..=64).collect();
    let manifest = approval_manifest(dir.path(), &waiting, &[]);
    let mut run = support::run_against(dir.path(), &manifest, &sim.base_url());
    run.args(["--rate", "unlimited"]);
    assert_eq!(output(run).await.status.code(), Some(0));

    // Every answer takes 2 s; the approval is committed before the wait.
    sim.set_faults(Faults {
        latency: Duration::from_secs(2),
        ..Faults::default()
    });
    let mut cmd = approve(dir.path(), &sim, &["--concurrency", "1"]);
    cmd.stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawns");
    support::wait_until("a second approval", Duration::from_secs(60), || {
        sim.ledger().approvals.len() >= 2
    })
    .await;
    support::kill_nine(&mut child);
    let in_flight = sim.ledger().approvals[1].order_id;
    sim.set_faults(Faults::default());

    let out = output(approve(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "order {in_flight}: approved by an earlier, interrupted approve"
        )),
        "{stderr}"
    );
    for id in &waiting {
        assert_eq!(approvals(&sim, *id), (1, 1), "order {id}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approve_killed_before_a_slow_approval_took_effect_never_approves_twice() {
    // CertCentral acts on an approval 2 s after it arrived, whether or not its client is there.
    let sim = support::simulator(Scenario {
        approval_required: true,
        approval_delay: Duration::from_secs(2),
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let waiting: Vec<u64> = (65..=68).collect();
    let manifest = approval_manifest(dir.path(), &waiting, &[]);
    let mut run = support::run_against(dir.path(), &manifest, &sim.base_url());
    run.args(["--rate", "unlimited"]);
    assert_eq!(output(run).await.status.code(), Some(0));

    let mut cmd = approve(dir.path(), &sim, &["--concurrency", "1"]);
    cmd.stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawns");
    // Once the pending list is answered the first approval is marked and sent; the server holds
    // it. The kill comes before the server acts on it.
    support::wait_until("the pending list", Duration::from_secs(60), || {
        sim.ledger()
            .requests
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/request") && r.status == 200)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    support::kill_nine(&mut child);
    assert!(
        sim.ledger().approvals.is_empty(),
        "the server acted before the kill"
    );

    // At once: the read-back may still find the request pending and send again; the server then
    // acts on whichever comes first and refuses the other.
    let out = output(approve(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    tokio::time::sleep(Duration::from_secs(3)).await; // anything still held is acted on
    for id in &waiting {
        assert_eq!(approvals(&sim, *id).1, 1, "order {id}: approvals committed");
        assert_eq!(order_status(&sim, *id).await, "issued", "order {id}");
    }
    let killed = sim.ledger().approvals[0].order_id;
    eprintln!(
        "order {killed} (approval in flight at the kill): {} approval(s) sent",
        approvals(&sim, killed).0
    );
    // Settled: a third approve sends nothing.
    let before = sim.ledger().requests.len();
    let out = output(approve(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sim.ledger().requests.len(), before);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_checks_dcv_approves_and_deploys_with_a_hook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut demo = reissuer(dir.path());
    demo.args(["demo", "--journal"])
        .arg(dir.path().join("demo.db"));
    let out = output(demo).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for order in [1001, 1002, 1003] {
        assert!(
            stderr.contains(&format!("order {order}: domain control validated")),
            "{stderr}"
        );
    }
    for order in [1002, 1004, 1007] {
        assert!(
            stderr.contains(&format!("order {order}: request ")),
            "{stderr}"
        );
    }
    assert!(stderr.contains("would install "), "{stderr}");
    assert!(
        stderr.contains("deploy hook: 5 certificate(s) deployed, 0 failed"),
        "{stderr}"
    );
}

/// The run's `rotation` counts from `status --json`, and its line from `status`, in order
/// awaiting DCV, awaiting approval, issued, downloaded, deployed.
async fn rotation(dir: &Path) -> ([u64; 5], String) {
    let mut json = reissuer(dir);
    json.args(["status", "--run", "1", "--json"]);
    let out = output(json).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let counts = [
        "awaiting_dcv",
        "awaiting_approval",
        "issued",
        "downloaded",
        "deployed",
    ]
    .map(|key| runs[0]["rotation"][key].as_u64().expect("a count"));
    let mut plain = reissuer(dir);
    plain.args(["status", "--run", "1"]);
    let out = output(plain).await;
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.trim().strip_prefix("rotation: ").map(str::to_owned))
        .unwrap_or_default();
    (counts, line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_a_run_from_dcv_and_approval_to_deployed() {
    let sim = support::simulator(Scenario {
        approval_required: true,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    run_orders(
        dir.path(),
        &sim,
        81..=84,
        &["--set", "dcv_method=dns-txt-token"],
    )
    .await;
    let (counts, line) = rotation(dir.path()).await;
    assert_eq!(counts[0], 4, "every token awaits DCV: {line}");
    assert_eq!(counts[2..], [0, 0, 0], "{line}");

    publish(&sim, 81);
    publish(&sim, 82);
    let out = output(dcv_check(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // collect finds every request waiting for approval, and nothing issued.
    let out = output(collect_with_hook(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (counts, line) = rotation(dir.path()).await;
    assert_eq!(counts, [2, 4, 0, 0, 0], "{line}");
    assert_eq!(
        line,
        "2 awaiting DCV, 4 awaiting approval, 0 issued, 0 downloaded, 0 deployed"
    );

    let out = output(approve(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (counts, line) = rotation(dir.path()).await;
    assert_eq!(counts, [2, 0, 0, 0, 0], "{line}");

    // The two validated and approved are issued, downloaded and deployed; two still await DCV.
    let out = output(collect_with_hook(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (counts, line) = rotation(dir.path()).await;
    assert_eq!(counts, [2, 0, 2, 2, 2], "{line}");

    publish(&sim, 83);
    publish(&sim, 84);
    let out = output(dcv_check(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = output(collect_with_hook(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (counts, line) = rotation(dir.path()).await;
    assert_eq!(counts, [0, 0, 4, 4, 4], "{line}");
    assert_eq!(
        line,
        "0 awaiting DCV, 0 awaiting approval, 4 issued, 4 downloaded, 4 deployed"
    );
    sim.shutdown().await;
}

/// `approve` asks who the key is before it sends anything: a key of another account than the
/// run's is refused with exit 4 and approves nothing; the run's own account's key then does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_with_a_key_of_another_account_exits_four_and_approves_nothing() {
    const OTHER_KEY: &str = "key-of-another-account-5b1e";
    let sim = support::simulator(Scenario {
        approval_required: true,
        other_keys: vec![KeyAccount {
            key: OTHER_KEY.to_owned(),
            account_id: 7_770_007,
            role: Role::Administrator,
        }],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let waiting: Vec<u64> = (61..=63).collect();
    let manifest = approval_manifest(dir.path(), &waiting, &[]);
    let mut run = support::run_against(dir.path(), &manifest, &sim.base_url());
    run.args(["--rate", "unlimited"]);
    assert_eq!(output(run).await.status.code(), Some(0));

    let mut other = approve(dir.path(), &sim, &[]);
    other.env("DIGICERT_API_KEY", OTHER_KEY);
    let out = output(other).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("7770007"), "{}", text(&out));
    assert!(
        sim.ledger().approvals.is_empty(),
        "approved with the wrong key"
    );

    let out = output(approve(dir.path(), &sim, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for id in &waiting {
        assert_eq!(approvals(&sim, *id), (1, 1), "order {id}");
    }
    sim.shutdown().await;
}
