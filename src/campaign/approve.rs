//! `approve`: approves the run's reissue requests that wait for approval
//! (`PUT /request/{id}/status` with `approved`), each exactly once.
//!
//! Which requests wait comes from one listing, `GET /request?filters[status]=pending`, all
//! pages, rather than one lookup per order. An item whose request is not pending is settled
//! (`not_waiting`): a request never becomes pending again, so a second `approve` sends nothing.
//!
//! Exactly once: the item is marked `sending` (committed) before the approval leaves and
//! `approved` when it is answered. A mark left by a crash, or an answer that was lost, is
//! settled by reading the request back (`GET /request/{id}`): approved means done; still
//! pending means the approval has not taken effect, and it is sent again (should a slow
//! CertCentral still act on the first, one of the two finds the request no longer pending and
//! is refused: a request is approved once); a failed read leaves the mark for the next
//! `approve`. Nothing is approved on a guess.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, Client, Disposition, RequestInfo};
use crate::journal::{ApprovalItem, ApprovalState, Journal, JournalError, SentRequest};
use crate::limiter::Limiter;

/// Requests per page of the pending list.
const PAGE: u64 = 1000;
/// Tries per approval (and per page) when throttled or not sent, before giving up for now.
const MAX_TRIES: u32 = 5;
/// CertCentral's clock and ours may differ; a pending request dated this long before the
/// reissue was first sent may still be its request.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// How `approve` runs.
#[derive(Debug, Clone)]
pub struct ApproveOptions {
    /// Sent as `processor_comment`.
    pub comment: Option<String>,
    pub concurrency: usize,
}

/// What an `approve` achieved.
#[derive(Debug, Clone, Default)]
pub struct ApproveSummary {
    /// Orders whose request this command approved.
    pub approved: Vec<i64>,
    /// Orders whose approval an earlier, interrupted `approve` had sent: found approved.
    pub found_approved: Vec<i64>,
    /// Orders found not waiting for approval.
    pub not_waiting: u64,
    /// Orders still waiting, or whose approval could not be settled, and why.
    pub left: Vec<(i64, String)>,
    /// Requests made.
    pub requests: u64,
    pub interrupted: bool,
}

/// Why `approve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    /// CertCentral refused the key, or the key may not approve.
    #[error("{0}")]
    Credentials(String),
    /// The pending requests could not be listed: nothing was approved.
    #[error("cannot list the pending requests: {0}")]
    List(String),
    /// The server's certificate is not trusted (an [`ApiError::Untrusted`]): nothing more is
    /// sent.
    #[error("CertCentral's certificate is not trusted")]
    Untrusted(#[source] ApiError),
    /// The journal failed.
    #[error("journal failure while approving")]
    Journal(#[from] JournalError),
}

/// The pending requests of the account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    requests: HashMap<i64, Option<i64>>,
    /// Order id → its pending requests (id and date).
    by_order: HashMap<i64, Vec<(i64, Option<String>)>>,
}

impl Pending {
    pub(crate) fn add(&mut self, request: &RequestInfo) {
        let Some(id) = request.id.and_then(|id| i64::try_from(id).ok()) else {
            return;
        };
        // Other kinds of request (a new order, a duplicate) are never a reissue's.
        if request
            .kind
            .as_deref()
            .is_some_and(|kind| kind != "reissue")
        {
            return;
        }
        let order_id = request
            .order
            .as_ref()
            .and_then(|order| order.id)
            .and_then(|id| i64::try_from(id).ok());
        self.requests.insert(id, order_id);
        if let Some(order_id) = order_id {
            self.by_order
                .entry(order_id)
                .or_default()
                .push((id, request.date.clone()));
        }
    }
}

/// What to do about one item, given the pending list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Approve(i64),
    /// Not pending: settled.
    NotWaiting,
    /// Its request id is not known and cannot be told apart from others on the order.
    Unclear(String),
}

