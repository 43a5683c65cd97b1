//! `status` and `report`: read the journal while a run may be writing it.

use std::io::Write;

use anyhow::Context;

use crate::campaign::dcv::DcvRow;
use crate::exit::Exit;
use crate::journal::{Collection, Counts, ItemState, Journal, LeaseHolder, Rotation, RunRow};

use super::{Cli, ReportArgs, ReportFormat, StatusArgs};

/// Runs the table shows when neither `--all` nor `--last` is given.
const DEFAULT_LAST: usize = 10;

/// What `status` says of one run.
struct Entry {
    run: RunRow,
    counts: Counts,
    collection: Collection,
    rotation: Rotation,
    /// HTTP requests the run made (reissues and lookups).
    requests: u64,
    /// The newest run that took over this run's pending orders, when none is left to it.
    taken_over_by: Option<i64>,
}

impl Entry {
    fn state(&self) -> String {
        match (self.counts.open(), self.taken_over_by) {
            (0, _) => "finished".to_owned(),
            (_, Some(taker)) => format!("taken over by run {taker}"),
            (_, None) => "unfinished".to_owned(),
        }
    }
}

pub(crate) async fn status(cli: &Cli, args: &StatusArgs) -> anyhow::Result<Exit> {
    let journal = Journal::open_read_only(&cli.journal_path()).await?;
    let mut runs = match args.run_id {
        Some(id) => vec![journal.run(id).await?],
        None => journal.runs().await?,
    };
    let total_runs = runs.len();
    let last = match (args.last, args.all, args.json) {
        (Some(n), _, _) => usize::try_from(n).unwrap_or(usize::MAX),
        (None, true, _) | (None, false, true) => usize::MAX,
        (None, false, false) => DEFAULT_LAST,
    };
    runs.drain(..runs.len().saturating_sub(last));
    let mut entries = Vec::new();
    for run in runs {
        let counts = journal.counts(run.id).await?;
        let collection = journal.collection(run.id).await?;
        let rotation = journal.rotation(run.id).await?;
        let requests = journal.request_count(run.id).await?;
        let taken_over_by = match counts.open() {
            0 => None,
            _ => match journal.takeover(run.id).await? {
                (0, taker) => taker,
                _ => None,
            },
        };
        entries.push(Entry {
            run,
            counts,
            collection,
            rotation,
            requests,
            taken_over_by,
        });
    }
    let holders = journal.lease_holders().await?;
    journal.close().await;
    let mut out = std::io::stdout().lock();
    if !args.json {
        // A shared (PostgreSQL) journal: which process sends for each account.
        for holder in &holders {
            if holder.live {
                writeln!(
                    out,
                    "account {}: sent by {} (pid {}) since {}",
                    holder.account, holder.host, holder.pid, holder.since
                )?;
            } else {
                writeln!(
                    out,
                    "account {}: no sender now (the last was {} (pid {}), from {})",
                    holder.account, holder.host, holder.pid, holder.since
                )?;
            }
        }
    }
    if args.json {
        let json: Vec<serde_json::Value> = entries
            .iter()
            .map(|entry| {
                let mut json = entry_json(entry);
                json["lease"] = serde_json::json!(lease_of(&entry.run, &holders));
                json
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    } else if entries.is_empty() {
        writeln!(out, "no runs in {}", cli.journal_path().display())?;
    } else {
        // Newest first: the run a cron job made last night is the one asked about.
        for entry in entries.iter().rev() {
            write_entry(&mut out, entry, args.run_id.is_some())?;
        }
        if entries.len() < total_runs {
            writeln!(
                out,
                "(the newest {} of {total_runs} runs; --all lists every run, --last N the newest N)",
                entries.len()
            )?;
        }
    }
    Ok(Exit::Ok)
}

/// The lease on the run's account (on a shared journal): on the account id, or for a run whose
/// key was never identified, on its base URL.
fn lease_of<'a>(run: &RunRow, holders: &'a [LeaseHolder]) -> Option<&'a LeaseHolder> {
    let account = match run.account_id {
        Some(id) => id.to_string(),
        None => run.base_url.clone(),
    };
    holders.iter().find(|holder| holder.account == account)
}

