//! Whole-manifest tests: files in, rows out.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use time::macros::date;

use super::csr::testing::{csr_pem, public_key_pem};
use super::*;

const TODAY: time::Date = date!(2026 - 03 - 01);

fn options() -> LoadOptions {
    LoadOptions {
        defaults: Vec::new(),
        allow_cn_mismatch: false,
        today: TODAY,
        fill_from_order: false,
        purpose: Purpose::Reissue,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test manifest");
    path
}

fn scan_all(path: &Path, opts: &LoadOptions) -> Result<Vec<Row>, ManifestError> {
    let mut rows = Vec::new();
    scan(path, opts, |row| {
        rows.push(row);
        ControlFlow::Continue(())
    })?;
    Ok(rows)
}

fn bodies(path: &Path, opts: &LoadOptions) -> Vec<Value> {
    scan_all(path, opts)
        .expect("manifest loads")
        .into_iter()
        .map(|row| match row {
            Row::Valid(order) => order.body,
            Row::Invalid(invalid) => panic!("invalid row: {:#?}", invalid.errors),
        })
        .collect()
}

fn error_lines(path: &Path, opts: &LoadOptions) -> Vec<String> {
    scan_all(path, opts)
        .expect("manifest loads")
        .into_iter()
        .flat_map(|row| match row {
            Row::Valid(_) => Vec::new(),
            Row::Invalid(invalid) => invalid.errors.iter().map(ToString::to_string).collect(),
        })
        .collect()
}

/// The CSR as the reissue page wants it, computed by hand from the PEM text.
fn one_line(pem: &str) -> String {
    pem.lines().map(str::trim).collect()
}

fn csv_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[test]
fn csv_sets_every_certificate_field_with_its_type_and_nesting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = csr_pem("example.com", &["example.com", "www.example.com"]);
    let header = "order_id,csr,common_name,dns_names,emails,user_principle_name,\
        common_name_indicator,individual.first_name,individual.last_name,individual.pseudonym,\
        usage_designation.primary_usage,usage_designation.additional_usages,is_rsassa_pss,\
        server_platform.id,cert_validity.years,cert_validity.days,\
        cert_validity.custom_expiration_date,signature_hash,profile_option,ca_cert_id";
    let row = format!(
        "7,{},example.com,www.example.com;api.example.com,a@example.com; b@example.com,\
         upn@example.com,email_address,Jane,Doe,JD,signing,key_management;dual_use,true,\
         -1,1,200,09 jun 2026,SHA384,server_auth_only_eku,5A1B",
        csv_quote(&pem)
    );
    let path = write(dir.path(), "m.csv", &format!("{header}\n{row}\n"));
    let expected = json!({
        "certificate": {
            "csr": one_line(&pem),
            "common_name": "example.com",
            "dns_names": ["www.example.com", "api.example.com"],
            "emails": ["a@example.com", "b@example.com"],
            "user_principle_name": ["upn@example.com"],
            "common_name_indicator": "email_address",
            "individual": {"first_name": "Jane", "last_name": "Doe", "pseudonym": "JD"},
            "usage_designation": {
                "primary_usage": "signing",
                "additional_usages": ["key_management", "dual_use"]
            },
            "is_rsassa_pss": true,
            "server_platform": {"id": -1},
            "cert_validity": {"years": 1, "days": 200, "custom_expiration_date": "09 JUN 2026"},
            "signature_hash": "sha384",
            "profile_option": "server_auth_only_eku",
            "ca_cert_id": "5A1B"
        }
    });
    // common_name_indicator and common_name together are refused; check the mapping without it.
    let rows = scan_all(&path, &options()).expect("loads");
    let Row::Invalid(invalid) = &rows[0] else {
        panic!("common_name with common_name_indicator must be refused");
    };
    assert_eq!(invalid.errors.len(), 1, "{:#?}", invalid.errors);
    let path = write(
        dir.path(),
        "m.csv",
        &format!("{header}\n{row}\n").replace(",email_address,", ",,"),
    );
    let mut expected = expected;
    expected["certificate"]
        .as_object_mut()
        .expect("object")
        .remove("common_name_indicator");
    assert_eq!(bodies(&path, &options()), [expected]);
}

