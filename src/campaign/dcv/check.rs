//! `dcv check`: asks CertCentral to check domain control (`PUT …/check-dcv`) for every order of
//! a run whose reissue awaits it, under the limiter, and records what each check found, for the
//! order and for each of its names.
//!
//! "Not found yet" (`invalid_dns_txt`, `file_random_value_not_found`, …) is not a failure: the
//! order waits, and with a wait it is checked again with a growing interval. A token that has
//! run out — by the expiry CertCentral gave, 30 days after the reissue when it gave none, or by
//! CertCentral's answer — is replaced (`PUT …/dcv-random-value`) and recorded, so that
//! `report --dcv` shows the value to publish. A reissue whose answer was lost (found later by a
//! lookup) has no token in the journal; the same call fetches it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, Client, DcvCheck, Disposition, UntrustedServer};
use crate::journal::{DcvWaiting, Journal, JournalError, NameStatus, SentRequest};
use crate::limiter::Limiter;

const FIRST_INTERVAL: Duration = Duration::from_secs(2);
const LONGEST_INTERVAL: Duration = Duration::from_secs(300);
/// How long CertCentral's random values are valid when it has not said.
const TOKEN_LIFETIME: time::Duration = time::Duration::days(30);
/// A token this close to running out is replaced before the check, not after a refusal.
const TOKEN_MARGIN: time::Duration = time::Duration::minutes(5);

/// The codes of a check that found no token yet. The first two are documented; the others are
/// what other integrations report for the CNAME method and DNS lookups, tolerated in case.
const NOT_FOUND_YET: &[&str] = &[
    "invalid_dns_txt",
    "file_random_value_not_found",
    "invalid_dns_cname",
    "random_value_not_found",
    "dns_lookup_failed",
];

/// How `dcv check` runs.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// How long to keep checking orders that still wait; zero checks once.
    pub wait: Duration,
    pub concurrency: usize,
}

/// An order that still awaits domain control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingOrder {
    pub order_id: i64,
    /// CertCentral's last word (`invalid_dns_txt`, …), or `not checked`.
    pub reason: String,
    /// The names not validated yet, as far as known.
    pub names: Vec<String>,
}

/// What a `dcv check` achieved.
#[derive(Debug, Clone, Default)]
pub struct CheckSummary {
    /// Orders this command saw validated.
    pub validated: Vec<i64>,
    /// Orders still waiting, in order of the run.
    pub waiting: Vec<WaitingOrder>,
    /// Orders whose token was replaced or fetched: publish the new value.
    pub new_tokens: Vec<i64>,
    /// Requests that were made.
    pub requests: u64,
    pub interrupted: bool,
}

