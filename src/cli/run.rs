//! `run MANIFEST`: plan the manifest into the journal as a run (all or nothing), then send.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::campaign::fill;
use crate::exit::Exit;
use crate::journal::{ItemState, NewRun};
use crate::manifest::csr::VerifiedCsrs;
use crate::manifest::{self, Row};
use crate::payload;

use super::send::{self, Preflight, Sender, UsageError};
use super::{Cli, RunArgs};
use crate::events::StopReason;
use crate::identity::Identity;

pub(crate) async fn run(cli: &Cli, args: &RunArgs) -> anyhow::Result<Exit> {
    let sender = Sender::from_args(&args.send, args.force)?;
    plan_and_send(&cli.journal_path(), args, sender).await
}

/// Plans the manifest as a run (or finds the unfinished run holding the same manifest) and
/// sends it.
pub(crate) async fn plan_and_send(
    journal_path: &Path,
    args: &RunArgs,
    sender: Sender,
) -> anyhow::Result<Exit> {
    let started = std::time::Instant::now();
    let journal_existed = journal_path.exists();
    let (journal, integrity) = crate::journal::Journal::open_checking(journal_path).await?;
    // What the manifest's validation would read, as one digest: when an earlier run had the
    // same, the plan may be taken from it (once the key's account is known) instead of
    // validating 100,000 rows again.
    let input_digest = input_digest(&args.manifest, args.fill_from_order).await;
    // While the journal's integrity is checked on a connection of its own, what needs neither
    // writing nor sending goes on: the CSRs verified before are read, and the manifest is
    // validated (on every core) into a bounded channel. A damaged journal is refused before
    // anything is written or sent, and before any error of this reading. Not when the plan will
    // likely come from an earlier run: then the validation is work that is thrown away.
    let prepared = async {
        let memo_candidate = match &input_digest {
            Some(digest) => journal.has_input_digest(digest).await?,
            None => false,
        };
        let validation = match memo_candidate {
            true => None,
            false => Some(Validation::start(&journal, args).await?),
        };
        anyhow::Ok((memo_candidate, validation))
    }
    .await;
    integrity.passed().await?;
    let (memo_candidate, validation) = prepared?;
    // Who the key is, before anything is planned: a key that cannot be identified leaves no
    // new journal behind. When CertCentral cannot be reached (or a signal comes first), the
    // run is planned all the same with nothing sent, so `resume` continues it; resume
    // identifies the key before it sends anything.
    let cancel = tokio_util::sync::CancellationToken::new();
    let signals = tokio::spawn(send::on_signals(cancel.clone()));
    let preflight = send::preflight(&journal, &sender, &cancel).await;
    signals.abort();
    let (identity, unidentified) = match preflight {
        Ok(Preflight::Identified(identity)) => (Some(identity), None),
        Ok(Preflight::Unidentified {
            stop,
            unreachable_since,
            requests,
            untrusted,
        }) if !args.fill_from_order => (None, Some((stop, unreachable_since, requests, untrusted))),
        Ok(Preflight::Unidentified {
            stop, untrusted, ..
        }) => {
            journal.close().await;
            if !journal_existed {
                remove_journal_files(journal_path);
            }
            if let Some(server) = untrusted {
                eprintln!("error: {}", server.explain());
            }
            eprintln!(
                "{}: nothing planned or sent (--fill-from-order needs CertCentral)",
                stop.as_str()
            );
            return Ok(match stop {
                StopReason::Interrupted => Exit::Interrupted,
                _ => Exit::Unreachable,
            });
        }
        Err(err) => {
            journal.close().await;
            if !journal_existed {
                remove_journal_files(journal_path);
            }
            return Err(err);
        }
    };
    let lease = send::hold_lease(
        &journal,
        &send::lease_account(identity.as_ref(), &sender.base_url),
        &args.send,
        &sender.limiter,
    )
    .await?;
    let open_before = journal.newest_open_run().await?;
    let new = NewRun {
        manifest: Some(args.manifest.manifest.display().to_string()),
        base_url: sender.base_url.clone(),
        account_id: identity.as_ref().map(Identity::journal_account),
        options: serde_json::json!({
            "concurrency": args.send.connection.concurrency,
            "rates": args.send.connection.rates,
            "max_attempts": args.send.max_attempts,
            "timeout": crate::config::format_duration(args.send.connection.timeout),
            "give_up_after": crate::config::format_duration(args.send.give_up_after),
            "force": args.force,
            "skip_invalid": args.skip_invalid,
            "fill_from_order": args.fill_from_order,
        }),
        force: args.force,
    };
    // Before any request: fill-from-order's count too.
    send::seed_limiter(&sender.limiter, &journal, sender.options.request_timeout).await?;
    let memo = match (&input_digest, memo_candidate) {
        (Some(digest), true) => journal.plan_from_memo(&new, digest).await?,
        _ => None,
    };
    // An unfinished run holding the same manifest is resumed, as the normal path would.
    let memo = match memo {
        Some(memo)
            if open_before.as_ref().is_some_and(|open| {
                open.manifest_digest.as_deref() == Some(&memo.planner.manifest_digest())
            }) =>
        {
            memo.planner.rollback().await?;
            None
        }
        memo => memo,
    };
    let (mut planner, invalid) = match memo {
        Some(memo) => {
            tracing::info!(
                "plan taken from run {}'s: the manifest, the files it names and the options are \
                 unchanged since, and each of its orders is still done (nothing validated again)",
                memo.source_run
            );
            (memo.planner, Vec::new())
        }
        None => {
            let validation = match validation {
                Some(started) => started,
                None => Validation::start(&journal, args).await?,
            };
            plan_manifest(validation, args, &journal, &sender, &new).await?
        }
    };
    if invalid.is_empty()
        && let Some(digest) = input_digest
    {
        planner.remember_inputs(digest);
    }
    if !invalid.is_empty() && !args.skip_invalid {
        planner.rollback().await?;
        // Nothing was sent: a standby on another host need not wait for the lease to run out.
        lease.release(&journal).await;
        journal.close().await;
        if !journal_existed {
            remove_journal_files(journal_path);
        }
        for error in &invalid {
            eprintln!("{error}");
        }
        return Err(UsageError(format!(
            "{}: {} invalid row(s); nothing was sent (fix them, or --skip-invalid to send the rest)",
            args.manifest.manifest.display(),
            invalid.len()
        ))
        .into());
    }
    let same_as_open = open_before
        .as_ref()
        .filter(|open| open.manifest_digest.as_deref() == Some(&planner.manifest_digest()));
    let run_id = match same_as_open {
        Some(open) => {
            planner.rollback().await?;
            let left = journal.counts(open.id).await?.open();
            tracing::info!(
                "run {} holds this same manifest and is unfinished: resuming it; {}",
                open.id,
                send::expected_duration(&sender.limiter, left)
            );
            open.id
        }
        None => {
            let counts = planner.settle().await?;
            let (to_send, skipped) = (
                counts.get(ItemState::Pending),
                counts.get(ItemState::Skipped),
            );
            let sending = unidentified.is_none();
            let expected = send::expected_duration(&sender.limiter, to_send);
            if sending && !send::confirm(to_send, &sender.base_url, &expected, args.send.yes)? {
                planner.rollback().await?;
                lease.release(&journal).await;
                journal.close().await;
                if !journal_existed {
                    remove_journal_files(journal_path);
                }
                eprintln!("nothing sent");
                return Ok(Exit::Ok);
            }
            let run_id = planner.commit().await?;
            tracing::info!(
                "run {run_id}: {expected}; {skipped} already done (skipped), {} invalid",
                invalid.len()
            );
            run_id
        }
    };
    for error in &invalid {
        tracing::warn!("recorded as invalid: {error}");
    }
    if let Some((stop, unreachable_since, requests, untrusted)) = unidentified {
        let since = unreachable_since.and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
        journal
            .set_unreachable_since(run_id, since.as_deref())
            .await?;
        journal.set_last_stop(run_id, stop.as_str()).await?;
        let summary = crate::runner::RunSummary {
            stop,
            counts: journal.counts(run_id).await?,
            requests,
            elapsed: started.elapsed(),
            unreachable_since,
            settled: 0,
            settling: None,
            untrusted,
        };
        eprint!(
            "{}",
            crate::progress::summary(run_id, &summary, journal.path())
        );
        send::explain_untrusted(&summary);
        lease.release(&journal).await;
        journal.close().await;
        return Ok(match stop {
            StopReason::Interrupted => Exit::Interrupted,
            _ => Exit::Unreachable,
        });
    }
    let exit = send::execute(&journal, run_id, sender).await?;
    lease.release(&journal).await;
    journal.close().await;
    Ok(exit)
}