/// Decides for an item that is not marked `sending`. An item whose answer was lost has no
/// request id: it takes the one pending reissue request of its order dated after it was sent.
pub(crate) fn decide(item: &ApprovalItem, pending: &Pending) -> Decision {
    if let Some(id) = item.request_id {
        return if pending.requests.contains_key(&id) {
            Decision::Approve(id)
        } else {
            Decision::NotWaiting
        };
    }
    let sent = item
        .first_sent_at
        .as_deref()
        .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok());
    let candidates: Vec<i64> = pending
        .by_order
        .get(&item.order_id)
        .into_iter()
        .flatten()
        .filter(|(_, date)| {
            let date = date
                .as_deref()
                .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok());
            match (date, sent) {
                (Some(date), Some(sent)) => date >= sent - CLOCK_SKEW,
                _ => true,
            }
        })
        .map(|(id, _)| *id)
        .collect();
    match candidates.as_slice() {
        [] => Decision::NotWaiting,
        [id] => Decision::Approve(*id),
        more => Decision::Unclear(format!(
            "{} pending requests for the order and no request id recorded; approve in the console",
            more.len()
        )),
    }
}

/// How one approval ended, after a read-back when its answer did not say.
#[derive(Debug)]
enum Attempt {
    Approved,
    /// Definitely not approved; `retry` when sending again may help.
    StillPending {
        why: String,
        retry: bool,
        http_status: Option<u16>,
    },
    /// No longer pending, but not by this approval (rejected, or approved elsewhere).
    NotPending {
        status: String,
    },
    Credentials(String),
    /// The server's certificate is not trusted: stop. `sent`: the approval may have left (the
    /// read-back failed), so the item stays `sending`.
    Untrusted {
        err: ApiError,
        sent: bool,
    },
    /// Could not be told: the item stays `sending` for the next `approve`.
    Unknown(String),
}

/// A request read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadBack {
    Approved,
    Pending,
    Other(String),
}

pub(crate) fn read_back(info: &RequestInfo) -> ReadBack {
    match info
        .status
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("approved") => ReadBack::Approved,
        Some("pending" | "submitted") => ReadBack::Pending,
        Some(other) => ReadBack::Other(other.to_owned()),
        None => ReadBack::Other("unknown".to_owned()),
    }
}

/// Approves the run's requests that wait, settling marks left by an earlier `approve` first.
pub async fn approve(
    journal: &Journal,
    client: &Client,
    limiter: &Arc<Limiter>,
    run_id: i64,
    options: &ApproveOptions,
    cancel: &CancellationToken,
) -> Result<ApproveSummary, ApproveError> {
    let mut summary = ApproveSummary::default();
    let items = journal.approval_items(run_id).await?;
    if items.is_empty() {
        return Ok(summary);
    }
    // Marks an interrupted approve left: read back, never sent blindly.
    for item in items
        .iter()
        .filter(|item| item.state == Some(ApprovalState::Sending))
    {
        let Some(request_id) = item.request_id else {
            continue;
        };
        let mut sent = Vec::new();
        let read = look_up(client, limiter, request_id, &mut sent).await;
        record_sent(journal, &sent, &mut summary).await?;
        match read {
            Ok(ReadBack::Approved) => {
                journal
                    .record_approval(item.item_id, None, ApprovalState::Approved, Some(200), None)
                    .await?;
                summary.found_approved.push(item.order_id);
            }
            Ok(ReadBack::Pending) => {
                journal
                    .record_approval(item.item_id, None, ApprovalState::Waiting, Some(200), None)
                    .await?;
            }
            Ok(ReadBack::Other(status)) => {
                let why = format!("request is {status}");
                journal
                    .record_approval(
                        item.item_id,
                        None,
                        ApprovalState::NotWaiting,
                        Some(200),
                        Some(&why),
                    )
                    .await?;
            }
            Err(err) if err.disposition() == Disposition::StopCredentials => {
                return Err(ApproveError::Credentials(err.to_string()));
            }
            Err(err) if err.disposition() == Disposition::StopUntrusted => {
                return Err(ApproveError::Untrusted(err));
            }
            Err(err) => {
                summary.left.push((
                    item.order_id,
                    format!("approval sent earlier, outcome still unknown: {err}"),
                ));
            }
        }
    }
    let pending = list_pending(journal, client, limiter, &mut summary).await?;
    let mut queue = Vec::new();
    for item in journal.approval_items(run_id).await? {
        if item.state == Some(ApprovalState::Sending) {
            continue; // could not be settled above; reported there
        }
        match decide(&item, &pending) {
            Decision::Approve(request_id) => queue.push((item, request_id, 0)),
            Decision::NotWaiting => {
                journal
                    .record_approval(
                        item.item_id,
                        item.request_id,
                        ApprovalState::NotWaiting,
                        None,
                        None,
                    )
                    .await?;
                summary.not_waiting += 1;
            }
            Decision::Unclear(why) => summary.left.push((item.order_id, why)),
        }
    }
    send_approvals(
        journal,
        client,
        limiter,
        queue,
        options,
        cancel,
        &mut summary,
    )
    .await?;
    summary.interrupted = cancel.is_cancelled();
    summary.approved.sort_unstable();
    summary.left.sort_unstable();
    Ok(summary)
}

