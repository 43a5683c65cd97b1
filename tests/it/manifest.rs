//! `validate` and `run --dry-run` on manifest files, through the real binary. The expected bodies
//! are written out by hand from the reissue page's parameter table, not built by the code.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::{Value, json};

/// The fixture CSRs as the page asks for them: header, base64 body on one line, footer.
const EXAMPLE_COM_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----MIIBCzCBsgIBADAWMRQwEgYDVQQDDAtleGFtcGxlLmNvbTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABC5AwgmMvqcrrOXqN1Mvhz86j6mI+1m5MEg2BWXtq+1UmCcvVToofbvBmr2rjNom+fq3GU6CYI6Htpvnxu1nbamgOjA4BgkqhkiG9w0BCQ4xKzApMCcGA1UdEQQgMB6CC2V4YW1wbGUuY29tgg9zdWIuZXhhbXBsZS5jb20wCgYIKoZIzj0EAwIDSAAwRQIgZQVWgf7rwjpi5NHOUOPJk+/OkOIBr7UbwQhKzzfIMCYCIQDLalTLW93IsVu4scznq1LGw2lr9bSyQrPDpSF0ukc39w==-----END CERTIFICATE REQUEST-----";
const JANE_DOE_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----MIHNMHUCAQAwEzERMA8GA1UEAwwISmFuZSBEb2UwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASMY+vgDXIdJClUzKLJdotiXf2PA5um3kBskvuTBSSmwa1XqyWNZ3pI1oFdDqlK+qkPhsm801wZS6JKkSt4/rYjoAAwCgYIKoZIzj0EAwIDSAAwRQIhAJbV8BiNlCbrZhuV2AMZYt7t8oHKA2ksPwr0lOiwMh/YAiBNqJqftzmJbX8Gkc8EdNw627Nnxp/0LunpwJ1Z0x7Kww==-----END CERTIFICATE REQUEST-----";

fn reissuer() -> Command {
    let mut cmd = Command::cargo_bin("reissuer").expect("the reissuer binary is built");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DIGICERT_BASE_URL")
        .env_remove("REISSUER_JOURNAL");
    cmd
}

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8(stdout.to_vec())
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect()
}

#[test]
fn validate_print_sends_the_reference_pages_example_body() {
    let output = reissuer()
        .args([
            "validate",
            "tests/fixtures/reference-example.csv",
            "--print",
        ])
        .args(["--set", "signature_hash=sha384"])
        .assert()
        .success()
        .stderr("")
        .get_output()
        .stdout
        .clone();
    assert_eq!(
        json_lines(&output),
        [
            // The reissue page's example request, with a real CSR.
            json!({
                "order_id": 123,
                "method": "POST",
                "url": "https://www.digicert.com/services/v2/order/certificate/123/reissue",
                "body": {
                    "certificate": {
                        "common_name": "example.com",
                        "dns_names": ["sub.example.com"],
                        "csr": EXAMPLE_COM_CSR,
                        "server_platform": {"id": 2},
                        "signature_hash": "sha256"
                    }
                }
            }),
            json!({
                "order_id": 124,
                "method": "POST",
                "url": "https://www.digicert.com/services/v2/order/certificate/124/reissue",
                "body": {
                    "certificate": {
                        "common_name": "EXAMPLE.COM",
                        "dns_names": ["sub.example.com", "example.com"],
                        "csr": EXAMPLE_COM_CSR,
                        "server_platform": {"id": -1},
                        "signature_hash": "sha384"
                    }
                }
            }),
        ]
    );
}