/// The manifest's digest of inputs, read on a blocking thread; `None` for `--fill-from-order`,
/// whose payloads depend on the live orders.
async fn input_digest(args: &super::ManifestArgs, fill_from_order: bool) -> Option<String> {
    if fill_from_order {
        return None;
    }
    let args = args.clone();
    tokio::task::spawn_blocking(move || {
        manifest::input_digest(&args.manifest, &super::validate::load_options(&args))
    })
    .await
    .ok()
    .flatten()
}

/// The manifest's validation under way: the CSRs verified by earlier runs, and the rows being
/// validated (unless `--fill-from-order`, whose rows are read once the facts can be fetched).
struct Validation {
    verified: Arc<VerifiedCsrs>,
    scan: Option<Scan<Planned>>,
}

impl Validation {
    async fn start(journal: &crate::journal::Journal, args: &RunArgs) -> anyhow::Result<Self> {
        let verified = Arc::new(VerifiedCsrs::new(journal.verified_csrs().await?));
        let scan = (!args.fill_from_order)
            .then(|| stream_rows(&args.manifest, false, &verified, Planned::from));
        Ok(Self { verified, scan })
    }
}

/// Plans every row of the manifest (validated, or filled from the live orders); returns the
/// planner and every validation error, in file order.
async fn plan_manifest(
    validation: Validation,
    args: &RunArgs,
    journal: &crate::journal::Journal,
    sender: &Sender,
    new: &NewRun,
) -> anyhow::Result<(crate::journal::Planner, Vec<String>)> {
    let Validation { verified, scan } = validation;
    // Facts are fetched before the plan's transaction takes the journal's one connection.
    let rows = match scan {
        Some(scan) => Rows::Streamed(scan),
        None => Rows::Filled(filled_rows(&args.manifest, journal, sender, &verified).await?),
    };
    let mut planner = journal.plan_run(new).await?;
    let invalid = match rows {
        Rows::Streamed(scan) => plan_rows(scan, &mut planner, args.skip_invalid).await?,
        Rows::Filled(rows) => {
            let mut errors = Vec::new();
            for row in rows {
                plan_row(row.into(), &mut planner, args.skip_invalid, &mut errors).await?;
            }
            errors
        }
    };
    let new_csrs = verified.take_new();
    planner.remember_verified_csrs(&new_csrs).await?;
    if !new_csrs.is_empty() || verified.reused() > 0 {
        tracing::info!(
            "CSRs: {} verified, {} verified by an earlier run (not again)",
            new_csrs.len(),
            verified.reused()
        );
    }
    Ok((planner, invalid))
}

