//! `collect`: waits for a run's reissues to be issued, downloads each certificate, checks that
//! its leaf carries the public key of the CSR that was sent, and writes `DIR/<order_id>.pem`.
//!
//! Polling goes through the limiter with a growing interval, and every request is recorded in
//! the journal: the first round asks each order's reissue list; later rounds ask the
//! status-changes list once and look only at orders it names. A certificate already on disk (a
//! collect killed after writing it) is recognised by its key and recorded, not downloaded again.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, Client, Disposition};
use crate::journal::{Collectable, Journal, JournalError, SentRequest};
use crate::limiter::Limiter;
use crate::runner::reconcile::csr_body;

const FIRST_POLL: Duration = Duration::from_secs(2);
const LONGEST_POLL: Duration = Duration::from_secs(60);

/// How `collect` runs.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    pub out: PathBuf,
    /// How long to wait for reissues to be issued; zero looks once.
    pub wait: Duration,
    pub concurrency: usize,
    /// Told the item id of each certificate once it is written and recorded (the deploy hooks
    /// listen here).
    pub written: Option<tokio::sync::mpsc::UnboundedSender<i64>>,
}

/// What a collect achieved.
#[derive(Debug, Clone, Default)]
pub struct CollectSummary {
    /// Certificates written (or found already written) by this collect.
    pub downloaded: Vec<(i64, PathBuf)>,
    /// Orders not issued yet, with CertCentral's status (`pending`, `needs_approval`, ...).
    pub waiting: Vec<(i64, String)>,
    /// Orders whose certificate could not be taken, and why.
    pub problems: Vec<(i64, String)>,
    /// Interrupted by a signal.
    pub interrupted: bool,
}