#[test]
fn csv_sets_every_top_level_field_with_its_type_and_nesting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.csv",
        "order_id,certificate.signature_hash,dcv_method,comments,skip_approval,\
         certificate_dcv_scope,use_auth_key,cs_provisioning_method,ship_info.name,ship_info.addr1,\
         ship_info.addr2,ship_info.city,ship_info.state,ship_info.zip,ship_info.country,\
         ship_info.method,subject.serial_number,subject.pseudonym,subject.job_title,\
         subject.include_pseudonym,subject.include_email,subject.include_given_name_surname,\
         store_reissue_as_duplicate\n\
         1001,sha256,DNS-TXT-TOKEN,key rotation,false,fqdn,true,ship_token,Jane Doe,\
         2801 N Thanksgiving Way,Suite 1,Lehi,UT,84043,US,expedited,SN-1,JD,Engineer,\
         false,false,false,true\n",
    );
    let expected = json!({
        "certificate": {"signature_hash": "sha256"},
        "dcv_method": "dns-txt-token",
        "comments": "key rotation",
        "skip_approval": false,
        "certificate_dcv_scope": "fqdn",
        "use_auth_key": true,
        "cs_provisioning_method": "ship_token",
        "ship_info": {
            "name": "Jane Doe", "addr1": "2801 N Thanksgiving Way", "addr2": "Suite 1",
            "city": "Lehi", "state": "UT", "zip": "84043", "country": "US", "method": "EXPEDITED"
        },
        "subject": {
            "serial_number": "SN-1", "pseudonym": "JD", "job_title": "Engineer",
            "include_pseudonym": false, "include_email": false,
            "include_given_name_surname": false
        },
        "store_reissue_as_duplicate": true
    });
    assert_eq!(bodies(&path, &options()), [expected]);
}

#[test]
fn empty_cells_leave_fields_out_entirely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.csv",
        "order_id,signature_hash,common_name,dns_names,skip_approval,ship_info.city\n\
         5,sha256,, ,,\n",
    );
    assert_eq!(
        bodies(&path, &options()),
        [json!({"certificate": {"signature_hash": "sha256"}})]
    );
}

#[test]
fn order_ids_and_lines_come_with_each_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.csv",
        "order_id,signature_hash,comments\n1,sha256,\"two\nlines\"\n2,sha256,x\n",
    );
    let rows = scan_all(&path, &options()).expect("loads");
    let summary: Vec<(Option<u64>, u64)> = rows
        .iter()
        .map(|row| match row {
            Row::Valid(order) => (Some(order.order_id), order.line),
            Row::Invalid(invalid) => (invalid.order_id, invalid.line),
        })
        .collect();
    // The first row's comment holds a newline (a control character): invalid, but its id is
    // still known; the second row starts on line 4.
    assert_eq!(summary, [(Some(1), 2), (Some(2), 4)]);
}

#[test]
fn toml_dotted_nested_and_prefixed_forms_give_identical_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let forms = [
        "[[orders]]\norder_id = 1\ncommon_name = \"a.example\"\nsignature_hash = \"sha256\"\n\
         server_platform.id = 2\ncert_validity.days = 90\nsubject.job_title = \"CTO\"\n",
        "[[orders]]\norder_id = 1\ncertificate.common_name = \"a.example\"\n\
         certificate.signature_hash = \"sha256\"\ncertificate.server_platform.id = 2\n\
         certificate.cert_validity.days = 90\nsubject.job_title = \"CTO\"\n",
        "[[orders]]\norder_id = 1\n[orders.certificate]\ncommon_name = \"a.example\"\n\
         signature_hash = \"sha256\"\n[orders.certificate.server_platform]\nid = 2\n\
         [orders.certificate.cert_validity]\ndays = 90\n[orders.subject]\njob_title = \"CTO\"\n",
        "[[orders]]\norder_id = 1\ncertificate = { common_name = \"a.example\", \
         signature_hash = \"sha256\", server_platform = { id = 2 } }\n\
         cert_validity = { days = 90 }\nsubject = { job_title = \"CTO\" }\n",
        "[[orders]]\norder_id = 1\n[orders.server_platform]\nid = 2\n\
         [orders.certificate.cert_validity]\ndays = 90\n[orders.subject]\njob_title = \"CTO\"\n\
         [orders.certificate]\ncommon_name = \"a.example\"\nsignature_hash = \"sha256\"\n",
    ];
    let expected = json!({
        "certificate": {
            "common_name": "a.example", "signature_hash": "sha256",
            "server_platform": {"id": 2}, "cert_validity": {"days": 90}
        },
        "subject": {"job_title": "CTO"}
    });
    for (i, form) in forms.iter().enumerate() {
        let path = write(dir.path(), &format!("m{i}.toml"), form);
        assert_eq!(
            bodies(&path, &options()),
            std::slice::from_ref(&expected),
            "form {i}"
        );
    }
}

#[test]
fn toml_lists_ints_and_bools_are_native() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.toml",
        "[[orders]]\norder_id = 9\nsignature_hash = \"sha512\"\ndns_names = [\"a.example\", \"*.b.example\"]\n\
         skip_approval = true\nserver_platform.id = -1\n",
    );
    assert_eq!(
        bodies(&path, &options()),
        [json!({
            "certificate": {"signature_hash": "sha512", "dns_names": ["a.example", "*.b.example"],
                            "server_platform": {"id": -1}},
            "skip_approval": true
        })]
    );
}

#[test]
fn toml_strings_where_numbers_belong_are_type_errors_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.toml",
        "[[orders]]\norder_id = \"9\"\nsignature_hash = \"sha256\"\nskip_approval = \"true\"\n\
         dns_names = \"a.example\"\n",
    );
    assert_eq!(
        error_lines(&path, &options()),
        [
            "m.toml:2: order_id: expected an integer, found the string \"9\"",
            "m.toml:4: skip_approval: expected a boolean (true or false), found the string \"true\"",
            "m.toml:5: certificate.dns_names: expected a list of strings, found the string \"a.example\"",
        ]
        .map(|l| format!("{}/{l}", dir.path().display()))
    );
}