/// Rows handed from the scanning thread to the planner at once: one wake-up per chunk, not
/// per row.
const STREAM_CHUNK: usize = 2048;

/// Streams the manifest's rows (scanned on a blocking thread) into a channel, a chunk at a
/// time, each row first turned into what the receiver needs by `prepare`, in parallel (rayon):
/// the work per row stays off the thread that writes the journal.
fn stream_rows<T: Send + 'static>(
    args: &super::ManifestArgs,
    fill_from_order: bool,
    verified: &Arc<VerifiedCsrs>,
    prepare: fn(Row) -> T,
) -> Scan<T> {
    use rayon::prelude::*;
    let mut options = super::validate::load_options(args);
    options.fill_from_order = fill_from_order;
    let path = args.manifest.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<T>>(4);
    let verified = verified.clone();
    let scanning = tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(STREAM_CHUNK);
        let send = |chunk: Vec<Row>| {
            let prepared: Vec<T> = chunk.into_par_iter().map(prepare).collect();
            tx.blocking_send(prepared).is_ok()
        };
        let summary = manifest::scan_with(&path, &options, &verified, |row| {
            chunk.push(row);
            if chunk.len() < STREAM_CHUNK {
                return ControlFlow::Continue(());
            }
            match send(std::mem::replace(
                &mut chunk,
                Vec::with_capacity(STREAM_CHUNK),
            )) {
                true => ControlFlow::Continue(()),
                false => ControlFlow::Break(()),
            }
        })?;
        if !chunk.is_empty() {
            send(chunk);
        }
        Ok(summary)
    });
    (rx, scanning)
}

