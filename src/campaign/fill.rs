//! `--fill-from-order`: a manifest may name only `order_id` (and what it changes); the common
//! name, DNS names, server platform and signature hash come from the order's current
//! certificate. Explicit manifest values win. Facts are kept in the journal, so a rerun does
//! not fetch them again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::{ApiError, Client, Disposition, OrderInfo};
use crate::journal::{Journal, JournalError, OrderFacts, SentRequest};
use crate::limiter::Limiter;

/// Signature hashes the reissue page allows.
const SIGNATURE_HASHES: [&str; 3] = ["sha256", "sha384", "sha512"];

/// Why an order's facts could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// CertCentral refused the key; nothing more is asked.
    #[error("CertCentral refused the credentials while reading order {order_id}")]
    Credentials { order_id: u64 },
    /// The server's certificate is not trusted (an [`ApiError::Untrusted`]); nothing more is
    /// asked.
    #[error("cannot read order {order_id}")]
    Untrusted {
        order_id: u64,
        #[source]
        source: ApiError,
    },
    /// The journal failed.
    #[error("journal failure while filling from orders")]
    Journal(#[from] JournalError),
}

/// What the order's current certificate says.
pub fn facts_from(info: &OrderInfo) -> OrderFacts {
    let certificate = &info.certificate;
    OrderFacts {
        common_name: certificate.common_name.clone(),
        dns_names: certificate.dns_names.clone(),
        server_platform_id: certificate.server_platform.as_ref().and_then(|p| p.id),
        signature_hash: certificate
            .signature_hash
            .as_ref()
            .map(|hash| hash.to_ascii_lowercase()),
    }
}

/// Whether the body leaves any fillable field unset.
pub fn needs_facts(body: &Value) -> bool {
    let certificate = &body["certificate"];
    certificate.get("signature_hash").is_none()
        || certificate.pointer("/server_platform/id").is_none()
        || (!is_code_signing(body)
            && (certificate.get("common_name").is_none() || certificate.get("dns_names").is_none()))
}

/// Code-signing reissues carry no common name or DNS names (the reissue page).
fn is_code_signing(body: &Value) -> bool {
    body.get("cs_provisioning_method").is_some()
}

/// Fills every unset field that the facts know; set fields stay as they are.
pub fn fill(body: &mut Value, facts: &OrderFacts) {
    let code_signing = is_code_signing(body);
    let Some(certificate) = body
        .as_object_mut()
        .map(|body| body.entry("certificate").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if !code_signing {
        if let Some(name) = &facts.common_name
            && !certificate.contains_key("common_name")
        {
            certificate.insert("common_name".into(), json!(name));
        }
        if !facts.dns_names.is_empty() && !certificate.contains_key("dns_names") {
            certificate.insert("dns_names".into(), json!(facts.dns_names));
        }
    }
    if let Some(hash) = &facts.signature_hash
        && !certificate.contains_key("signature_hash")
    {
        certificate.insert("signature_hash".into(), json!(hash));
    }
    if let Some(id) = facts.server_platform_id {
        let platform = certificate
            .entry("server_platform")
            .or_insert_with(|| json!({}));
        if let Some(platform) = platform.as_object_mut()
            && !platform.contains_key("id")
        {
            platform.insert("id".into(), json!(id));
        }
    }
}

/// The checks the manifest could not make before the fill: the required signature hash, and
/// a common name that belongs to the CSR. Returns `(field, message)` pairs.
pub fn check_filled(body: &Value, allow_cn_mismatch: bool) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    let certificate = &body["certificate"];
    match certificate["signature_hash"].as_str() {
        None => problems.push((
            "certificate.signature_hash",
            "required (the reissue page), and the order did not give one".to_owned(),
        )),
        Some(hash) if !SIGNATURE_HASHES.contains(&hash) => problems.push((
            "certificate.signature_hash",
            format!("the order's {hash:?} is not one of sha256, sha384, sha512"),
        )),
        Some(_) => {}
    }
    if let (Some(name), Some(csr), false) = (
        certificate["common_name"].as_str(),
        certificate["csr"].as_str(),
        allow_cn_mismatch,
    ) && let Ok(info) = crate::manifest::csr::parse_csr(csr)
        && !info.is_public_key
    {
        let matches = info
            .common_name
            .iter()
            .chain(&info.dns_names)
            .any(|csr_name| csr_name.eq_ignore_ascii_case(name));
        if !matches {
            problems.push((
                "certificate.common_name",
                format!(
                    "{name:?} (from the order) is neither the CSR's CN nor one of its DNS names (--allow-cn-mismatch to accept)"
                ),
            ));
        }
    }
    problems
}

