//! Manifests as spreadsheets save them, through the real binary and the simulator: `;` between
//! cells, UTF-16 with a byte-order mark, `\r\n` line endings; and the refusals that say what to do.

use reissuer::simulator::Scenario;

use crate::support::{self, output, reissuer, run_against, text};

fn utf16le_with_bom(text: &str) -> Vec<u8> {
    std::iter::once(0xfeff_u16)
        .chain(text.encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// A `;`-separated export in UTF-16LE with a byte-order mark and `\r\n` line endings: lists
/// separated by `,`, and in one quoted cell by `;`.
fn semicolon_utf16_manifest(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(dir.join("example.csr"), support::csr_pem("example.com")).expect("write csr");
    let text = "order_id;common_name;dns_names;csr_file;server_platform.id;signature_hash;comments\r\n\
                201;example.com;www.example.com, api.example.com;example.csr;2;sha256;Größe, Köln\r\n\
                202;example.com;\"www.example.com;api.example.com\";example.csr;2;sha384;\r\n";
    let path = dir.join("orders.csv");
    std::fs::write(&path, utf16le_with_bom(text)).expect("write manifest");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semicolon_separated_utf16_export_is_sent_as_written() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = semicolon_utf16_manifest(dir.path());
    let out = output(run_against(dir.path(), &manifest, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ledger = sim.ledger();
    support::assert_exactly_once(&ledger, 201..=202);
    for accepted in &ledger.accepted {
        assert_eq!(
            accepted.body["certificate"]["dns_names"],
            serde_json::json!(["www.example.com", "api.example.com"]),
            "order {}",
            accepted.order_id
        );
    }
    let first = ledger
        .accepted
        .iter()
        .find(|a| a.order_id == 201)
        .expect("201");
    assert_eq!(first.body["comments"], "Größe, Köln");
    assert_eq!(first.body["certificate"]["signature_hash"], "sha256");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf16_without_a_byte_order_mark_is_refused_with_what_to_do_and_nothing_is_sent() {
    let sim = support::simulator(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bare: Vec<u8> = utf16le_with_bom("order_id,signature_hash\r\n1,sha256\r\n").split_off(2);
    let manifest = dir.path().join("orders.csv");
    std::fs::write(&manifest, bare).expect("write manifest");
    let out = output(run_against(dir.path(), &manifest, &sim.base_url())).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "orders.csv:1: header: the file looks like UTF-16 without a byte-order mark; save it \
             as UTF-8 (a spreadsheet's \"CSV UTF-8\"), or as UTF-16 with a byte-order mark"
        ),
        "{}",
        text(&out)
    );
    assert!(sim.ledger().accepted.is_empty(), "something was sent");
}

#[test]
fn errors_in_a_crlf_export_name_the_line_each_row_is_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("orders.csv");
    std::fs::write(
        &manifest,
        "\u{feff}order_id;signature_hash\r\n1;sha256\r\n\r\n3;md5\r\n4;sha256\r\n5;sha1\r\n",
    )
    .expect("write manifest");
    let out = reissuer(dir.path())
        .arg("validate")
        .arg("orders.csv")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("signature_hash"))
        .map(|l| {
            l.split(": certificate.signature_hash")
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(lines, ["orders.csv:4", "orders.csv:6"], "{}", text(&out));
}

#[test]
fn a_header_mixing_separators_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("orders.csv"),
        "order_id;common_name,signature_hash\n1;a.example,sha256\n",
    )
    .expect("write manifest");
    let out = reissuer(dir.path())
        .arg("validate")
        .arg("orders.csv")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "orders.csv:1: order_id;common_name: unknown field (the header has both , and ; \
             between names: separate every column with the same one, , or ;)"
        ),
        "{}",
        text(&out)
    );
}