/// A manifest row as the planner takes it: a valid order's canonical payload and its digest,
/// or an invalid row's errors.
enum Planned {
    Order {
        order_id: u64,
        line: u64,
        canonical: String,
        digest: String,
    },
    Invalid(manifest::InvalidRow),
}

impl From<Row> for Planned {
    fn from(row: Row) -> Self {
        match row {
            Row::Valid(order) => {
                let canonical = payload::canonical_json(&order.body);
                let digest = payload::digest(&canonical);
                Planned::Order {
                    order_id: order.order_id,
                    line: order.line,
                    canonical,
                    digest,
                }
            }
            Row::Invalid(row) => Planned::Invalid(row),
        }
    }
}

/// The manifest being validated on other threads: its rows in chunks, then how the scan ended.
type Scan<T> = (
    tokio::sync::mpsc::Receiver<Vec<T>>,
    tokio::task::JoinHandle<Result<manifest::ScanSummary, manifest::ManifestError>>,
);

/// The manifest's rows as the planner takes them.
enum Rows {
    /// Validated while they are planned.
    Streamed(Scan<Planned>),
    /// Read whole and filled from the live orders (`--fill-from-order`).
    Filled(Vec<Row>),
}

/// Streams the manifest into the planner; returns every validation error, in file order.
async fn plan_rows(
    (mut rx, scanning): Scan<Planned>,
    planner: &mut crate::journal::Planner,
    record_invalid: bool,
) -> anyhow::Result<Vec<String>> {
    let mut errors = Vec::new();
    while let Some(chunk) = rx.recv().await {
        for row in chunk {
            plan_row(row, planner, record_invalid, &mut errors).await?;
        }
    }
    scanning.await??;
    Ok(errors)
}

async fn plan_row(
    row: Planned,
    planner: &mut crate::journal::Planner,
    record_invalid: bool,
    errors: &mut Vec<String>,
) -> anyhow::Result<()> {
    match row {
        Planned::Order {
            order_id,
            line,
            canonical,
            digest,
        } => {
            planner.add_order(order_id, line, canonical, digest).await?;
        }
        Planned::Invalid(row) => {
            let text: Vec<String> = row.errors.iter().map(ToString::to_string).collect();
            if record_invalid {
                planner
                    .add_invalid(row.order_id, row.line, &text.join("; "))
                    .await?;
            }
            errors.extend(text);
        }
    }
    Ok(())
}