#[test]
fn precedence_is_order_then_defaults_then_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.toml",
        "[defaults]\nsignature_hash = \"sha384\"\ndcv_method = \"email\"\n\n\
         [[orders]]\norder_id = 1\nsignature_hash = \"sha512\"\n\n\
         [[orders]]\norder_id = 2\n",
    );
    let opts = LoadOptions {
        defaults: vec![
            "signature_hash=sha256".into(),
            "certificate.server_platform.id=45".into(),
            "dcv_method=http-token".into(),
        ],
        ..options()
    };
    assert_eq!(
        bodies(&path, &opts),
        [
            json!({"certificate": {"signature_hash": "sha512", "server_platform": {"id": 45}},
                   "dcv_method": "email"}),
            json!({"certificate": {"signature_hash": "sha384", "server_platform": {"id": 45}},
                   "dcv_method": "email"}),
        ]
    );
    let csv = write(
        dir.path(),
        "m.csv",
        "order_id,signature_hash\n1,sha512\n2,\n",
    );
    assert_eq!(
        bodies(&csv, &opts),
        [
            json!({"certificate": {"signature_hash": "sha512", "server_platform": {"id": 45}},
                   "dcv_method": "http-token"}),
            json!({"certificate": {"signature_hash": "sha256", "server_platform": {"id": 45}},
                   "dcv_method": "http-token"}),
        ]
    );
}

#[test]
fn bad_set_arguments_are_whole_file_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "m.csv", "order_id\n1\n");
    for (arg, expected) in [
        (
            "signature_hash",
            "--set signature_hash: expected PATH=VALUE",
        ),
        (
            "colour=red",
            "--set colour=red: unknown field (see the reissue page's request parameters)",
        ),
        (
            "order_id=4",
            "--set order_id=4: order_id cannot have a default",
        ),
        (
            "cert_validity.days=abc",
            "--set cert_validity.days=abc: certificate.cert_validity.days: expected an integer, found \"abc\"",
        ),
    ] {
        let opts = LoadOptions {
            defaults: vec![arg.into()],
            ..options()
        };
        let err = scan_all(&path, &opts).expect_err(arg);
        assert_eq!(err.to_string(), expected);
    }
}

#[test]
fn csv_reports_every_error_at_once_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "bad.csv",
        "order_id,signature_hash,cert_validity.years,cert_validity.days,dns_names,csr_file\n\
         1,sha256,,,,\n\
         2,md5,2,398,bad name;ok.example,missing.pem\n\
         ,sha256,,,,\n\
         1,sha256,,,,\n\
         4,sha256,1\n\
         x,,,,,\n",
    );
    let file = path.display().to_string();
    let expected = [
        "3: certificate.signature_hash: \"md5\" is not one of sha256, sha384, sha512 (Glossary – signature hashes)",
        "3: certificate.cert_validity.years: 2 is out of range: must be 1 (Allowed value: 1)",
        "3: certificate.cert_validity.days: 398 is out of range: must be between 1 and 397 (Max: 397)",
        "3: certificate.dns_names: \"bad name\" is not a DNS name: only letters, digits, - and . are allowed (and a leading *.)",
        "4: order_id: required",
        "5: order_id: duplicate order_id 1; first on line 2",
        "6: row: has 3 cells but the header has 6 columns",
        "7: order_id: expected an integer, found \"x\"",
        "7: certificate.signature_hash: required (the reissue page: certificate.signature_hash is required; e.g. --set signature_hash=sha256)",
    ];
    let mut lines = error_lines(&path, &options());
    // The unreadable csr_file's message carries the OS's wording; check its start only.
    let missing = lines.remove(4);
    assert!(
        missing.starts_with(&format!(
            "{file}:3: csr_file: cannot read {}",
            dir.path().join("missing.pem").display()
        )),
        "{missing}"
    );
    assert_eq!(lines, expected.map(|l| format!("{file}:{l}")));
}

#[test]
fn toml_reports_every_error_at_once_at_the_key_or_the_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "bad.toml",
        "[defaults]\n\
         signature_hash = \"sha256\"\n\
         \n\
         [[orders]]\n\
         order_id = 1\n\
         \n\
         [[orders]]\n\
         order_id = 2\n\
         cert_validity.days = 0\n\
         colour = \"red\"\n\
         \n\
         [[orders]]\n\
         common_name = \"x.example\"\n\
         [orders.subject]\n\
         job_title = \"x\"\n\
         include_email = true\n\
         \n\
         [[orders]]\n\
         order_id = 1\n",
    );
    let file = path.display().to_string();
    let expected = [
        "9: certificate.cert_validity.days: 0 is out of range: must be between 1 and 397 (Max: 397)",
        "10: colour: unknown field (see the reissue page's request parameters)",
        "12: order_id: required",
        "16: subject.include_email: is true but certificate.emails is not set (it includes the first address of the emails array)",
        "18: order_id: duplicate order_id 1; first on line 4",
    ];
    assert_eq!(
        error_lines(&path, &options()),
        expected.map(|l| format!("{file}:{l}"))
    );
}