fn entry_json(entry: &Entry) -> serde_json::Value {
    let Entry {
        run,
        counts,
        collection,
        rotation,
        requests,
        taken_over_by,
    } = entry;
    serde_json::json!({
        "run": run.id,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "manifest": run.manifest,
        "base_url": run.base_url,
        "account_id": run.account_id,
        "options": serde_json::from_str::<serde_json::Value>(&run.options).unwrap_or_default(),
        "last_stop": run.last_stop,
        "unreachable_since": run.unreachable_since,
        "finished": counts.open() == 0,
        "total": counts.total(),
        "collection": collection,
        "rotation": rotation,
        "counts": ItemState::ALL.iter().map(|s| (s.as_str().to_owned(), serde_json::json!(counts.get(*s)))).collect::<serde_json::Map<_, _>>(),
        "requests": requests,
        "sent_nothing": *requests == 0,
        "taken_over_by": taken_over_by,
        "pruned_at": run.pruned_at,
    })
}

fn write_entry(out: &mut impl Write, entry: &Entry, detailed: bool) -> std::io::Result<()> {
    let Entry {
        run,
        counts,
        collection,
        rotation,
        requests,
        ..
    } = entry;
    let sent = match requests {
        0 => "sent nothing".to_owned(),
        n => format!("{n} request(s)"),
    };
    writeln!(
        out,
        "run {:<4} {:<10} {} orders: {}; {sent}",
        run.id,
        entry.state(),
        counts.total(),
        counts.summary()
    )?;
    writeln!(
        out,
        "         started {}, last change {}, last stop: {}",
        run.created_at,
        run.updated_at,
        run.last_stop.as_deref().unwrap_or("-")
    )?;
    writeln!(
        out,
        "         manifest {}, {}",
        run.manifest.as_deref().unwrap_or("-"),
        match run.account_id {
            Some(id) => format!("account {id} at {}", run.base_url),
            None => format!("account at {} (not identified)", run.base_url),
        }
    )?;
    if let Some(since) = &run.unreachable_since {
        writeln!(out, "         CertCentral unreachable since {since}")?;
    }
    if let Some(pruned_at) = &run.pruned_at {
        writeln!(
            out,
            "         pruned {pruned_at}: only the successes later runs stand for are kept"
        )?;
    }
    if collection.downloaded + collection.issued + collection.cannot_collect > 0 {
        writeln!(
            out,
            "         certificates: {} downloaded, {} issued not downloaded, {} awaiting issuance{}",
            collection.downloaded,
            collection.issued,
            collection.awaiting_issuance,
            cannot_collect(collection)
        )?;
    }
    if rotation.awaiting_dcv + rotation.awaiting_approval + rotation.issued > 0 {
        writeln!(
            out,
            "         rotation: {} awaiting DCV, {} awaiting approval, {} issued, {} downloaded, {} deployed",
            rotation.awaiting_dcv,
            rotation.awaiting_approval,
            rotation.issued,
            rotation.downloaded,
            rotation.deployed
        )?;
    }
    if detailed {
        writeln!(out, "         options {}", run.options)?;
    }
    Ok(())
}

/// The tail of the certificates line for those `collect` cannot take (it says why for each).
pub(crate) fn cannot_collect(collection: &Collection) -> String {
    match collection.cannot_collect {
        0 => String::new(),
        n => format!(", {n} cannot be collected"),
    }
}

pub(crate) async fn report(cli: &Cli, args: &ReportArgs) -> anyhow::Result<Exit> {
    if args.dcv {
        return dcv_report(cli, args).await;
    }
    let journal = Journal::open_read_only(&cli.journal_path()).await?;
    let run_id = journal.run_or_newest(args.run_id).await?.id;
    let rows = journal.report_rows(run_id).await?;
    journal.close().await;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write report {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match args.format {
        ReportFormat::Csv => crate::report::write_csv(&rows, &mut out)?,
        ReportFormat::Json => crate::report::write_json(&rows, &mut out)?,
    }
    out.flush()?;
    Ok(Exit::Ok)
}

/// `report --dcv`: the run's DCV tokens with their method and domains.
async fn dcv_report(cli: &Cli, args: &ReportArgs) -> anyhow::Result<Exit> {
    let journal = Journal::open_read_only(&cli.journal_path()).await?;
    let run_id = match args.run_id {
        Some(id) => journal.run(id).await?.id,
        None => {
            journal
                .newest_run()
                .await?
                .with_context(|| format!("no runs in {}", cli.journal_path().display()))?
                .id
        }
    };
    let items = journal.dcv_items(run_id).await?;
    journal.close().await;
    let rows = items
        .into_iter()
        .map(|item| DcvRow::from_payload(item.order_id, &item.payload, item.dcv_random_value))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write DCV tokens {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match args.format {
        ReportFormat::Csv => crate::campaign::dcv::write_csv(&rows, &mut out)?,
        ReportFormat::Json => crate::campaign::dcv::write_json(&rows, &mut out)?,
    }
    out.flush()?;
    Ok(Exit::Ok)
}