/// Sends the approvals, `concurrency` at a time, each marked `sending` first.
async fn send_approvals(
    journal: &Journal,
    client: &Client,
    limiter: &Arc<Limiter>,
    mut queue: Vec<(ApprovalItem, i64, u32)>,
    options: &ApproveOptions,
    cancel: &CancellationToken,
    summary: &mut ApproveSummary,
) -> Result<(), ApproveError> {
    let mut running = JoinSet::new();
    let result = async {
        queue.reverse(); // popped from the end: in order of the run
        let mut refused: Option<ApproveError> = None;
        loop {
            while running.len() < options.concurrency.max(1)
                && refused.is_none()
                && !cancel.is_cancelled()
            {
                let Some((item, request_id, tries)) = queue.pop() else {
                    break;
                };
                journal
                    .mark_approving(item.item_id, request_id, options.comment.as_deref())
                    .await?;
                let (client, limiter, comment) =
                    (client.clone(), limiter.clone(), options.comment.clone());
                running.spawn(async move {
                    let (attempt, sent) =
                        send_one(&client, &limiter, request_id, comment.as_deref()).await;
                    (item, request_id, tries + 1, attempt, sent)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let Ok((item, request_id, tries, attempt, sent)) = joined else {
                continue;
            };
            record_sent(journal, &sent, summary).await?;
            let id = Some(request_id);
            match attempt {
                Attempt::Approved => {
                    journal
                        .record_approval(item.item_id, id, ApprovalState::Approved, Some(204), None)
                        .await?;
                    tracing::info!("order {}: request {request_id} approved", item.order_id);
                    summary.approved.push(item.order_id);
                }
                Attempt::StillPending {
                    why,
                    retry,
                    http_status,
                } => {
                    journal
                        .record_approval(
                            item.item_id,
                            id,
                            ApprovalState::Waiting,
                            http_status,
                            Some(&why),
                        )
                        .await?;
                    if retry && tries < MAX_TRIES {
                        queue.insert(0, (item, request_id, tries));
                    } else {
                        summary.left.push((item.order_id, why));
                    }
                }
                Attempt::NotPending { status } => {
                    let why = format!("request is {status}, not by this approval");
                    journal
                        .record_approval(
                            item.item_id,
                            id,
                            ApprovalState::NotWaiting,
                            None,
                            Some(&why),
                        )
                        .await?;
                    summary.not_waiting += 1;
                }
                Attempt::Credentials(why) => {
                    // Refused: certainly not approved.
                    journal
                        .record_approval(
                            item.item_id,
                            id,
                            ApprovalState::Waiting,
                            Some(403),
                            Some(&why),
                        )
                        .await?;
                    refused = Some(ApproveError::Credentials(why));
                }
                Attempt::Untrusted { err, sent } => {
                    if !sent {
                        journal
                            .record_approval(
                                item.item_id,
                                id,
                                ApprovalState::Waiting,
                                None,
                                Some(&err.to_string()),
                            )
                            .await?;
                    }
                    refused = Some(ApproveError::Untrusted(err));
                }
                Attempt::Unknown(why) => {
                    summary.left.push((
                        item.order_id,
                        format!("outcome unknown ({why}); the next approve reads it back"),
                    ));
                }
            }
        }
        match refused {
            Some(stop) => Err(stop),
            None => {
                for (item, _, _) in queue {
                    summary
                        .left
                        .push((item.order_id, "not sent (stopped)".into()));
                }
                Ok(())
            }
        }
    }
    .await;
    if result.is_err() {
        // Approvals on the wire are let end (within the request timeout), not cut off at an
        // unknown point while the lease is given up: the next approve reads them back.
        while running.join_next().await.is_some() {}
    }
    result
}

/// Counts the requests made and records them: they seed the next command's rate windows.
async fn record_sent(
    journal: &Journal,
    sent: &[SentRequest],
    summary: &mut ApproveSummary,
) -> Result<(), JournalError> {
    for request in sent {
        journal.record_request(request).await?;
        summary.requests += 1;
    }
    Ok(())
}

/// One approval, and a read-back when its answer does not say whether it took; with the
/// requests made.
async fn send_one(
    client: &Client,
    limiter: &Limiter,
    request_id: i64,
    comment: Option<&str>,
) -> (Attempt, Vec<SentRequest>) {
    let mut sent = Vec::new();
    let attempt = approve_or_read_back(client, limiter, request_id, comment, &mut sent).await;
    (attempt, sent)
}

async fn approve_or_read_back(
    client: &Client,
    limiter: &Limiter,
    request_id: i64,
    comment: Option<&str>,
    sent: &mut Vec<SentRequest>,
) -> Attempt {
    let permit = limiter.acquire().await;
    let result = client.approve_request(request_id, comment).await;
    sent.push(crate::campaign::sent(
        "approve_request",
        None,
        permit.end(),
        &result,
    ));
    let err = match result {
        Ok(()) => return Attempt::Approved,
        Err(err) => err,
    };
    match err.disposition() {
        Disposition::StopCredentials => return Attempt::Credentials(err.to_string()),
        // The handshake failed, so the approval never left; trusting the server is the
        // operator's move (`--ca-file`), and retrying in this run cannot help: stop.
        Disposition::StopUntrusted => return Attempt::Untrusted { err, sent: false },
        Disposition::Pause(wait) => {
            limiter.pause_for(wait.unwrap_or(Duration::from_secs(5)));
            return Attempt::StillPending {
                why: err.to_string(),
                retry: true,
                http_status: err.http_status(),
            };
        }
        Disposition::Unreachable => {
            return Attempt::StillPending {
                why: err.to_string(),
                retry: true,
                http_status: None,
            };
        }
        Disposition::Reconcile | Disposition::Fail => {}
    }
    // A 5xx or a lost answer may have approved it; a 4xx may mean someone else did.
    let retry = err.disposition() == Disposition::Reconcile;
    match look_up(client, limiter, request_id, sent).await {
        Ok(ReadBack::Approved) => Attempt::Approved,
        Ok(ReadBack::Pending) => Attempt::StillPending {
            why: err.to_string(),
            retry,
            http_status: err.http_status(),
        },
        Ok(ReadBack::Other(status)) => Attempt::NotPending { status },
        Err(read) if read.disposition() == Disposition::StopCredentials => {
            Attempt::Credentials(read.to_string())
        }
        Err(read) if read.disposition() == Disposition::StopUntrusted => Attempt::Untrusted {
            err: read,
            sent: true,
        },
        Err(read) => Attempt::Unknown(format!("{err}; reading it back: {read}")),
    }
}

/// `GET /request/{id}` under the limiter.
async fn look_up(
    client: &Client,
    limiter: &Limiter,
    request_id: i64,
    sent: &mut Vec<SentRequest>,
) -> Result<ReadBack, ApiError> {
    let permit = limiter.acquire().await;
    let result = client.request_info(request_id).await;
    sent.push(crate::campaign::sent(
        "request_info",
        None,
        permit.end(),
        &result,
    ));
    result.map(|info| read_back(&info))
}

/// Every page of the pending requests.
async fn list_pending(
    journal: &Journal,
    client: &Client,
    limiter: &Limiter,
    summary: &mut ApproveSummary,
) -> Result<Pending, ApproveError> {
    let mut pending = Pending::default();
    let mut offset = 0;
    let mut tries = 0;
    loop {
        let permit = limiter.acquire().await;
        let result = client.pending_requests(offset, PAGE).await;
        let sent = crate::campaign::sent("pending_requests", None, permit.end(), &result);
        record_sent(journal, &[sent], summary).await?;
        let page = match result {
            Ok(page) => page,
            Err(err) => match err.disposition() {
                Disposition::StopCredentials => {
                    return Err(ApproveError::Credentials(err.to_string()));
                }
                Disposition::StopUntrusted => return Err(ApproveError::Untrusted(err)),
                Disposition::Pause(_) | Disposition::Unreachable | Disposition::Reconcile
                    if tries + 1 < MAX_TRIES =>
                {
                    tries += 1;
                    if let Disposition::Pause(wait) = err.disposition() {
                        limiter.pause_for(wait.unwrap_or(Duration::from_secs(5)));
                    }
                    continue;
                }
                _ => return Err(ApproveError::List(err.to_string())),
            },
        };
        tries = 0;
        let count = u64::try_from(page.requests.len()).unwrap_or(u64::MAX);
        for request in &page.requests {
            pending.add(request);
        }
        offset += count;
        let total = page.page.total.unwrap_or(0);
        if count == 0 || offset >= total {
            return Ok(pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RequestInfo;

    fn request(id: u64, order: u64, kind: &str, date: &str) -> RequestInfo {
        serde_json::from_value(serde_json::json!({
            "id": id, "type": kind, "status": "pending", "date": date, "order": {"id": order}
        }))
        .expect("a request")
    }

    fn item(request_id: Option<i64>, order_id: i64) -> ApprovalItem {
        ApprovalItem {
            item_id: 1,
            order_id,
            request_id,
            state: None,
            first_sent_at: Some("2026-12-02T10:00:00Z".into()),
        }
    }

    #[test]
    fn a_known_request_is_approved_only_while_pending() {
        let mut pending = Pending::default();
        pending.add(&request(7, 70, "reissue", "2026-12-02T10:00:01+00:00"));
        pending.add(&request(8, 80, "new_request", "2026-12-02T10:00:01+00:00"));
        assert_eq!(decide(&item(Some(7), 70), &pending), Decision::Approve(7));
        assert_eq!(decide(&item(Some(9), 70), &pending), Decision::NotWaiting);
        assert_eq!(
            decide(&item(Some(8), 80), &pending),
            Decision::NotWaiting,
            "not a reissue's request"
        );
    }

    #[test]
    fn an_unknown_request_id_is_taken_only_when_one_pending_reissue_fits() {
        let mut pending = Pending::default();
        pending.add(&request(7, 70, "reissue", "2026-12-02T10:00:01+00:00"));
        pending.add(&request(5, 70, "reissue", "2026-11-01T10:00:01+00:00"));
        assert_eq!(
            decide(&item(None, 70), &pending),
            Decision::Approve(7),
            "the older is not ours"
        );
        pending.add(&request(9, 70, "reissue", "2026-12-02T10:01:00+00:00"));
        assert!(matches!(
            decide(&item(None, 70), &pending),
            Decision::Unclear(_)
        ));
        assert_eq!(decide(&item(None, 71), &pending), Decision::NotWaiting);
    }

    #[test]
    fn a_read_back_is_approved_pending_or_something_else() {
        let info = |status: &str| RequestInfo {
            status: Some(status.into()),
            ..RequestInfo::default()
        };
        assert_eq!(read_back(&info("approved")), ReadBack::Approved);
        assert_eq!(read_back(&info("Pending")), ReadBack::Pending);
        assert_eq!(read_back(&info("submitted")), ReadBack::Pending);
        assert_eq!(
            read_back(&info("rejected")),
            ReadBack::Other("rejected".into())
        );
        assert_eq!(
            read_back(&RequestInfo::default()),
            ReadBack::Other("unknown".into())
        );
    }
}