#[test]
fn csv_header_problems_are_reported_together_on_line_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.csv",
        "\u{feff}common_name,certificate.common_name,dns_name,,signature_hash\n",
    );
    let Err(ManifestError::Fields(errors)) = scan_all(&path, &options()) else {
        panic!("expected header errors");
    };
    let lines: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}: {}", e.line, e.field, e.message))
        .collect();
    assert_eq!(
        lines,
        [
            "1: certificate.common_name: duplicate column: column 1 is also certificate.common_name",
            "1: dns_name: unknown field (did you mean dns_names?)",
            "1: column 4: empty column name",
            "1: order_id: required column is missing",
        ]
    );
    let empty = write(dir.path(), "e.csv", "");
    assert!(matches!(
        scan_all(&empty, &options()),
        Err(ManifestError::Fields(_))
    ));
}

#[test]
fn unknown_extensions_and_missing_files_are_whole_file_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = write(dir.path(), "m.json", "{}");
    assert!(matches!(
        scan_all(&json, &options()),
        Err(ManifestError::Extension { .. })
    ));
    let missing = dir.path().join("none.csv");
    assert!(matches!(
        scan_all(&missing, &options()),
        Err(ManifestError::Read { .. })
    ));
}

#[test]
fn csr_file_is_read_relative_to_the_manifest_in_any_line_ending() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("csr")).expect("mkdir");
    let pem = csr_pem("a.example", &["a.example"]);
    write(dir.path(), "csr/a.pem", &pem.replace('\n', "\r\n"));
    write(dir.path(), "csr/b.pem", pem.trim_end());
    let path = write(
        dir.path(),
        "m.csv",
        "order_id,signature_hash,common_name,csr_file\n1,sha256,A.EXAMPLE,csr/a.pem\n2,sha256,,csr/b.pem\n",
    );
    let got = bodies(&path, &options());
    assert_eq!(got[0]["certificate"]["csr"], json!(one_line(&pem)));
    assert_eq!(got[1]["certificate"]["csr"], json!(one_line(&pem)));
    assert_eq!(got[0]["certificate"]["common_name"], json!("A.EXAMPLE"));
}

#[test]
fn csr_and_csr_file_conflict_and_bad_csrs_are_row_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = csr_pem("a.example", &[]);
    write(dir.path(), "a.pem", &pem);
    write(dir.path(), "junk.pem", "not a csr");
    let path = write(
        dir.path(),
        "m.toml",
        &format!(
            "[defaults]\nsignature_hash = \"sha256\"\n\
             [[orders]]\norder_id = 1\ncsr = '''\n{pem}'''\ncsr_file = \"a.pem\"\n\
             [[orders]]\norder_id = 2\ncsr_file = \"junk.pem\"\n\
             [[orders]]\norder_id = 3\ncsr = \"-----BEGIN CERTIFICATE REQUEST-----AAAA-----END CERTIFICATE REQUEST-----\"\n"
        ),
    );
    let lines = error_lines(&path, &options());
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].contains(": csr_file: conflicts with certificate.csr (line 5)"),
        "{}",
        lines[0]
    );
    assert!(lines[1].ends_with("junk.pem: not PEM: expected -----BEGIN CERTIFICATE REQUEST----- or -----BEGIN PUBLIC KEY-----"), "{}", lines[1]);
    assert!(
        lines[2].contains(": certificate.csr: not a valid certificate request"),
        "{}",
        lines[2]
    );
}

#[test]
fn common_name_must_be_the_csr_cn_or_a_dns_name_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = csr_pem("a.example", &["b.example"]);
    let key = public_key_pem();
    let path = write(
        dir.path(),
        "m.toml",
        &format!(
            "[defaults]\nsignature_hash = \"sha256\"\ncsr = '''\n{pem}'''\n\
             [[orders]]\norder_id = 1\ncommon_name = \"A.example\"\n\
             [[orders]]\norder_id = 2\ncommon_name = \"b.EXAMPLE\"\n\
             [[orders]]\norder_id = 3\ncommon_name = \"c.example\"\n\
             [[orders]]\norder_id = 4\ncommon_name = \"c.example\"\ncsr = '''{key}'''\n"
        ),
    );
    let lines = error_lines(&path, &options());
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].ends_with(
            ": certificate.common_name: \"c.example\" is neither the CSR's common name nor one of its \
             DNS names (a.example, b.example); pass --allow-cn-mismatch to send it anyway"
        ),
        "{}",
        lines[0]
    );
    let allowed = LoadOptions {
        allow_cn_mismatch: true,
        ..options()
    };
    assert_eq!(bodies(&path, &allowed).len(), 4);
}

