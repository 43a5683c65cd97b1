//! Shows a run as it goes: a progress bar on a terminal, a log line every few seconds when
//! stderr is not one (cron), and the summary at the end. Knows nothing of how items are sent.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::ProgressStyle;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{Instrument, info_span};
use tracing_indicatif::span_ext::IndicatifSpanExt;

use crate::config::format_duration;
use crate::events::{RunnerEvent, StopReason};
use crate::journal::{Counts, ItemState};
use crate::runner::RunSummary;

/// How often a plain log line is written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Consumes runner events until the runner drops its sender.
pub async fn show(events: UnboundedReceiver<RunnerEvent>, run_id: i64) {
    let terminal = std::io::stderr().is_terminal();
    let span = info_span!("run", run = run_id);
    if terminal {
        let style = ProgressStyle::with_template(
            "{spinner} run {span_fields} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        span.pb_set_style(&style);
    }
    // Instrumented, not entered: a guard held across awaits would make this span the parent of
    // whatever else runs on the thread (sqlx's pool among them).
    render(events, &span, terminal)
        .instrument(span.clone())
        .await;
}

async fn render(mut events: UnboundedReceiver<RunnerEvent>, span: &tracing::Span, terminal: bool) {
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut latest: Option<(Counts, u64)> = None;
    // The bar's message while CertCentral is unreachable.
    let mut paused: Option<String> = None;
    let mut last_settling_log: Option<Instant> = None;
    while let Some(event) = events.recv().await {
        match event {
            RunnerEvent::Progress { counts, requests } => {
                if terminal {
                    let open = counts.open();
                    span.pb_set_length(counts.total());
                    span.pb_set_position(counts.total() - open);
                    match &paused {
                        Some(note) => span.pb_set_message(&format!("{}; {note}", counts.summary())),
                        None => span.pb_set_message(&counts.summary()),
                    }
                } else if last_log.elapsed() >= LOG_EVERY {
                    last_log = Instant::now();
                    log_line(&counts, requests, started.elapsed());
                }
                latest = Some((counts, requests));
            }
            RunnerEvent::Paused { wait } => {
                tracing::warn!(
                    "CertCentral throttled the account; every worker waits {}",
                    format_duration(wait)
                );
            }
            RunnerEvent::Reconciling { items } => {
                tracing::info!(
                    "looking up {items} item(s) whose outcome is unknown before sending anything"
                );
            }
            RunnerEvent::Unreachable {
                since,
                cause,
                next_probe_in,
            } => {
                let lasted = (time::OffsetDateTime::now_utc() - since).unsigned_abs();
                tracing::warn!(
                    "CertCentral unreachable since {} (for {}): {cause}; every worker paused, next probe in {:.1}s",
                    clock_time(since),
                    format_duration(whole_seconds(lasted)),
                    next_probe_in.as_secs_f64()
                );
                paused = Some(format!(
                    "paused: CertCentral unreachable since {}",
                    clock_time(since)
                ));
            }
            RunnerEvent::Reachable { lasted } => {
                paused = None;
                tracing::info!(
                    "CertCentral answers again after {}; sending resumes",
                    format_duration(whole_seconds(lasted))
                );
            }
            RunnerEvent::GivingUp { since } => {
                tracing::warn!(
                    "CertCentral unreachable since {}, longer than --give-up-after: stopping; unsent orders stay pending",
                    clock_time(since)
                );
            }
            RunnerEvent::Stopping {
                reason: StopReason::Interrupted,
            } => {
                tracing::warn!(
                    "stopping: no new requests; waiting for those in flight (a second signal stops at once)"
                );
            }
            RunnerEvent::Stopping { .. } => {
                tracing::warn!("stopping: no new requests; waiting for those in flight");
            }
            RunnerEvent::Settling { items, until } => {
                let text = settling_text(items, until);
                if terminal {
                    span.pb_set_message(&text);
                } else if last_settling_log.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    last_settling_log = Some(Instant::now());
                    tracing::info!("{text}");
                }
            }
        }
    }
    if !terminal && let Some((counts, requests)) = latest {
        log_line(&counts, requests, started.elapsed());
    }
}

/// What a run waiting out `--settle` says it is doing.
fn settling_text(items: usize, until: time::OffsetDateTime) -> String {
    format!(
        "settling: {items} order(s) whose answer was lost may still be reissued by CertCentral \
         until {} (--settle); looking them up meanwhile, resending nothing",
        clock_time(until)
    )
}

/// `2026-12-02 17:09:44 UTC`.
fn clock_time(at: time::OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| at.to_string())
}

fn whole_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}

fn log_line(counts: &Counts, requests: u64, elapsed: Duration) {
    let rate = requests as f64 / elapsed.as_secs_f64().max(0.001);
    tracing::info!(
        "{} of {} done: {}; {requests} requests, {rate:.1}/s",
        counts.total() - counts.open(),
        counts.total(),
        counts.summary()
    );
}

/// The end-of-run summary, for stderr.
pub fn summary(run_id: i64, summary: &RunSummary, journal: &std::path::Path) -> String {
    let counts = &summary.counts;
    let secs = summary.elapsed.as_secs_f64().max(0.001);
    let mut text = format!(
        "run {run_id} {}: {}\n  {} requests in {:.1}s ({:.1}/s)\n  journal: {}\n",
        summary.stop.as_str(),
        counts.summary(),
        summary.requests,
        secs,
        summary.requests as f64 / secs,
        journal.display(),
    );
    if let Some(since) = summary.unreachable_since {
        text.push_str(&format!(
            "  CertCentral unreachable since {}; nothing lost: every unsent order is still pending\n",
            clock_time(since)
        ));
    }
    if let Some((items, until)) = summary.settling {
        text.push_str(&format!(
            "  still settling: {items} order(s) whose answer was lost may be reissued by CertCentral until {}; \
             resume after that decides them (nothing is resent before)\n",
            clock_time(until)
        ));
    } else if summary.settled > 0 {
        text.push_str(&format!(
            "  {} order(s) whose answer was lost were not found at first and were looked up again within --settle\n",
            summary.settled
        ));
    }
    let troubled = counts.get(ItemState::Failed)
        + counts.get(ItemState::Uncertain)
        + counts.get(ItemState::Invalid);
    if troubled > 0 {
        text.push_str(&format!(
            "  see what went wrong: reissuer report --run {run_id} --journal {}\n",
            journal.display()
        ));
    }
    if counts.get(ItemState::Failed) > 0 {
        text.push_str(&format!(
            "  send failures again: reissuer retry --run {run_id} (--all for rejected ones too)\n"
        ));
    }
    if counts.open() > 0 {
        text.push_str(&format!(
            "  continue: reissuer resume --run {run_id}{}\n",
            if counts.get(ItemState::Uncertain) > 0 {
                " (uncertain items are looked up again; --resend-uncertain sends them)"
            } else {
                ""
            }
        ));
    }
    text
}