/// `--fill-from-order`: reads the whole manifest, fills each order's unset fields from its
/// live order (fetched once, kept in the journal), and checks what the fill supplied.
async fn filled_rows(
    args: &super::ManifestArgs,
    journal: &crate::journal::Journal,
    sender: &Sender,
    verified: &Arc<VerifiedCsrs>,
) -> anyhow::Result<Vec<Row>> {
    let (mut rx, scanning) = stream_rows(args, true, verified, |row| row);
    let mut rows = Vec::new();
    while let Some(chunk) = rx.recv().await {
        rows.extend(chunk);
    }
    scanning.await??;
    let wanted: Vec<u64> = rows
        .iter()
        .filter_map(|row| match row {
            Row::Valid(order) if fill::needs_facts(&order.body) => Some(order.order_id),
            _ => None,
        })
        .collect();
    let facts = fill::facts_for(
        &wanted,
        &sender.client,
        &sender.limiter,
        journal,
        sender.options.concurrency,
    )
    .await?;
    let file = args.manifest.display().to_string();
    Ok(rows
        .into_iter()
        .map(|row| match row {
            Row::Valid(mut order) => {
                let mut problems = Vec::new();
                match facts.get(&order.order_id) {
                    Some(Ok(facts)) => fill::fill(&mut order.body, facts),
                    Some(Err(why)) => problems.push(("order_id", why.clone())),
                    None => {}
                }
                problems.extend(fill::check_filled(&order.body, args.allow_cn_mismatch));
                if problems.is_empty() {
                    return Row::Valid(order);
                }
                Row::Invalid(manifest::InvalidRow {
                    order_id: Some(order.order_id),
                    line: order.line,
                    errors: problems
                        .into_iter()
                        .map(|(field, message)| manifest::FieldError {
                            file: file.clone(),
                            line: order.line,
                            field: field.to_owned(),
                            message,
                        })
                        .collect(),
                })
            }
            invalid => invalid,
        })
        .collect())
}

pub(crate) fn remove_journal_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

/// `resume [--run ID]`.
pub(crate) async fn resume(cli: &Cli, args: &super::ResumeArgs) -> anyhow::Result<Exit> {
    let journal = crate::journal::Journal::open(&cli.journal_path()).await?;
    let run = match args.run_id {
        Some(id) => journal.run(id).await?,
        None => match journal.newest_open_run().await? {
            Some(run) => run,
            None => {
                eprintln!(
                    "nothing to resume: every run in {} is finished",
                    cli.journal_path().display()
                );
                journal.close().await;
                return Ok(Exit::Ok);
            }
        },
    };
    let force = serde_json::from_str::<serde_json::Value>(&run.options)
        .ok()
        .and_then(|options| options["force"].as_bool())
        .unwrap_or(false);
    let sender = Sender::for_run(&args.send, &run, force)?;
    let identity = sender.identify_for_run(&journal, &run).await?;
    let lease = send::hold_lease(
        &journal,
        &send::lease_account(Some(&identity), &sender.base_url),
        &args.send,
        &sender.limiter,
    )
    .await?;
    let left = journal.counts(run.id).await?.open();
    tracing::info!(
        "run {}: {}",
        run.id,
        send::expected_duration(&sender.limiter, left)
    );
    let exit = send::execute(&journal, run.id, sender).await?;
    lease.release(&journal).await;
    journal.close().await;
    Ok(exit)
}

/// `retry [--run ID] [--all]`.
pub(crate) async fn retry(cli: &Cli, args: &super::RetryArgs) -> anyhow::Result<Exit> {
    let journal = crate::journal::Journal::open(&cli.journal_path()).await?;
    let run = journal.run_or_newest(args.run_id).await?;
    let sender = Sender::for_run(&args.send, &run, false)?;
    let identity = sender.identify_for_run(&journal, &run).await?;
    let lease = send::hold_lease(
        &journal,
        &send::lease_account(Some(&identity), &sender.base_url),
        &args.send,
        &sender.limiter,
    )
    .await?;
    let requeued = journal.requeue_failed(run.id, args.all).await?;
    send::seed_limiter(&sender.limiter, &journal, sender.options.request_timeout).await?;
    let left = journal.counts(run.id).await?.open();
    tracing::info!(
        "run {}: {requeued} failed item(s) back to pending{}; {}",
        run.id,
        if args.all {
            ""
        } else {
            " (transient failures only; --all for rejected ones)"
        },
        send::expected_duration(&sender.limiter, left)
    );
    let exit = send::execute(&journal, run.id, sender).await?;
    lease.release(&journal).await;
    journal.close().await;
    Ok(exit)
}