#[test]
fn public_key_is_sent_as_one_line_public_key_pem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = public_key_pem();
    let path = write(
        dir.path(),
        "m.toml",
        &format!("[[orders]]\norder_id = 1\nsignature_hash = \"sha256\"\ncsr = '''{key}'''\n"),
    );
    let body = bodies(&path, &options()).remove(0);
    assert_eq!(body["certificate"]["csr"], json!(one_line(&key)));
}

fn rule_errors(dir: &Path, fields: &str) -> Vec<String> {
    let path = write(
        dir,
        "r.toml",
        &format!("[[orders]]\norder_id = 1\nsignature_hash = \"sha256\"\n{fields}\n"),
    );
    error_lines(&path, &options())
        .into_iter()
        .map(|l| {
            l.split_once(": ")
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or(l)
        })
        .collect()
}

#[test]
fn ship_info_needs_all_its_required_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let complete = "ship_info = { name = \"J\", addr1 = \"1 Main\", city = \"Lehi\", state = \"UT\", \
                    zip = \"84043\", country = \"US\", method = \"STANDARD\" }";
    assert_eq!(rule_errors(dir.path(), complete), Vec::<String>::new());
    let errors = rule_errors(dir.path(), "ship_info.addr2 = \"Suite 1\"");
    assert_eq!(errors.len(), 7, "{errors:#?}");
    assert!(errors[0].starts_with("ship_info.name: required when ship_info is given"));
    let errors = rule_errors(
        dir.path(),
        &format!("{complete}\ncs_provisioning_method = \"email\""),
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("only used with cs_provisioning_method ship_token")),
        "{errors:#?}"
    );
}

#[test]
fn common_name_indicator_needs_the_individual_fields_it_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let errors = rule_errors(dir.path(), "common_name_indicator = \"given_name_surname\"");
    assert_eq!(
        errors,
        [
            "certificate.individual.first_name: required when common_name_indicator is given_name_surname",
            "certificate.individual.last_name: required when common_name_indicator is given_name_surname",
        ]
    );
    assert!(rule_errors(
        dir.path(),
        "common_name_indicator = \"given_name_surname\"\nindividual = { first_name = \"J\", last_name = \"D\" }"
    )
    .is_empty());
    assert_eq!(
        rule_errors(dir.path(), "common_name_indicator = \"pseudonym\""),
        ["certificate.individual.pseudonym: required when common_name_indicator is pseudonym"]
    );
    assert!(
        rule_errors(
            dir.path(),
            "common_name_indicator = \"pseudonym\"\nindividual.pseudonym = \"JD\""
        )
        .is_empty()
    );
    assert_eq!(
        rule_errors(dir.path(), "common_name_indicator = \"email_address\""),
        ["certificate.emails: required when common_name_indicator is email_address"]
    );
}

#[test]
fn subject_switches_need_what_they_include() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        rule_errors(dir.path(), "subject.include_given_name_surname = true").len(),
        2
    );
    assert_eq!(
        rule_errors(dir.path(), "subject.include_pseudonym = true").len(),
        1
    );
    assert!(rule_errors(dir.path(), "subject.include_pseudonym = false").is_empty());
    assert!(
        rule_errors(
            dir.path(),
            "subject.include_pseudonym = true\nindividual.pseudonym = \"JD\""
        )
        .is_empty()
    );
    assert_eq!(
        rule_errors(
            dir.path(),
            "subject.pseudonym = \"A\"\nindividual.pseudonym = \"B\""
        )
        .len(),
        1
    );
}

#[test]
fn code_signing_rules_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        rule_errors(dir.path(), "cs_provisioning_method = \"email\""),
        ["cs_provisioning_method: email needs a CSR (set csr or csr_file)"]
    );
    assert!(rule_errors(dir.path(), "cs_provisioning_method = \"client_app\"").is_empty());
    let errors = rule_errors(
        dir.path(),
        "cs_provisioning_method = \"client_app\"\ncommon_name = \"a.example\"",
    );
    assert_eq!(
        errors,
        [
            "certificate.common_name: omit common_name from Code Signing reissues (cs_provisioning_method is set)"
        ]
    );
    let key = public_key_pem();
    let errors = rule_errors(
        dir.path(),
        &format!("cs_provisioning_method = \"email\"\ncsr = '''{key}'''"),
    );
    assert_eq!(
        errors,
        ["certificate.csr: cs_provisioning_method email needs a CSR, not a bare public key"]
    );
    let pem = csr_pem("Code Signer", &[]);
    assert!(
        rule_errors(
            dir.path(),
            &format!("cs_provisioning_method = \"email\"\ncsr = '''{pem}'''")
        )
        .is_empty()
    );
}

#[test]
fn same_field_twice_in_one_order_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let errors = rule_errors(dir.path(), "certificate.signature_hash = \"sha384\"");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("certificate.signature_hash: set twice in one order (also on line")
    );
}

