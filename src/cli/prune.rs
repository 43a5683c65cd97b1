//! `prune --before DATE | --keep N [--dry-run]`: remove finished runs and reclaim the space.

use std::io::Write;

use clap::Args;

use crate::exit::Exit;
use crate::journal::{Journal, PruneSelection, Spared};

use super::Cli;
use super::send::UsageError;

pub(crate) const LONG_ABOUT: &str = "\
Remove finished runs from the journal, with their items, attempts and skipped orders, and \
reclaim the space (VACUUM). With both --before and --keep, a run must match both to go.

Never removed: a run that is unfinished (orders to send or to reconcile); a run holding orders \
that an older run still has pending (it would send its older payload); and a success that a \
remaining run's skipped order stands for: its run stays, with only those successes left, so \
`report` on the remaining runs still shows every request id.

A removed success is forgotten: running that manifest again would send those orders again. \
Keep the runs whose manifests you may run again. The CSRs that only removed runs verified are \
forgotten too: their signatures are verified again when next read.";

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true)))]
pub struct PruneArgs {
    /// Remove runs started before DATE (YYYY-MM-DD, midnight UTC, or an RFC 3339 time).
    #[arg(long, value_name = "DATE", group = "which", value_parser = parse_cutoff)]
    pub before: Option<String>,

    /// Keep the newest N runs; remove older ones.
    #[arg(long, value_name = "N", group = "which")]
    pub keep: Option<u32>,

    /// Say what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `YYYY-MM-DD` or RFC 3339, as the journal writes times (UTC, milliseconds), so that text
/// order is time order.
fn parse_cutoff(text: &str) -> Result<String, String> {
    use time::format_description::well_known::Rfc3339;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let at = match time::Date::parse(text.trim(), &format) {
        Ok(date) => date.midnight().assume_utc(),
        Err(_) => time::OffsetDateTime::parse(text.trim(), &Rfc3339)
            .map_err(|_| "expected YYYY-MM-DD or an RFC 3339 time".to_owned())?,
    };
    let at = at.to_offset(time::UtcOffset::UTC);
    let at = at
        .replace_nanosecond(at.millisecond() as u32 * 1_000_000)
        .unwrap_or(at);
    at.format(&Rfc3339).map_err(|e| e.to_string())
}

pub(crate) async fn prune(cli: &Cli, args: &PruneArgs) -> anyhow::Result<Exit> {
    let path = cli.journal_path();
    // A PostgreSQL journal has no file to check or measure.
    let journal_is_file = crate::journal::Engine::of(&path) == crate::journal::Engine::Sqlite;
    if journal_is_file && !path.exists() {
        return Err(UsageError(format!(
            "no journal at {} (set --journal or REISSUER_JOURNAL)",
            path.display()
        ))
        .into());
    }
    let size_before = file_size(&path);
    let journal = Journal::open(&path).await?;
    let selection = PruneSelection {
        before: args.before.clone(),
        keep: args.keep,
    };
    let outcome = journal.prune(&selection, args.dry_run).await?;
    journal.close().await;
    let mut out = std::io::stdout().lock();
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for run in &outcome.pruned {
        let mut line = format!(
            "{verb} run {} (started {}): {} item(s), {} attempt(s), {} skipped order(s)",
            run.run_id, run.created_at, run.items, run.attempts, run.skipped
        );
        if run.verified_csrs > 0 {
            line.push_str(&format!(
                ", {} verified CSR(s) forgotten",
                run.verified_csrs
            ));
        }
        if run.kept_successes > 0 {
            line.push_str(&format!(
                "; kept its {} success(es) that later runs stand for",
                run.kept_successes
            ));
        }
        writeln!(out, "{line}")?;
    }
    for spared in &outcome.spared {
        match spared {
            Spared::Unfinished { run_id } => writeln!(
                out,
                "kept run {run_id}: unfinished (resume it, or retry its failures, first)"
            )?,
            Spared::TakesOver { run_id, older } => writeln!(
                out,
                "kept run {run_id}: it holds orders that run {older} still has pending"
            )?,
        }
    }
    if outcome.pruned.is_empty() {
        writeln!(out, "nothing to remove")?;
    } else if !args.dry_run && journal_is_file {
        let size_after = file_size(&path);
        writeln!(
            out,
            "journal {}: {} -> {}",
            path.display(),
            human_bytes(size_before),
            human_bytes(size_after)
        )?;
    }
    Ok(Exit::Ok)
}

/// The journal and its WAL together.
fn file_size(path: &std::path::Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            std::fs::metadata(name).ok().map(|m| m.len())
        })
        .sum()
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} bytes"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_is_midnight_utc_in_the_journal_s_time_format() {
        assert_eq!(
            parse_cutoff("2026-12-01").as_deref(),
            Ok("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            parse_cutoff("2026-12-01T10:30:00.5+01:00").as_deref(),
            Ok("2026-12-01T09:30:00.5Z")
        );
        assert!(parse_cutoff("yesterday").is_err());
    }
}