#[test]
fn printed_lines_are_compact_with_the_contracts_key_order() {
    let output = reissuer()
        .args([
            "validate",
            "tests/fixtures/reference-example.csv",
            "--print",
        ])
        .args(["--set", "signature_hash=sha256"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(output).expect("UTF-8");
    let first = text.lines().next().expect("a line");
    assert!(
        first.starts_with(
            r#"{"order_id":123,"method":"POST","url":"https://www.digicert.com/services/v2/order/certificate/123/reissue","body":{"certificate":{"common_name":"example.com","csr":"-----BEGIN CERTIFICATE REQUEST-----MIIB"#
        ),
        "{first}"
    );
    // No escaped line breaks anywhere: the CSR is on one line whatever the file had (CRLF).
    assert!(!first.contains("\\n") && !first.contains("\\r"), "{first}");
}

#[test]
fn run_dry_run_prints_toml_bodies_and_writes_no_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/secure-email.toml");
    let output = Command::cargo_bin("reissuer")
        .expect("binary")
        .current_dir(dir.path())
        .env_remove("REISSUER_JOURNAL")
        .env_remove("DIGICERT_BASE_URL")
        .arg("run")
        .arg(&manifest)
        .args(["--dry-run", "--region", "eu"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(
        json_lines(&output),
        [
            json!({
                "order_id": 1050,
                "method": "POST",
                "url": "https://certcentral.digicert.eu/services/v2/order/certificate/1050/reissue",
                "body": {
                    "certificate": {
                        "csr": JANE_DOE_CSR,
                        "emails": ["jane.doe@example.com"],
                        "user_principle_name": ["jane.doe@corp.example.com"],
                        "common_name_indicator": "given_name_surname",
                        "individual": {"first_name": "Jane", "last_name": "Doe"},
                        "usage_designation": {"primary_usage": "dual_use"},
                        "signature_hash": "sha256"
                    },
                    "subject": {"job_title": "Engineer", "include_given_name_surname": true}
                }
            }),
            json!({
                "order_id": 1060,
                "method": "POST",
                "url": "https://certcentral.digicert.eu/services/v2/order/certificate/1060/reissue",
                "body": {
                    "certificate": {"server_platform": {"id": -1}, "signature_hash": "sha512"},
                    "comments": "replacement token",
                    "skip_approval": true,
                    "cs_provisioning_method": "ship_token",
                    "ship_info": {
                        "name": "Jane Doe", "addr1": "2801 N Thanksgiving Way", "city": "Lehi",
                        "state": "UT", "zip": "84043", "country": "US", "method": "STANDARD"
                    }
                }
            }),
        ]
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(left.is_empty(), "dry run wrote {left:?}");
}

#[test]
fn samples_validate() {
    reissuer()
        .args(["validate", "samples/orders.csv"])
        .assert()
        .success()
        .stdout("samples/orders.csv: 7 orders valid\n");
    reissuer()
        .args(["validate", "samples/orders.toml"])
        .assert()
        .success()
        .stdout("samples/orders.toml: 6 orders valid\n");
    let output = reissuer()
        .args(["validate", "samples/orders.toml", "--print"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    for line in json_lines(&output) {
        let id = line["order_id"].as_u64().expect("order id");
        assert!((1000..=1100).contains(&id), "{id}");
        assert!(line["body"]["certificate"]["signature_hash"].is_string());
    }
}

#[test]
fn bad_csv_reports_every_error_exits_2_and_prints_nothing() {
    for args in [
        &["validate", "tests/fixtures/bad.csv", "--print"][..],
        &["validate", "tests/fixtures/bad.csv"][..],
        &["run", "tests/fixtures/bad.csv", "--dry-run"][..],
    ] {
        reissuer()
            .args(args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(
                predicate::str::contains(
                    "tests/fixtures/bad.csv:3: csr_file: cannot read tests/fixtures/csr/missing.csr: ",
                )
                .and(predicate::str::contains(
                    "tests/fixtures/bad.csv:3: certificate.signature_hash: \"sha1\" is not one of sha256, sha384, sha512",
                ))
                .and(predicate::str::contains(
                    "tests/fixtures/bad.csv:3: certificate.cert_validity.days: 400 is out of range: must be between 1 and 397 (Max: 397)\n",
                ))
                .and(predicate::str::contains(
                    "tests/fixtures/bad.csv:3: skip_approval: expected true or false, found \"yes\"\n",
                ))
                .and(predicate::str::contains(
                    "tests/fixtures/bad.csv:4: certificate.common_name: \"www.example.org\" is neither the CSR's common name nor one of its DNS names (example.com, sub.example.com)",
                ))
                .and(predicate::str::contains(
                    "tests/fixtures/bad.csv:4: order_id: duplicate order_id 200; first on line 2\n",
                ))
                .and(predicate::str::ends_with(
                    "tests/fixtures/bad.csv: 6 errors in 2 of 3 orders; nothing was sent\n",
                )),
            );
    }
}

#[test]
fn bad_toml_errors_point_at_keys_and_orders() {
    let lines: Vec<String> = [
        "6: certificate.server_platform.id: expected an integer, found the string \"two\"",
        "8: ship_info.name: required when ship_info is given (ship_info.city is set)",
        "8: ship_info.addr1: required when ship_info is given (ship_info.city is set)",
        "8: ship_info.state: required when ship_info is given (ship_info.city is set)",
        "8: ship_info.zip: required when ship_info is given (ship_info.city is set)",
        "8: ship_info.country: required when ship_info is given (ship_info.city is set)",
        "8: ship_info.method: required when ship_info is given (ship_info.city is set)",
        "10: certificate.common_name_indicator: \"nickname\" is not one of email_address, given_name_surname, pseudonym, organization_name (Order Secure Email certificate – Common name value)",
    ]
    .iter()
    .map(|l| format!("tests/fixtures/bad.toml:{l}\n"))
    .collect();
    let expected = format!(
        "{}tests/fixtures/bad.toml: 8 errors in 2 of 2 orders; nothing was sent\n",
        lines.concat()
    );
    reissuer()
        .args(["run", "tests/fixtures/bad.toml", "--dry-run"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(expected);
}

#[test]
fn skip_invalid_prints_the_valid_orders_and_exits_1() {
    let output = reissuer()
        .args([
            "run",
            "tests/fixtures/bad.csv",
            "--dry-run",
            "--skip-invalid",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::ends_with(
            "tests/fixtures/bad.csv: 2 of 3 orders invalid and skipped (6 errors)\n",
        ))
        .get_output()
        .stdout
        .clone();
    assert_eq!(
        json_lines(&output),
        [json!({
            "order_id": 200,
            "method": "POST",
            "url": "https://www.digicert.com/services/v2/order/certificate/200/reissue",
            "body": {
                "certificate": {
                    "common_name": "example.com",
                    "csr": EXAMPLE_COM_CSR,
                    "signature_hash": "sha256",
                    "cert_validity": {"days": 30}
                },
                "skip_approval": true
            }
        })]
    );
}

#[test]
fn allow_cn_mismatch_accepts_a_name_outside_the_csr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csr =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/csr/example.com.csr");
    let manifest = dir.path().join("m.csv");
    std::fs::write(
        &manifest,
        format!(
            "order_id,common_name,csr_file,signature_hash\n7,other.example,{},sha256\n",
            csr.display()
        ),
    )
    .expect("write manifest");
    reissuer().arg("validate").arg(&manifest).assert().code(2);
    reissuer()
        .arg("validate")
        .arg(&manifest)
        .arg("--allow-cn-mismatch")
        .assert()
        .success();
}

#[test]
fn whole_file_problems_exit_2() {
    reissuer()
        .args(["validate", "tests/fixtures/none.csv"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(
            "cannot read manifest tests/fixtures/none.csv",
        ));
    reissuer()
        .args(["validate", "tests/fixtures/bad-header.csv", "--print"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(
            "tests/fixtures/bad-header.csv:1: colour: unknown field (see the reissue page's request parameters)\n\
             tests/fixtures/bad-header.csv:1: dns_name: unknown field (did you mean dns_names?)\n\
             tests/fixtures/bad-header.csv: 2 errors; nothing was sent\n",
        );
    reissuer()
        .args(["validate", "tests/fixtures/README.md"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("must be a .csv or a .toml file"));
    reissuer()
        .args([
            "validate",
            "samples/orders.csv",
            "--set",
            "cert_validity.years=2",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--set cert_validity.years=2: certificate.cert_validity.years: 2 is out of range",
        ));
}