#[test]
fn the_sink_can_stop_the_scan_early() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = String::from("order_id,signature_hash\n");
    for id in 1..=5000 {
        text.push_str(&format!("{id},sha256\n"));
    }
    let path = write(dir.path(), "m.csv", &text);
    let mut seen = 0;
    let summary = scan(&path, &options(), |_| {
        seen += 1;
        if seen == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("loads");
    assert_eq!((seen, summary.valid), (3, 3));
    let all = scan_all(&path, &options()).expect("loads");
    let ids: Vec<u64> = all
        .iter()
        .map(|row| match row {
            Row::Valid(order) => order.order_id,
            Row::Invalid(_) => 0,
        })
        .collect();
    assert_eq!(
        ids,
        (1..=5000).collect::<Vec<_>>(),
        "rows arrive in file order"
    );
}

fn utf16(text: &str, little_endian: bool) -> Vec<u8> {
    std::iter::once(0xfeff)
        .chain(text.encode_utf16())
        .flat_map(|unit| {
            if little_endian {
                unit.to_le_bytes()
            } else {
                unit.to_be_bytes()
            }
        })
        .collect()
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test manifest");
    path
}

const COMMA_CSV: &str = "order_id,common_name,dns_names,signature_hash,comments\n\
    1,a.example,a.example;www.a.example,sha256,\"batch 1, east\"\n\
    2,b.example,,sha384,\n";

#[test]
fn a_semicolon_separated_csv_reads_as_the_comma_separated_one_with_comma_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let comma = write(dir.path(), "comma.csv", COMMA_CSV);
    let semicolon = write(
        dir.path(),
        "semicolon.csv",
        "order_id;common_name;dns_names;signature_hash;comments\r\n\
         1;a.example;a.example, www.a.example;sha256;batch 1, east\r\n\
         2;b.example;;sha384;\r\n",
    );
    let expected = bodies(&comma, &options());
    assert_eq!(
        expected[0]["certificate"]["dns_names"],
        json!(["a.example", "www.a.example"])
    );
    assert_eq!(bodies(&semicolon, &options()), expected);
}

#[test]
fn a_quoted_semicolon_list_in_a_semicolon_separated_csv_is_a_list_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.csv",
        "order_id;dns_names;signature_hash\n1;\"a.example;www.a.example\";sha256\n",
    );
    assert_eq!(
        bodies(&path, &options())[0]["certificate"]["dns_names"],
        json!(["a.example", "www.a.example"])
    );
}

#[test]
fn a_semicolon_separated_csv_reports_errors_on_their_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.csv",
        "order_id;dns_names;signature_hash\n\
         1;a.example,,b.example;sha256\n\
         2;c.example;sha256;extra\n\
         3;d.example;md5\n",
    );
    let file = path.display();
    assert_eq!(
        error_lines(&path, &options()),
        [
            format!(
                "{file}:2: certificate.dns_names: empty item in the ,-separated list \
                 \"a.example,,b.example\" (a doubled or trailing ,)"
            ),
            format!("{file}:3: row: has 4 cells but the header has 3 columns"),
            format!(
                "{file}:4: certificate.signature_hash: \"md5\" is not one of sha256, sha384, \
                 sha512 (Glossary – signature hashes)"
            ),
        ]
    );
}

#[test]
fn a_header_that_mixes_separators_or_uses_tabs_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mixed = write(
        dir.path(),
        "mixed.csv",
        "order_id;common_name,signature_hash\n1;a,sha256\n",
    );
    let Err(ManifestError::Fields(errors)) = scan_all(&mixed, &options()) else {
        panic!("expected header errors");
    };
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{}:1: order_id;common_name: unknown field (the header has both , and ; between \
             names: separate every column with the same one, , or ;)",
            mixed.display()
        )
    );
    let tabs = write(
        dir.path(),
        "tabs.csv",
        "order_id\tsignature_hash\n1\tsha256\n",
    );
    let Err(ManifestError::Fields(errors)) = scan_all(&tabs, &options()) else {
        panic!("expected header errors");
    };
    assert!(
        errors[0]
            .message
            .contains("the header is tab-separated: save the file as CSV"),
        "{errors:?}"
    );
}

#[test]
fn utf16_csv_with_a_byte_order_mark_reads_as_utf8_with_the_same_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let utf8 = write(dir.path(), "utf8.csv", COMMA_CSV);
    let expected = bodies(&utf8, &options());
    for little_endian in [true, false] {
        let path = write_bytes(dir.path(), "utf16.csv", &utf16(COMMA_CSV, little_endian));
        assert_eq!(bodies(&path, &options()), expected);
        let bad = write_bytes(
            dir.path(),
            "bad.csv",
            &utf16(
                "order_id;signature_hash\r\n1;sha256\r\n2;md4\r\n",
                little_endian,
            ),
        );
        let lines = error_lines(&bad, &options());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(&format!("{}:3: certificate.signature_hash:", bad.display())),
            "{lines:?}"
        );
    }
}

