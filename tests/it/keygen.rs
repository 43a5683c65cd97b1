//! `keygen` end to end: keys and CSRs for a manifest without CSRs, the new manifest validated and
//! run against the simulator, and the CSR each order was reissued with carrying its own key.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use rcgen::PublicKeyData as _;
use reissuer::simulator::Scenario;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer as _;

use crate::support::{self, output, reissuer, run_against, text};

/// Five orders with names but no CSR: what an operator starting a key rotation has.
fn manifest_without_csrs(dir: &Path) -> std::path::PathBuf {
    let csv = "order_id,common_name,dns_names,server_platform.id,signature_hash,comments\n\
               101,a.example.com,www.a.example.com,2,sha256,\"rotation, batch 1\"\n\
               102,b.example.com,,45,sha384,\n\
               103,,c.example.com;www.c.example.com,2,sha256,\n\
               104,*.d.example.com,d.example.com,-1,sha256,\n\
               105,e.example.com,e.example.com;mail.e.example.com,2,sha512,\n";
    let path = dir.join("orders.csv");
    std::fs::write(&path, csv).expect("write manifest");
    path
}

/// Every file in `dir` with its content, to show that a refused keygen changed nothing.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .to_string();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect()
}

fn csr_public_key(pem_text: &str) -> Vec<u8> {
    // The simulator's ledger holds the CSR as sent: one line, header and footer kept.
    let body = pem_text
        .trim()
        .trim_start_matches("-----BEGIN CERTIFICATE REQUEST-----")
        .trim_end_matches("-----END CERTIFICATE REQUEST-----");
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .expect("base64 CSR");
    let (_, csr) = X509CertificationRequest::from_der(&der).expect("a CSR");
    csr.certification_request_info.subject_pki.raw.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_then_run_reissues_each_order_once_with_its_own_new_key() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = manifest_without_csrs(dir.path());
    let out_dir = dir.path().join("keys");

    let mut keygen = reissuer(dir.path());
    keygen
        .arg("keygen")
        .arg(&manifest)
        .arg("--out")
        .arg(&out_dir);
    let out = output(keygen).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("wrote 5 ecdsa-p256 private keys"), "{shown}");
    assert!(shown.contains("reissuer run "), "{shown}");
    assert!(
        !shown.contains("PRIVATE KEY"),
        "key material on the terminal: {shown}"
    );

    let dir_mode = std::fs::metadata(&out_dir)
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let mut keys = BTreeMap::new();
    for id in 101..=105u64 {
        let key_path = out_dir.join(format!("{id}.key"));
        let mode = std::fs::metadata(&key_path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key_path.display());
        let pem = std::fs::read_to_string(&key_path).expect("read key");
        let key = rcgen::KeyPair::from_pem(&pem).expect("PKCS#8 key");
        keys.insert(id, key.subject_public_key_info());
        assert!(out_dir.join(format!("{id}.csr")).is_file());
    }
    let new_manifest = out_dir.join("manifest.csv");

    let mut validate = reissuer(dir.path());
    validate.arg("validate").arg(&new_manifest);
    let out = output(validate).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut run = reissuer(dir.path());
    run.arg("run")
        .arg(&new_manifest)
        .args(["--base-url", &sim.base_url(), "--rate", "unlimited"]);
    let out = output(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ledger = sim.ledger();
    support::assert_exactly_once(&ledger, 101..=105);
    for accepted in &ledger.accepted {
        let csr = accepted.csr.as_deref().expect("a CSR was sent");
        assert_eq!(
            &csr_public_key(csr),
            keys.get(&accepted.order_id).expect("a key for the order"),
            "order {} was reissued with a CSR that is not for its new key",
            accepted.order_id
        );
    }
    let first = ledger
        .accepted
        .iter()
        .find(|a| a.order_id == 101)
        .expect("101");
    assert_eq!(first.body["comments"], "rotation, batch 1");
    assert_eq!(first.body["certificate"]["common_name"], "a.example.com");
    let second = ledger
        .accepted
        .iter()
        .find(|a| a.order_id == 102)
        .expect("102");
    assert_eq!(second.body["certificate"]["signature_hash"], "sha384");
    assert_eq!(second.body["certificate"]["server_platform"]["id"], 45);

    // No key material reached the journal.
    let journal = std::fs::read(dir.path().join("journal.db")).expect("journal");
    let needle = b"PRIVATE KEY";
    assert!(!journal.windows(needle.len()).any(|w| w == needle));

    // A second keygen without --force refuses and changes nothing.
    let before = snapshot(&out_dir);
    let mut again = reissuer(dir.path());
    again
        .arg("keygen")
        .arg(&manifest)
        .arg("--out")
        .arg(&out_dir);
    let out = output(again).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing was written"),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(&out_dir), before, "a refused keygen changed files");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_reports_every_order_without_a_name_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("orders.toml");
    std::fs::write(
        &manifest,
        "[defaults]\nsignature_hash = \"sha256\"\n\n\
         [[orders]]\norder_id = 1\ncommon_name = \"a.example\"\n\n\
         [[orders]]\norder_id = 2\ncomments = \"no names\"\n",
    )
    .expect("write");
    let out_dir = dir.path().join("keys");
    let mut keygen = reissuer(dir.path());
    keygen
        .arg("keygen")
        .arg(&manifest)
        .arg("--out")
        .arg(&out_dir)
        .args(["--key-type", "ecdsa-p384"]);
    let out = output(keygen).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("orders.toml:8: certificate.common_name: order 2 has neither"),
        "{stderr}"
    );
    assert!(!out_dir.exists(), "keygen wrote into {}", out_dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_needs_only_order_ids_and_names_and_run_checks_the_rest() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("names.csv");
    std::fs::write(
        &manifest,
        "order_id,common_name,dns_names\n\
         301,a.example.com,www.a.example.com\n\
         302,,b.example.com;www.b.example.com\n",
    )
    .expect("write manifest");
    let out_dir = dir.path().join("keys");
    let mut keygen = reissuer(dir.path());
    keygen
        .arg("keygen")
        .arg(&manifest)
        .arg("--out")
        .arg(&out_dir);
    let out = output(keygen).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("wrote 2 ecdsa-p256 private keys"), "{shown}");
    assert!(
        shown.contains("note: 2 of 2 orders have no signature_hash, which the reissue requires"),
        "{shown}"
    );
    let new_manifest = out_dir.join("manifest.csv");

    // The reissue's own rules are checked when the new manifest is run: refused, nothing sent.
    let out = output(run_against(dir.path(), &new_manifest, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("manifest.csv:2: certificate.signature_hash: required"),
        "{}",
        text(&out)
    );
    assert!(sim.ledger().accepted.is_empty(), "a reissue was sent");

    let mut run = run_against(dir.path(), &new_manifest, &sim.base_url());
    run.args(["--set", "signature_hash=sha256"]);
    let out = output(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ledger = sim.ledger();
    support::assert_exactly_once(&ledger, 301..=302);
    for accepted in &ledger.accepted {
        let key = std::fs::read_to_string(out_dir.join(format!("{}.key", accepted.order_id)))
            .expect("key file");
        let key = rcgen::KeyPair::from_pem(&key).expect("PKCS#8 key");
        assert_eq!(
            csr_public_key(accepted.csr.as_deref().expect("a CSR was sent")),
            key.subject_public_key_info(),
            "order {} was not reissued with its new key",
            accepted.order_id
        );
        assert_eq!(accepted.body["certificate"]["signature_hash"], "sha256");
    }
    sim.shutdown().await;
}
