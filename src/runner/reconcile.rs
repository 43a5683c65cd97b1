//! Deciding whether a reissue whose answer was lost did arrive: CertCentral's reissue list for
//! the order holds an entry with the CSR this item sent, created after its first attempt
//! (pending or issued: ours whenever it appears). For a payload without a CSR, the order's
//! requests hold a reissue request from after that time, or the order is `reissue_pending`
//! without an older reissue request to account for it.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::api::{
    ApiError, Client, Disposition, Reach, ReissueEntry, UntrustedServer, error_chain,
};
use crate::limiter::Limiter;

/// CertCentral's clock and ours may differ; a reissue created this long before our first
/// attempt still counts as ours.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The answer of one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The reissue is there.
    Found {
        request_id: Option<u64>,
        certificate_id: Option<u64>,
    },
    /// CertCentral clearly has no such reissue: it was not received.
    NotFound,
    /// The lookup failed; nothing can be said.
    Undecided(String),
    /// CertCentral did not answer the lookup (a 5xx, no answer, or no connection at all): it
    /// says nothing about the order, maybe something about CertCentral. `unreachable`: the
    /// request never left.
    NoContact { why: String, unreachable: bool },
    /// The lookup was throttled; try again after the pause.
    Throttled(Option<Duration>),
    /// The key was refused.
    Credentials,
    /// The server's certificate was refused: the lookup never reached CertCentral.
    Untrusted(Box<UntrustedServer>),
}

/// One GET made for the lookup, for the journal.
#[derive(Debug, Clone)]
pub struct LookupRecord {
    pub kind: &'static str,
    pub http_status: Option<u16>,
    pub outcome: String,
    /// When the GET left.
    pub started: std::time::Instant,
    pub duration: Duration,
}

/// What is looked up: the order, the body that was sent, and when it was first sent.
#[derive(Debug, Clone)]
pub struct Target {
    pub order_id: i64,
    pub payload: String,
    /// RFC 3339, as the journal wrote it.
    pub first_sent_at: Option<String>,
}

/// Looks the target up through the limiter; every GET is counted like any request.
pub async fn look_up(
    client: &Client,
    limiter: &Limiter,
    target: &Target,
) -> (Verdict, LookupRecord) {
    let sent_after = target
        .first_sent_at
        .as_deref()
        .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok())
        .map(|at| at - CLOCK_SKEW);
    let csr = serde_json::from_str::<serde_json::Value>(&target.payload)
        .ok()
        .and_then(|body| body["certificate"]["csr"].as_str().map(csr_body));
    let permit = limiter.acquire().await;
    let started = std::time::Instant::now();
    let (kind, result) = match csr {
        Some(csr) => (
            "reissue_list",
            client
                .reissue_list(target.order_id)
                .await
                .map(|entries| find_by_csr(&entries, &csr, sent_after)),
        ),
        None => (
            "order_info",
            client
                .order_info(target.order_id)
                .await
                .map(|info| find_request(&info, sent_after)),
        ),
    };
    let duration = started.elapsed();
    // Held until the answer is in: until then the GET may still be arriving.
    drop(permit);
    let (verdict, http_status) = match result {
        Ok(verdict) => (verdict, Some(200)),
        Err(err) => (verdict_for_error(&err), err.http_status()),
    };
    let outcome = match &verdict {
        Verdict::Found { .. } => "found".to_owned(),
        Verdict::NotFound => "not found".to_owned(),
        Verdict::Undecided(why) => format!("undecided: {why}"),
        Verdict::NoContact { why, .. } => format!("no answer: {why}"),
        Verdict::Throttled(_) => "throttled".to_owned(),
        Verdict::Credentials => "credentials refused".to_owned(),
        Verdict::Untrusted(server) => server.to_string(),
    };
    (
        verdict,
        LookupRecord {
            kind,
            http_status,
            outcome,
            started,
            duration,
        },
    )
}

fn verdict_for_error(err: &ApiError) -> Verdict {
    if let ApiError::Untrusted(server) = err {
        return Verdict::Untrusted(server.clone());
    }
    match (err.disposition(), err.http_status()) {
        (Disposition::StopCredentials, _) => Verdict::Credentials,
        (Disposition::Pause(wait), _) => Verdict::Throttled(wait),
        // No such order: a reissue of it cannot have been accepted.
        (_, Some(404)) => Verdict::NotFound,
        _ => match err.reach() {
            Reach::Answered => Verdict::Undecided(error_chain(err)),
            reach => Verdict::NoContact {
                why: err.brief(),
                unreachable: reach == Reach::Unreachable,
            },
        },
    }
}

/// The base64 body of a PEM text, whatever its line breaks: how two CSRs are compared.
pub(crate) fn csr_body(pem: &str) -> String {
    pem.replace("\\n", "\n")
        .lines()
        .flat_map(|line| line.split("-----"))
        .filter(|part| !part.trim().is_empty() && !part.contains("BEGIN") && !part.contains("END"))
        .flat_map(|part| part.split_whitespace())
        .collect()
}

fn created_after(date: Option<&str>, after: Option<OffsetDateTime>) -> bool {
    let (Some(date), Some(after)) = (date, after) else {
        // Without both times the CSR match alone decides.
        return true;
    };
    OffsetDateTime::parse(date, &Rfc3339).map_or(true, |created| created >= after)
}