/// Facts for every order in `order_ids`: from the journal when known, else from CertCentral
/// (through the limiter, `concurrency` at a time), stored as they arrive, each request recorded.
/// An order that cannot be read maps to its error text.
pub async fn facts_for(
    order_ids: &[u64],
    client: &Client,
    limiter: &Arc<Limiter>,
    journal: &Journal,
    concurrency: usize,
) -> Result<HashMap<u64, Result<OrderFacts, String>>, FillError> {
    let mut known = HashMap::new();
    let mut to_fetch = Vec::new();
    for &order_id in order_ids {
        match journal.order_facts(order_id).await? {
            Some(facts) => {
                known.insert(order_id, Ok(facts));
            }
            None => to_fetch.push(order_id),
        }
    }
    let mut fetched = tokio::task::JoinSet::new();
    let mut queue = to_fetch.into_iter();
    loop {
        while fetched.len() < concurrency.max(1) {
            let Some(order_id) = queue.next() else { break };
            fetched.spawn(fetch(order_id, client.clone(), limiter.clone()));
        }
        let Some(joined) = fetched.join_next().await else {
            break;
        };
        let Ok((order_id, result, sent)) = joined else {
            continue;
        };
        journal.record_request(&sent).await?;
        match result {
            Ok(info) => {
                let facts = facts_from(&info);
                journal.store_order_facts(order_id, &facts).await?;
                known.insert(order_id, Ok(facts));
            }
            Err(err) if err.disposition() == Disposition::StopCredentials => {
                fetched.abort_all();
                return Err(FillError::Credentials { order_id });
            }
            Err(err) if err.disposition() == Disposition::StopUntrusted => {
                fetched.abort_all();
                return Err(FillError::Untrusted {
                    order_id,
                    source: err,
                });
            }
            Err(err) if matches!(err.disposition(), Disposition::Pause(_)) => {
                // Throttled: everyone waits, and this order is asked again.
                if let Disposition::Pause(wait) = err.disposition() {
                    limiter.pause_for(wait.unwrap_or(Duration::from_secs(5)));
                }
                fetched.spawn(fetch(order_id, client.clone(), limiter.clone()));
            }
            Err(err) => {
                known.insert(order_id, Err(describe(&err)));
            }
        }
    }
    Ok(known)
}

/// One order's info, through the limiter, with the journal's record of the request.
async fn fetch(
    order_id: u64,
    client: Client,
    limiter: Arc<Limiter>,
) -> (u64, Result<OrderInfo, ApiError>, SentRequest) {
    let id = i64::try_from(order_id).unwrap_or(i64::MAX);
    let permit = limiter.acquire().await;
    let result = client.order_info(id).await;
    let sent = super::sent("order_info", Some(id), permit.end(), &result);
    (order_id, result, sent)
}

fn describe(err: &ApiError) -> String {
    format!("cannot read the order to fill from it: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> OrderFacts {
        OrderFacts {
            common_name: Some("www.example.com".into()),
            dns_names: vec!["www.example.com".into(), "example.com".into()],
            server_platform_id: Some(45),
            signature_hash: Some("sha384".into()),
        }
    }

    #[test]
    fn unset_fields_are_filled_and_set_ones_win() {
        let mut body = json!({"certificate": {"csr": "x", "signature_hash": "sha256"}});
        assert!(needs_facts(&body));
        fill(&mut body, &facts());
        assert_eq!(
            body,
            json!({"certificate": {
                "csr": "x",
                "common_name": "www.example.com",
                "dns_names": ["www.example.com", "example.com"],
                "server_platform": {"id": 45},
                "signature_hash": "sha256",
            }})
        );
        assert!(!needs_facts(&body));
    }

    #[test]
    fn code_signing_gets_no_names() {
        let mut body = json!({"cs_provisioning_method": "email", "certificate": {}});
        fill(&mut body, &facts());
        assert!(body["certificate"].get("common_name").is_none());
        assert!(body["certificate"].get("dns_names").is_none());
        assert_eq!(body["certificate"]["signature_hash"], "sha384");
        assert!(!needs_facts(&body));
    }

    #[test]
    fn a_missing_or_odd_hash_is_reported_after_the_fill() {
        let body = json!({"certificate": {}});
        assert_eq!(
            check_filled(&body, false)[0].0,
            "certificate.signature_hash"
        );
        let body = json!({"certificate": {"signature_hash": "md5"}});
        assert!(check_filled(&body, false)[0].1.contains("md5"));
        let body = json!({"certificate": {"signature_hash": "sha256"}});
        assert!(check_filled(&body, false).is_empty());
    }
}