/// Why a collect could not go on.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// CertCentral refused the key.
    #[error("CertCentral refused the credentials")]
    Credentials,
    /// The server's certificate is not trusted (an [`ApiError::Untrusted`]).
    #[error("cannot reach CertCentral")]
    Untrusted(#[source] ApiError),
    /// The output directory cannot be made.
    #[error("cannot create {path}")]
    OutDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The journal failed.
    #[error("journal failure while collecting")]
    Journal(#[from] JournalError),
}

/// What one step learned about one item.
enum Step {
    /// On disk now at this path (written, or found there with the right key).
    Written(PathBuf, Option<u64>),
    /// Not issued yet: CertCentral's status, and the certificate id once known.
    Waiting(String, Option<u64>),
    /// Cannot be taken (no CSR to check against, wrong key, unreadable answer...).
    Problem(String),
    /// A transient failure: try again next round.
    Again(String),
    Credentials,
    /// An [`ApiError::Untrusted`]: stop.
    Untrusted(ApiError),
}

pub async fn collect(
    journal: &Journal,
    client: &Client,
    limiter: &Arc<Limiter>,
    run_id: i64,
    options: &CollectOptions,
    cancel: &CancellationToken,
) -> Result<CollectSummary, CollectError> {
    create_private_dir(&options.out)?;
    let deadline = Instant::now() + options.wait;
    let mut summary = CollectSummary::default();
    let mut poll = FIRST_POLL;
    let mut round_started = Instant::now();
    let mut changed: Option<HashSet<i64>> = None;
    loop {
        let items = journal.collectable(run_id).await?;
        let to_check: Vec<Collectable> = items
            .into_iter()
            .filter(|item| match &changed {
                // First round: every item, problems too, so this collect reports them.
                None => true,
                Some(changed) => {
                    item.issue_status.as_deref() != Some("problem")
                        && (item.issued_certificate_id.is_some()
                            || changed.contains(&item.order_id))
                }
            })
            .collect();
        summary.waiting.clear();
        let this_round = Instant::now();
        for (item, step) in run_steps(to_check, journal, client, limiter, options, cancel).await? {
            match step {
                Step::Written(path, certificate_id) => {
                    if let Some(id) = certificate_id {
                        journal.record_issue(item.id, "issued", Some(id)).await?;
                    }
                    journal
                        .record_download(item.id, &path.display().to_string())
                        .await?;
                    if let Some(written) = &options.written {
                        // A closed channel means no hooks are listening any more.
                        let _ = written.send(item.id);
                    }
                    summary.downloaded.push((item.order_id, path));
                }
                Step::Waiting(status, certificate_id) => {
                    journal
                        .record_issue(item.id, &status, certificate_id)
                        .await?;
                }
                Step::Problem(why) => {
                    journal.record_issue(item.id, "problem", None).await?;
                    summary.problems.push((item.order_id, why));
                }
                Step::Again(why) => tracing::warn!("order {}: {why}; tried again", item.order_id),
                Step::Credentials => return Err(CollectError::Credentials),
                Step::Untrusted(server) => return Err(CollectError::Untrusted(server)),
            }
        }
        let remaining = journal.collectable(run_id).await?;
        let open: Vec<&Collectable> = remaining
            .iter()
            .filter(|item| item.issue_status.as_deref() != Some("problem"))
            .collect();
        if open.is_empty() || Instant::now() >= deadline || cancel.is_cancelled() {
            summary.interrupted = cancel.is_cancelled();
            for item in open {
                let status = waiting_status(item, journal, client, limiter).await?;
                if let Some(status) = &status {
                    journal.record_issue(item.id, status, None).await?;
                }
                let status = status
                    .or_else(|| item.issue_status.clone())
                    .unwrap_or_else(|| "pending".into());
                summary.waiting.push((item.order_id, status));
            }
            return Ok(summary);
        }
        tracing::info!(
            "{} certificate(s) not issued yet; looking again in {}",
            open.len(),
            crate::config::format_duration(poll)
        );
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep_until((Instant::now() + poll).min(deadline)) => {}
        }
        poll = (poll * 2).min(LONGEST_POLL);
        // Which orders changed since the last round began: one call instead of one per order.
        let minutes = round_started.elapsed().as_secs() / 60 + 1;
        round_started = this_round;
        let permit = limiter.acquire().await;
        let result = client.status_changes(minutes).await;
        journal
            .record_request(&super::sent("status_changes", None, permit.end(), &result))
            .await?;
        changed = match result {
            Ok(changes) => Some(
                changes
                    .iter()
                    .filter_map(|c| c.order_id.and_then(|id| i64::try_from(id).ok()))
                    .collect(),
            ),
            Err(err) if err.disposition() == Disposition::StopCredentials => {
                return Err(CollectError::Credentials);
            }
            Err(err) if err.disposition() == Disposition::StopUntrusted => {
                return Err(CollectError::Untrusted(err));
            }
            // Without the list, every order is asked directly.
            Err(_) => None,
        };
    }
}

/// Runs the items' steps, `concurrency` at a time; each request is recorded as its step ends.
async fn run_steps(
    items: Vec<Collectable>,
    journal: &Journal,
    client: &Client,
    limiter: &Arc<Limiter>,
    options: &CollectOptions,
    cancel: &CancellationToken,
) -> Result<Vec<(Collectable, Step)>, JournalError> {
    let mut tasks = JoinSet::new();
    let mut queue = items.into_iter();
    let mut done = Vec::new();
    loop {
        while tasks.len() < options.concurrency.max(1) && !cancel.is_cancelled() {
            let Some(item) = queue.next() else { break };
            let client = client.clone();
            let limiter = limiter.clone();
            let out = options.out.clone();
            tasks.spawn(async move {
                let mut sent = Vec::new();
                let step = step(&item, &client, &limiter, &out, &mut sent).await;
                (item, step, sent)
            });
        }
        match tasks.join_next().await {
            Some(Ok((item, step, sent))) => {
                for request in &sent {
                    journal.record_request(request).await?;
                }
                done.push((item, step));
            }
            Some(Err(_)) => {}
            None => return Ok(done),
        }
    }
}

