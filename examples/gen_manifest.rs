//! Test material for manifests, made with rcgen; every private key is discarded at once.
//!
//! ```text
//! cargo run --example gen_manifest -- csr CN [DNS_NAME...]   # a P-256 CSR on stdout
//! cargo run --example gen_manifest -- public-key            # a P-256 public key on stdout
//! cargo run --release --example gen_manifest -- big ROWS DISTINCT > big.csv
//! ```
//!
//! `big` writes a CSV manifest of ROWS TLS orders with inline multi-line CSRs, cycling through
//! DISTINCT different CSRs (DISTINCT = ROWS for "every row has its own key"), for measuring
//! `reissuer validate`.

use std::io;

use rcgen::{CertificateParams, DnType, KeyPair};

fn csr(common_name: &str, dns_names: &[String]) -> String {
    let key = KeyPair::generate().expect("P-256 key generation");
    let mut params = CertificateParams::new(dns_names.to_vec()).expect("valid DNS names");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .serialize_request(&key)
        .expect("CSR serialisation")
        .pem()
        .expect("PEM encoding")
}

fn big(rows: u64, distinct: u64) -> io::Result<()> {
    let host = |i: u64| format!("host{i}.example.com");
    let csrs: Vec<String> = (0..distinct.min(rows))
        .map(|i| csr(&host(i), &[host(i), format!("www.{}", host(i))]))
        .collect();
    let stdout = io::stdout();
    let mut out = csv::Writer::from_writer(io::BufWriter::new(stdout.lock()));
    out.write_record([
        "order_id",
        "common_name",
        "dns_names",
        "csr",
        "server_platform.id",
        "signature_hash",
        "dcv_method",
        "skip_approval",
    ])?;
    for row in 0..rows {
        let which = row % distinct;
        let pem = &csrs[usize::try_from(which).expect("fits in memory")];
        out.write_record([
            (100_000 + row).to_string(),
            host(which),
            format!("{};www.{}", host(which), host(which)),
            pem.clone(),
            "2".to_owned(),
            "sha256".to_owned(),
            "dns-txt-token".to_owned(),
            "true".to_owned(),
        ])?;
    }
    out.flush()
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["csr", cn, dns @ ..] => {
            let dns: Vec<String> = dns.iter().map(|s| (*s).to_owned()).collect();
            print!("{}", csr(cn, &dns));
        }
        ["public-key"] => print!(
            "{}",
            KeyPair::generate()
                .expect("P-256 key generation")
                .public_key_pem()
        ),
        ["big", rows, distinct] => {
            let rows = rows.parse().expect("ROWS is a number");
            let distinct: u64 = distinct.parse().expect("DISTINCT is a number");
            big(rows, distinct.max(1))?;
        }
        _ => {
            eprintln!("usage: gen_manifest csr CN [DNS...] | public-key | big ROWS DISTINCT");
            std::process::exit(2);
        }
    }
    Ok(())
}