#[test]
fn utf16_without_a_byte_order_mark_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bare = utf16(COMMA_CSV, true).split_off(2);
    let path = write_bytes(dir.path(), "m.csv", &bare);
    let Err(err) = scan_all(&path, &options()) else {
        panic!("expected a refusal");
    };
    assert_eq!(
        err.to_string(),
        format!(
            "{}:1: header: the file looks like UTF-16 without a byte-order mark; save it as \
             UTF-8 (a spreadsheet's \"CSV UTF-8\"), or as UTF-16 with a byte-order mark",
            path.display()
        )
    );
    let toml = write_bytes(
        dir.path(),
        "m.toml",
        &utf16("[[orders]]\norder_id = 1\n", true).split_off(2),
    );
    let Err(err) = scan_all(&toml, &options()) else {
        panic!("expected a refusal");
    };
    assert!(
        err.to_string().starts_with(&format!(
            "{}:1: toml: the file looks like UTF-16",
            toml.display()
        )),
        "{err}"
    );
}

#[test]
fn a_utf8_byte_order_mark_before_a_quoted_header_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.csv",
        "\u{feff}\"order_id\",\"signature_hash\"\n\"1\",\"sha256\"\n",
    );
    assert_eq!(
        bodies(&path, &options()),
        [json!({"certificate": {"signature_hash": "sha256"}})]
    );
}

#[test]
fn toml_with_a_byte_order_mark_reads_in_utf8_and_utf16() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[[orders]]\norder_id = 1\ncomments = \"größer\"\nsignature_hash = \"sha256\"\n";
    let expected = [json!({"comments": "größer", "certificate": {"signature_hash": "sha256"}})];
    let utf8 = write(dir.path(), "utf8.toml", &format!("\u{feff}{text}"));
    assert_eq!(bodies(&utf8, &options()), expected);
    for little_endian in [true, false] {
        let path = write_bytes(dir.path(), "utf16.toml", &utf16(text, little_endian));
        assert_eq!(bodies(&path, &options()), expected);
    }
    let latin1 = write_bytes(
        dir.path(),
        "latin1.toml",
        b"[[orders]]\norder_id = 1\ncomments = \"gr\xF6\xDFer\"\n",
    );
    let Err(err) = scan_all(&latin1, &options()) else {
        panic!("expected a refusal");
    };
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3: toml: not valid UTF-8; save the file as UTF-8, or as UTF-16 with a \
             byte-order mark",
            latin1.display()
        )
    );
}

fn for_new_keys() -> LoadOptions {
    LoadOptions {
        purpose: Purpose::NewKey,
        ..options()
    }
}

#[test]
fn for_new_keys_order_ids_and_names_are_enough() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.csv",
        "order_id,common_name,dns_names\n\
         1,a.example,www.a.example\n\
         2,,b.example;www.b.example\n",
    );
    assert_eq!(
        bodies(&path, &for_new_keys()),
        [
            json!({"certificate": {"common_name": "a.example", "dns_names": ["www.a.example"]}}),
            json!({"certificate": {"dns_names": ["b.example", "www.b.example"]}}),
        ]
    );
    // The same manifest is not yet a reissue: signature_hash is required for that.
    let lines = error_lines(&path, &options());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("certificate.signature_hash: required"),
        "{lines:?}"
    );
}

#[test]
fn for_new_keys_the_reissues_rules_wait_and_the_old_csr_is_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.csv",
        "order_id,common_name,ship_info.city,common_name_indicator,csr_file\n\
         1,a.example,Lehi,pseudonym,gone/old.csr\n",
    );
    assert_eq!(bodies(&path, &for_new_keys()).len(), 1);
    assert!(error_lines(&path, &options()).len() >= 4);
}

#[test]
fn for_new_keys_order_ids_and_each_value_are_still_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.csv",
        "order_id,common_name,dns_names,server_platform.id\n\
         1,a.example,,2\n\
         x,b.example,,2\n\
         1,c.example,,2\n\
         4,d.example,not a name,two\n\
         ,e.example,,\n",
    );
    let file = path.display();
    let lines = error_lines(&path, &for_new_keys());
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines[0].starts_with(&format!("{file}:3: order_id: expected an integer")));
    assert_eq!(
        lines[1],
        format!("{file}:4: order_id: duplicate order_id 1; first on line 2")
    );
    assert!(lines[2].starts_with(&format!("{file}:5: certificate.dns_names:")));
    assert!(lines[3].starts_with(&format!("{file}:5: certificate.server_platform.id:")));
    assert_eq!(lines[4], format!("{file}:6: order_id: required"));
}