fn find_by_csr(entries: &[ReissueEntry], csr: &str, after: Option<OffsetDateTime>) -> Verdict {
    entries
        .iter()
        .find(|entry| {
            entry.csr.as_deref().map(csr_body).as_deref() == Some(csr)
                && created_after(entry.date_created.as_deref(), after)
        })
        .map_or(Verdict::NotFound, |entry| Verdict::Found {
            request_id: None,
            certificate_id: entry.id,
        })
}

fn find_request(info: &crate::api::OrderInfo, after: Option<OffsetDateTime>) -> Verdict {
    let mut reissues = info
        .requests
        .iter()
        .filter(|request| request.kind.as_deref() == Some("reissue"));
    if let Some(request) = reissues
        .clone()
        .find(|request| after.is_some() && created_after(request.date.as_deref(), after))
    {
        return Verdict::Found {
            request_id: request.id,
            certificate_id: None,
        };
    }
    // A reissue is pending on the order and no older, dated reissue request accounts for it:
    // it is ours (the order's request list may lag behind its status).
    let older_pending = reissues.any(|request| {
        request.status.as_deref() == Some("pending")
            && request.date.is_some()
            && !created_after(request.date.as_deref(), after)
    });
    if info.status == "reissue_pending" && !older_pending {
        return Verdict::Found {
            request_id: None,
            certificate_id: None,
        };
    }
    Verdict::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(csr: &str, date: &str) -> ReissueEntry {
        ReissueEntry {
            id: Some(9),
            status: Some("pending".into()),
            date_created: Some(date.into()),
            csr: Some(csr.into()),
        }
    }

    #[test]
    fn csr_bodies_compare_equal_whatever_the_line_breaks() {
        let one_line =
            "-----BEGIN CERTIFICATE REQUEST-----QUJD REVG-----END CERTIFICATE REQUEST-----";
        let wrapped = "-----BEGIN CERTIFICATE REQUEST-----\r\nQUJD\r\nREVG\r\n-----END CERTIFICATE REQUEST-----\r\n";
        assert_eq!(csr_body(one_line), "QUJDREVG");
        assert_eq!(csr_body(wrapped), "QUJDREVG");
    }

    #[test]
    fn a_matching_csr_created_after_the_first_attempt_is_found() {
        let after = OffsetDateTime::parse("2026-11-23T10:00:00Z", &Rfc3339).ok();
        let pem = "-----BEGIN CERTIFICATE REQUEST-----QUJD-----END CERTIFICATE REQUEST-----";
        let found = find_by_csr(&[entry(pem, "2026-11-23T10:00:01+00:00")], "QUJD", after);
        assert_eq!(
            found,
            Verdict::Found {
                request_id: None,
                certificate_id: Some(9)
            }
        );
        let older = find_by_csr(&[entry(pem, "2026-11-22T10:00:01+00:00")], "QUJD", after);
        assert_eq!(older, Verdict::NotFound);
        let other = find_by_csr(&[entry(pem, "2026-11-23T10:00:01+00:00")], "WFla", after);
        assert_eq!(other, Verdict::NotFound);
    }

    #[test]
    fn a_reissue_of_our_csr_is_ours_pending_or_issued() {
        let after = OffsetDateTime::parse("2026-11-23T10:00:00Z", &Rfc3339).ok();
        let pem = "-----BEGIN CERTIFICATE REQUEST-----QUJD-----END CERTIFICATE REQUEST-----";
        let pending = entry(pem, "2026-11-23T10:00:05+00:00");
        let issued = ReissueEntry {
            status: Some("issued".into()),
            ..pending.clone()
        };
        for found in [pending, issued] {
            assert!(matches!(
                find_by_csr(&[found], "QUJD", after),
                Verdict::Found { .. }
            ));
        }
    }

    #[test]
    fn an_order_pending_a_reissue_that_no_older_request_explains_holds_ours() {
        let after = OffsetDateTime::parse("2026-11-23T10:00:00Z", &Rfc3339).ok();
        let info = |status: &str, requests: serde_json::Value| -> crate::api::OrderInfo {
            serde_json::from_value(serde_json::json!({
                "id": 5, "status": status, "requests": requests,
            }))
            .expect("order info")
        };
        let none = serde_json::json!([]);
        // Before our first attempt (minus the clock skew allowed): someone else's.
        let older = serde_json::json!([{"id": 77, "date": "2026-11-20T10:00:00+00:00",
                                        "type": "reissue", "status": "pending"}]);
        let newer = serde_json::json!([{"id": 78, "date": "2026-11-23T10:00:09+00:00",
                                        "type": "reissue", "status": "pending"}]);
        assert_eq!(
            find_request(&info("issued", none.clone()), after),
            Verdict::NotFound
        );
        assert!(matches!(
            find_request(&info("reissue_pending", none), after),
            Verdict::Found { .. }
        ));
        assert_eq!(
            find_request(&info("reissue_pending", older), after),
            Verdict::NotFound
        );
        assert_eq!(
            find_request(&info("reissue_pending", newer), after),
            Verdict::Found {
                request_id: Some(78),
                certificate_id: None
            }
        );
    }
}