/// One item's way to its certificate; the requests it made go to `sent`.
async fn step(
    item: &Collectable,
    client: &Client,
    limiter: &Limiter,
    out: &Path,
    sent: &mut Vec<SentRequest>,
) -> Step {
    let Some(csr) = serde_json::from_str::<serde_json::Value>(&item.payload)
        .ok()
        .and_then(|body| body["certificate"]["csr"].as_str().map(str::to_owned))
    else {
        return Step::Problem(
            "the reissue carried no CSR, so no certificate can be checked".into(),
        );
    };
    let Ok(csr_info) = crate::manifest::csr::parse_csr(&csr) else {
        return Step::Problem("the CSR that was sent no longer parses".into());
    };
    let path = out.join(format!("{}.pem", item.order_id));
    if let Ok(existing) = std::fs::read_to_string(&path)
        && leaf_key(&existing).as_deref() == Some(&csr_info.public_key_der[..])
    {
        return Step::Written(path, None);
    }
    let certificate_id = match item
        .issued_certificate_id
        .and_then(|id| u64::try_from(id).ok())
    {
        Some(id) => id,
        None => {
            let permit = limiter.acquire().await;
            let result = client.reissue_list(item.order_id).await;
            sent.push(super::sent(
                "reissue_list",
                Some(item.order_id),
                permit.end(),
                &result,
            ));
            let entries = match result {
                Ok(entries) => entries,
                Err(err) => return failed(err, limiter),
            };
            let wanted = csr_body(&csr);
            let Some(entry) = entries
                .iter()
                .rev()
                .find(|entry| entry.csr.as_deref().map(csr_body).as_deref() == Some(&wanted))
            else {
                return Step::Waiting("pending".into(), None);
            };
            let status = entry.status.clone().unwrap_or_else(|| "pending".into());
            match (status.as_str(), entry.id) {
                ("issued", Some(id)) => id,
                _ => return Step::Waiting(status, entry.id),
            }
        }
    };
    let permit = limiter.acquire().await;
    let result = client.download_pem(certificate_id).await;
    sent.push(super::sent(
        "download",
        Some(item.order_id),
        permit.end(),
        &result,
    ));
    let pem = match result {
        Ok(pem) => pem,
        Err(err) => return failed(err, limiter),
    };
    match leaf_key(&pem) {
        Some(key) if key == csr_info.public_key_der => match write_pem(&path, &pem) {
            Ok(()) => Step::Written(path, Some(certificate_id)),
            Err(err) => Step::Problem(format!("cannot write {}: {err}", path.display())),
        },
        Some(_) => Step::Problem(format!(
            "certificate {certificate_id} does not carry the key of the CSR that was sent; not written"
        )),
        None => Step::Again(format!(
            "certificate {certificate_id} download did not parse"
        )),
    }
}

fn failed(err: ApiError, limiter: &Limiter) -> Step {
    match err.disposition() {
        Disposition::StopUntrusted => Step::Untrusted(err),
        Disposition::StopCredentials => Step::Credentials,
        Disposition::Pause(wait) => {
            // Throttled: every request of this collect waits, as the runner's do.
            limiter.pause_for(wait.unwrap_or(Duration::from_secs(5)));
            Step::Again(err.to_string())
        }
        _ => Step::Again(err.to_string()),
    }
}

/// CertCentral's word on an order that is not issued (`needs_approval`, `reissue_pending`).
async fn waiting_status(
    item: &Collectable,
    journal: &Journal,
    client: &Client,
    limiter: &Limiter,
) -> Result<Option<String>, JournalError> {
    let permit = limiter.acquire().await;
    let result = client.order_info(item.order_id).await;
    journal
        .record_request(&super::sent(
            "order_info",
            Some(item.order_id),
            permit.end(),
            &result,
        ))
        .await?;
    Ok(result
        .ok()
        .map(|info| info.status)
        .filter(|status| !status.is_empty()))
}

/// The SubjectPublicKeyInfo of the first certificate (the leaf) in a PEM text.
fn leaf_key(pem: &str) -> Option<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let certificate = block.parse_x509().ok()?;
    Some(certificate.tbs_certificate.subject_pki.raw.to_vec())
}

/// Writes beside the target and renames, so a crash never leaves half a certificate.
fn write_pem(path: &Path, pem: &str) -> std::io::Result<()> {
    let partial = path.with_extension("pem.partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&partial)?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

fn create_private_dir(path: &Path) -> Result<(), CollectError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| CollectError::OutDir {
            path: path.to_owned(),
            source,
        })
}