#[test]
fn csv_errors_name_the_right_line_whatever_the_line_endings_and_blank_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = csr_pem("example.com", &["example.com"]);
    // Lines: 1 blank, 2 header, 3 ok, 4 blank, 5 bad, from 6 a quoted multi-line CSR, then bad.
    let lf = format!(
        "\norder_id,csr,signature_hash\n1,,sha256\n\n2,,md5\n3,{},sha256\n4,,sha1",
        csv_quote(&pem)
    );
    // The row after the CSR starts one line below each line break inside the quoted cell.
    let last = 7 + pem.matches('\n').count() as u64;
    for (name, text) in [
        ("lf.csv", lf.clone()),
        ("crlf.csv", lf.replace('\n', "\r\n")),
        ("cr.csv", lf.replace('\n', "\r")),
    ] {
        let path = write(dir.path(), name, &text);
        let lines: Vec<u64> = scan_all(&path, &options())
            .expect("loads")
            .into_iter()
            .map(|row| match row {
                Row::Valid(order) => order.line,
                Row::Invalid(invalid) => {
                    assert_eq!(invalid.errors[0].line, invalid.line, "{name}");
                    invalid.line
                }
            })
            .collect();
        assert_eq!(lines, [3, 5, 6, last], "{name}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn scan_text(name: &str, bytes: &[u8]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let _ = scan_all(&path, &options());
    }

    const NAMES: &[&str] = &[
        "order_id",
        "csr",
        "csr_file",
        "common_name",
        "dns_names",
        "signature_hash",
        "server_platform.id",
        "cert_validity.days",
        "skip_approval",
        "ship_info.city",
        "subject.job_title",
        "certificate.emails",
        "nonsense",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            scan_text("r.csv", &bytes);
            scan_text("r.toml", &bytes);
        }

        #[test]
        fn plausible_csv_never_panics(
            columns in proptest::collection::vec(proptest::sample::select(NAMES), 1..6),
            cells in proptest::collection::vec(
                proptest::collection::vec("[a-z0-9.;@ *\"-]{0,12}", 0..7), 0..6),
        ) {
            let mut text = columns.join(",");
            text.push('\n');
            for row in cells {
                text.push_str(&row.join(","));
                text.push('\n');
            }
            scan_text("p.csv", text.as_bytes());
        }

        #[test]
        fn plausible_toml_never_panics(
            entries in proptest::collection::vec(
                (proptest::sample::select(NAMES), prop_oneof![
                    "-?[0-9]{1,20}".prop_map(|s| s),
                    "[a-z .@]{0,10}".prop_map(|s| format!("{s:?}")),
                    Just("true".to_owned()),
                    Just("[\"a.example\", 3]".to_owned()),
                    Just("{ id = 2 }".to_owned()),
                    Just("1.5".to_owned()),
                ]),
                0..8),
            header in prop_oneof![Just("[[orders]]"), Just("[defaults]"), Just("")],
        ) {
            let mut text = format!("{header}\n");
            for (name, value) in entries {
                text.push_str(&format!("{name} = {value}\n"));
            }
            scan_text("p.toml", text.as_bytes());
        }

        /// A valid order's body survives CSV → body → JSON: generate values, write the CSV,
        /// scan it, and compare with the JSON built directly from the generated values.
        #[test]
        fn valid_csv_values_survive_into_the_body(
            order_id in 1u64..1_000_000_000,
            hash in proptest::sample::select(&["sha256", "sha384", "sha512"][..]),
            dns in proptest::collection::vec("[a-z][a-z0-9-]{0,8}[a-z0-9]\\.example", 0..4),
            platform in proptest::option::of(-1i64..5000),
            days in proptest::option::of(1i64..=397),
            skip in proptest::option::of(any::<bool>()),
            comment in proptest::option::of("[A-Za-z0-9 ,.;'\"]{1,40}"),
            job_title in proptest::option::of("[\\p{L}0-9 ]{1,128}"),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut certificate = json!({"signature_hash": hash});
            let mut body = json!({});
            let mut cells = vec![order_id.to_string(), hash.to_uppercase()];
            if dns.is_empty() {
                cells.push(String::new());
            } else {
                cells.push(dns.join(";"));
                certificate["dns_names"] = json!(dns);
            }
            cells.push(platform.map(|p| p.to_string()).unwrap_or_default());
            if let Some(p) = platform { certificate["server_platform"] = json!({"id": p}); }
            cells.push(days.map(|d| d.to_string()).unwrap_or_default());
            if let Some(d) = days { certificate["cert_validity"] = json!({"days": d}); }
            cells.push(skip.map(|s| s.to_string()).unwrap_or_default());
            if let Some(s) = skip { body["skip_approval"] = json!(s); }
            let comment = comment.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
            cells.push(comment.clone().map(|c| csv_quote(&c)).unwrap_or_default());
            if let Some(c) = &comment { body["comments"] = json!(c); }
            let job_title = job_title.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
            cells.push(job_title.clone().map(|t| csv_quote(&t)).unwrap_or_default());
            if let Some(t) = &job_title { body["subject"] = json!({"job_title": t}); }
            body["certificate"] = certificate;

            let text = format!(
                "order_id,signature_hash,dns_names,server_platform.id,cert_validity.days,skip_approval,comments,subject.job_title\n{}\n",
                cells.join(",")
            );
            let path = write(dir.path(), "p.csv", &text);
            let rows = scan_all(&path, &options()).expect("loads");
            prop_assert_eq!(rows.len(), 1);
            let Row::Valid(order) = &rows[0] else {
                return Err(TestCaseError::fail(format!("invalid: {rows:?}")));
            };
            prop_assert_eq!(order.order_id, order_id);
            let printed = crate::payload::canonical_json(&order.body);
            let reparsed: Value = serde_json::from_str(&printed).expect("valid JSON");
            prop_assert_eq!(reparsed, body);
        }
    }
}