/// Why `dcv check` could not go on.
#[derive(Debug, thiserror::Error)]
pub enum DcvCheckError {
    /// CertCentral refused the key.
    #[error("CertCentral refused the credentials ({0})")]
    Credentials(String),
    /// The server's certificate is not trusted (an [`ApiError::Untrusted`]).
    #[error("cannot reach CertCentral")]
    Untrusted(#[source] ApiError),
    /// The journal failed.
    #[error("journal failure while checking DCV")]
    Journal(#[from] JournalError),
}

/// What one check answered, decided once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every name is validated.
    Validated {
        names: Vec<NameStatus>,
        certificate_id: Option<u64>,
    },
    /// The token was not found (yet) for some name.
    Waiting {
        reason: String,
        names: Vec<NameStatus>,
    },
    /// CertCentral says the token ran out.
    TokenExpired(String),
    /// 429/503: every request waits; checked again next round.
    Throttled(Option<Duration>),
    Credentials(String),
    /// The server's certificate is not trusted: nothing gets through; stop.
    Untrusted(Box<UntrustedServer>),
    /// No answer or a 5xx: checked again next round.
    Again(String),
    /// Another rejection (no such order, not a token order, …): reported, not checked again by
    /// this command.
    Refused(String),
}

/// Reads a check's answer.
pub(crate) fn verdict(result: Result<DcvCheck, ApiError>) -> Verdict {
    let err = match result {
        Ok(check) => return verdict_of_answer(check),
        Err(ApiError::Untrusted(server)) => return Verdict::Untrusted(server),
        Err(err) => err,
    };
    match err.disposition() {
        Disposition::StopCredentials => return Verdict::Credentials(err.to_string()),
        Disposition::Pause(wait) => return Verdict::Throttled(wait),
        _ => {}
    }
    let codes = match &err {
        ApiError::Status { status, errors, .. } if (400..500).contains(status) => errors,
        _ => return Verdict::Again(err.to_string()),
    };
    let kind = |code: &str| {
        code.split(['|', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    if let Some(expired) = codes.iter().find(|e| kind(&e.code).contains("expired")) {
        return Verdict::TokenExpired(expired.code.clone());
    }
    if let Some(found) = codes
        .iter()
        .find(|e| NOT_FOUND_YET.contains(&kind(&e.code).as_str()))
    {
        return Verdict::Waiting {
            reason: found.code.clone(),
            names: Vec::new(),
        };
    }
    Verdict::Refused(err.to_string())
}

fn verdict_of_answer(check: DcvCheck) -> Verdict {
    let names: Vec<NameStatus> = check
        .dns_name_validations
        .iter()
        .filter_map(|v| {
            Some(NameStatus {
                dns_name: v.dns_name.clone()?,
                status: v.status.clone().unwrap_or_else(|| "unknown".into()),
            })
        })
        .collect();
    let is = |value: &Option<String>, wanted: &[&str]| {
        value
            .as_deref()
            .is_some_and(|v| wanted.iter().any(|w| v.eq_ignore_ascii_case(w)))
    };
    let every_name_done = !names.is_empty()
        && names.iter().all(|n| {
            ["approved", "valid", "validated", "complete", "completed"]
                .iter()
                .any(|w| n.status.eq_ignore_ascii_case(w))
        });
    let issued = is(&check.order_status, &["issued"]);
    if is(
        &check.dcv_status,
        &["valid", "validated", "complete", "completed"],
    ) || issued
        || every_name_done
    {
        return Verdict::Validated {
            names,
            certificate_id: check.certificate_id.filter(|_| issued),
        };
    }
    Verdict::Waiting {
        reason: check
            .dcv_status
            .unwrap_or_else(|| "not validated yet".into()),
        names,
    }
}

/// Whether the token must be fetched or replaced before checking: there is none, or it runs
/// out (by the expiry CertCentral gave, or 30 days after the reissue was first sent).
pub(crate) fn needs_new_token(item: &DcvWaiting, now: OffsetDateTime) -> bool {
    if item.dcv_random_value.is_none() {
        return true;
    }
    let parse = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    };
    let runs_out = parse(&item.dcv_token_expires_at)
        .or_else(|| parse(&item.first_sent_at).map(|sent| sent + TOKEN_LIFETIME));
    runs_out.is_some_and(|at| at - TOKEN_MARGIN <= now)
}

/// A token CertCentral gave: its value and, when said, its expiry (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq)]
struct NewToken {
    value: String,
    expires_at: Option<String>,
}

/// One order's round: the token fetched or replaced (if any), and the check's verdict.
struct Checked {
    token: Option<NewToken>,
    verdict: Verdict,
    /// The requests made, for the journal (they seed the next command's rate windows).
    sent: Vec<SentRequest>,
}

/// Checks the run's orders that await DCV until none does, the wait is over, or `cancel`.
pub async fn check(
    journal: &Journal,
    client: &Client,
    limiter: &Arc<Limiter>,
    run_id: i64,
    options: &CheckOptions,
    cancel: &CancellationToken,
) -> Result<CheckSummary, DcvCheckError> {
    let deadline = Instant::now() + options.wait;
    let mut interval = FIRST_INTERVAL;
    let mut summary = CheckSummary::default();
    // Orders refused for another reason than "not found yet": not asked again by this command.
    let mut refused: HashSet<i64> = HashSet::new();
    loop {
        let items: Vec<DcvWaiting> = journal
            .dcv_waiting(run_id)
            .await?
            .into_iter()
            .filter(|item| !refused.contains(&item.id))
            .collect();
        if items.is_empty() {
            break;
        }
        let round_started = Instant::now();
        for (item, checked) in run_round(items, client, limiter, options.concurrency, cancel).await
        {
            summary.requests += checked.sent.len() as u64;
            for request in &checked.sent {
                journal.record_request(request).await?;
            }
            record(journal, &item, checked, &mut summary, &mut refused).await?;
        }
        summary.interrupted = cancel.is_cancelled();
        let open = journal
            .dcv_waiting(run_id)
            .await?
            .iter()
            .filter(|item| !refused.contains(&item.id))
            .count();
        // A round that started before the deadline is followed by one at the deadline at the
        // latest, so the wait's last moment is used.
        if open == 0 || summary.interrupted || round_started >= deadline {
            break;
        }
        tracing::info!(
            "{open} order(s) await DCV; checking again in {}",
            crate::config::format_duration(
                interval.min(deadline.saturating_duration_since(Instant::now()))
            )
        );
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep_until((Instant::now() + interval).min(deadline)) => {}
        }
        interval = (interval * 2).min(LONGEST_INTERVAL);
    }
    for item in journal.dcv_waiting(run_id).await? {
        summary.waiting.push(waiting_order(journal, &item).await?);
    }
    // Answers arrive in any order; reports list orders in order.
    summary.validated.sort_unstable();
    summary.new_tokens.sort_unstable();
    summary.new_tokens.dedup();
    Ok(summary)
}

/// Writes what one check found; a refused key ends the command.
async fn record(
    journal: &Journal,
    item: &DcvWaiting,
    checked: Checked,
    summary: &mut CheckSummary,
    refused: &mut HashSet<i64>,
) -> Result<(), DcvCheckError> {
    if let Some(token) = &checked.token {
        // Recorded even when the value is the same: its expiry is news.
        journal
            .record_dcv_token(item.id, &token.value, token.expires_at.as_deref())
            .await?;
        if item.dcv_random_value.as_deref() != Some(token.value.as_str()) {
            summary.new_tokens.push(item.order_id);
        }
    }
    match checked.verdict {
        Verdict::Validated {
            names,
            certificate_id,
        } => {
            journal
                .record_dcv_check(item.id, true, None, &names)
                .await?;
            if let Some(id) = certificate_id {
                journal.record_issue(item.id, "issued", Some(id)).await?;
            }
            summary.validated.push(item.order_id);
        }
        Verdict::Waiting { reason, names } => {
            journal
                .record_dcv_check(item.id, false, Some(&reason), &names)
                .await?;
        }
        Verdict::TokenExpired(code) => {
            let reason = match &checked.token {
                Some(_) => format!("{code}: a new token was issued; publish it"),
                None => code,
            };
            journal
                .record_dcv_check(item.id, false, Some(&reason), &[])
                .await?;
        }
        Verdict::Refused(why) => {
            tracing::warn!("order {}: check-dcv refused: {why}", item.order_id);
            journal
                .record_dcv_check(item.id, false, Some(&why), &[])
                .await?;
            refused.insert(item.id);
        }
        Verdict::Throttled(_) => {
            tracing::warn!("order {}: throttled; checked again", item.order_id);
        }
        Verdict::Again(why) => {
            tracing::warn!("order {}: {why}; checked again", item.order_id);
        }
        Verdict::Credentials(why) => return Err(DcvCheckError::Credentials(why)),
        Verdict::Untrusted(server) => {
            return Err(DcvCheckError::Untrusted(ApiError::Untrusted(server)));
        }
    }
    Ok(())
}

/// An order that waits, with its reason and the names not known to be validated.
async fn waiting_order(journal: &Journal, item: &DcvWaiting) -> Result<WaitingOrder, JournalError> {
    let checked = journal.dcv_names(item.id).await?;
    let approved = |status: &str| {
        ["approved", "valid", "validated", "complete", "completed"]
            .iter()
            .any(|w| status.eq_ignore_ascii_case(w))
    };
    let names: Vec<String> = if checked.is_empty() {
        payload_names(&item.payload)
    } else {
        checked
            .into_iter()
            .filter(|n| !approved(&n.status))
            .map(|n| n.dns_name)
            .collect()
    };
    Ok(WaitingOrder {
        order_id: item.order_id,
        reason: item
            .dcv_error
            .clone()
            .unwrap_or_else(|| "not checked".into()),
        names,
    })
}

/// The common name and DNS names of a reissue body, each once.
fn payload_names(payload: &str) -> Vec<String> {
    let body: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    let certificate = &body["certificate"];
    let mut names: Vec<String> = Vec::new();
    let candidates = certificate["common_name"].as_str().into_iter().chain(
        certificate["dns_names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str),
    );
    for name in candidates {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.to_owned());
        }
    }
    names
}

/// Checks `items`, `concurrency` at a time; the answers come back to the journal's owner.
async fn run_round(
    items: Vec<DcvWaiting>,
    client: &Client,
    limiter: &Arc<Limiter>,
    concurrency: usize,
    cancel: &CancellationToken,
) -> Vec<(DcvWaiting, Checked)> {
    let mut tasks = JoinSet::new();
    let mut queue = items.into_iter();
    let mut done = Vec::new();
    loop {
        while tasks.len() < concurrency.max(1) && !cancel.is_cancelled() {
            let Some(item) = queue.next() else { break };
            let client = client.clone();
            let limiter = limiter.clone();
            tasks.spawn(async move {
                let checked = check_one(&item, &client, &limiter).await;
                (item, checked)
            });
        }
        match tasks.join_next().await {
            Some(Ok(result)) => done.push(result),
            Some(Err(_)) => {}
            None => return done,
        }
    }
}

/// One order: a token first if it needs one, then the check, then a new token if the check
/// says the old one ran out.
async fn check_one(item: &DcvWaiting, client: &Client, limiter: &Limiter) -> Checked {
    let mut checked = Checked {
        token: None,
        verdict: Verdict::Again("not checked".into()),
        sent: Vec::new(),
    };
    if needs_new_token(item, OffsetDateTime::now_utc()) {
        match fetch_token(item, client, limiter, &mut checked).await {
            Ok(token) => checked.token = Some(token),
            Err(verdict) => {
                checked.verdict = verdict;
                return checked;
            }
        }
    }
    let permit = limiter.acquire().await;
    let result = client.check_dcv(item.order_id).await;
    let sent = crate::campaign::sent("check_dcv", Some(item.order_id), permit.end(), &result);
    checked.sent.push(sent);
    checked.verdict = verdict(result);
    if let Verdict::Throttled(wait) = checked.verdict {
        limiter.pause_for(wait.unwrap_or(Duration::from_secs(5)));
    }
    if matches!(checked.verdict, Verdict::TokenExpired(_)) && checked.token.is_none() {
        match fetch_token(item, client, limiter, &mut checked).await {
            Ok(token) => checked.token = Some(token),
            Err(verdict) => checked.verdict = verdict,
        }
    }
    checked
}

/// `PUT …/dcv-random-value`; an error comes back as the verdict for the order.
async fn fetch_token(
    item: &DcvWaiting,
    client: &Client,
    limiter: &Limiter,
    checked: &mut Checked,
) -> Result<NewToken, Verdict> {
    let permit = limiter.acquire().await;
    let result = client.dcv_random_value(item.order_id).await;
    let sent = crate::campaign::sent(
        "dcv_random_value",
        Some(item.order_id),
        permit.end(),
        &result,
    );
    checked.sent.push(sent);
    match result {
        Ok(token) => match token.dcv_random_value {
            Some(value) if !value.is_empty() => Ok(NewToken {
                value,
                expires_at: token.expiration_date,
            }),
            _ => Err(Verdict::Again("dcv-random-value answered no token".into())),
        },
        Err(err) => Err(match verdict(Err(err)) {
            Verdict::Throttled(wait) => {
                limiter.pause_for(wait.unwrap_or(Duration::from_secs(5)));
                Verdict::Throttled(wait)
            }
            // A refusal here is about the token, not a "not found yet".
            Verdict::Waiting { reason, .. } | Verdict::TokenExpired(reason) => {
                Verdict::Refused(format!("dcv-random-value: {reason}"))
            }
            other => other,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{NameValidation, ServiceError};

    fn status(code: u16, codes: &[&str]) -> Result<DcvCheck, ApiError> {
        Err(ApiError::Status {
            status: code,
            errors: codes
                .iter()
                .map(|c| ServiceError {
                    code: (*c).into(),
                    message: "m".into(),
                })
                .collect(),
            retry_after: None,
        })
    }

    fn answer(dcv_status: &str, order_status: &str, names: &[(&str, &str)]) -> DcvCheck {
        DcvCheck {
            order_status: Some(order_status.into()),
            certificate_id: Some(9),
            dcv_status: Some(dcv_status.into()),
            dns_name_validations: names
                .iter()
                .map(|(n, s)| NameValidation {
                    dns_name: Some((*n).into()),
                    status: Some((*s).into()),
                })
                .collect(),
        }
    }

    #[test]
    fn not_found_yet_codes_leave_the_order_waiting_and_other_refusals_are_reported() {
        for code in [
            "invalid_dns_txt",
            "file_random_value_not_found",
            "invalid_dns_cname|x",
        ] {
            assert!(
                matches!(verdict(status(400, &[code])), Verdict::Waiting { ref reason, .. } if reason == code),
                "{code}"
            );
        }
        assert!(matches!(
            verdict(status(400, &["expired_random_value"])),
            Verdict::TokenExpired(_)
        ));
        assert!(matches!(
            verdict(status(404, &["not_found|order"])),
            Verdict::Refused(_)
        ));
        assert!(matches!(verdict(status(403, &[])), Verdict::Credentials(_)));
        assert!(matches!(verdict(status(401, &[])), Verdict::Credentials(_)));
        assert_eq!(verdict(status(429, &[])), Verdict::Throttled(None));
        assert!(matches!(verdict(status(500, &[])), Verdict::Again(_)));
        let untrusted = ApiError::Untrusted(Box::new(UntrustedServer {
            host: "www.digicert.com".into(),
            refusal: crate::api::Refusal::UnknownIssuer,
            reason: "invalid peer certificate: UnknownIssuer".into(),
            subject: None,
            issuer: None,
            chain_issuer: None,
            not_after: None,
            trusted: Vec::new(),
        }));
        assert!(matches!(verdict(Err(untrusted)), Verdict::Untrusted(_)));
        assert!(matches!(
            verdict(status(502, &["invalid_dns_txt"])),
            Verdict::Again(_)
        ));
    }

    #[test]
    fn an_answer_is_validated_when_dcv_is_valid_the_order_issued_or_every_name_approved() {
        let valid = verdict(Ok(answer("valid", "reissue_pending", &[("a", "approved")])));
        assert_eq!(
            valid,
            Verdict::Validated {
                names: vec![NameStatus {
                    dns_name: "a".into(),
                    status: "approved".into()
                }],
                certificate_id: None
            }
        );
        assert!(matches!(
            verdict(Ok(answer("pending", "issued", &[]))),
            Verdict::Validated {
                certificate_id: Some(9),
                ..
            }
        ));
        assert!(matches!(
            verdict(Ok(answer(
                "pending",
                "reissue_pending",
                &[("a", "approved"), ("b", "Approved")]
            ))),
            Verdict::Validated { .. }
        ));
        assert!(matches!(
            verdict(Ok(answer("pending", "reissue_pending", &[("a", "approved"), ("b", "pending")]))),
            Verdict::Waiting { ref names, .. } if names.len() == 2
        ));
        assert!(matches!(
            verdict(Ok(DcvCheck::default())),
            Verdict::Waiting { .. }
        ));
    }

    fn waiting(token: Option<&str>, expires: Option<&str>, sent: Option<&str>) -> DcvWaiting {
        DcvWaiting {
            id: 1,
            order_id: 1,
            payload: "{}".into(),
            dcv_random_value: token.map(Into::into),
            dcv_token_expires_at: expires.map(Into::into),
            first_sent_at: sent.map(Into::into),
            dcv_error: None,
        }
    }

    #[test]
    fn a_token_is_fetched_when_missing_or_running_out_and_kept_otherwise() {
        let now = OffsetDateTime::parse("2026-12-02T12:00:00Z", &Rfc3339).expect("time");
        assert!(needs_new_token(&waiting(None, None, None), now));
        let fresh = waiting(Some("t"), None, Some("2026-12-01T12:00:00Z"));
        assert!(!needs_new_token(&fresh, now));
        let old = waiting(Some("t"), None, Some("2026-11-01T12:00:00Z"));
        assert!(needs_new_token(&old, now), "sent 31 days ago");
        let renewed = waiting(
            Some("t"),
            Some("2026-12-30T00:00:00Z"),
            Some("2026-11-01T12:00:00Z"),
        );
        assert!(!needs_new_token(&renewed, now), "the known expiry wins");
        let expiring = waiting(Some("t"), Some("2026-12-02T12:01:00Z"), None);
        assert!(needs_new_token(&expiring, now), "inside the margin");
        assert!(!needs_new_token(&waiting(Some("t"), None, None), now));
    }

    #[test]
    fn payload_names_are_the_common_name_and_dns_names_once_each() {
        let payload = r#"{"certificate":{"common_name":"a.example","dns_names":["A.example","www.a.example"]}}"#;
        assert_eq!(payload_names(payload), ["a.example", "www.a.example"]);
        assert!(payload_names("{}").is_empty());
    }
}
