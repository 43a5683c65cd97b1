//! Shows a run as it goes: a progress bar on a terminal, a log line every few seconds when
//! stderr is not one (cron), and the summary at the end. Knows nothing of how items are sent.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::ProgressStyle;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{Instrument, info_span};
use tracing_indicatif::span_ext::IndicatifSpanExt;

use crate::config::{Quota, format_duration};
use crate::events::{RunnerEvent, StopReason};
use crate::journal::{Counts, ItemState};
use crate::runner::RunSummary;

/// How often a plain log line is written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// How often the time left is worked out again (it walks the schedule of what is left).
const ESTIMATE_EVERY: Duration = Duration::from_millis(500);

/// How long from now the last of `n` more requests can start at the quotas: the fastest
/// schedule the rate windows allow, from the limiter ([`crate::limiter::Limiter::fastest_finish`]).
pub type TimeLeft = Box<dyn Fn(u64) -> Duration + Send>;

/// Consumes runner events until the runner drops its sender. `time_left` is the quota model
/// the ETA comes from; without quotas there is none.
pub async fn show(
    events: UnboundedReceiver<RunnerEvent>,
    run_id: i64,
    time_left: Option<TimeLeft>,
) {
    let terminal = std::io::stderr().is_terminal();
    let span = info_span!("run", run = run_id);
    if terminal {
        let style = ProgressStyle::with_template(
            "{spinner} run {span_fields} [{bar:30}] {pos}/{len} {msg} ({per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        span.pb_set_style(&style);
    }
    // Instrumented, not entered: a guard held across awaits would make this span the parent of
    // whatever else runs on the thread (sqlx's pool among them).
    render(events, &span, terminal, time_left)
        .instrument(span.clone())
        .await;
}

/// The ETA from the quota model, worked out at most every [`ESTIMATE_EVERY`].
struct Eta {
    time_left: Option<TimeLeft>,
    last: Option<(Instant, Duration)>,
}

impl Eta {
    fn text(&mut self, left: u64) -> String {
        let Some(time_left) = &self.time_left else {
            return String::new();
        };
        let fresh = self.last.filter(|(at, _)| at.elapsed() < ESTIMATE_EVERY);
        let estimate = match fresh {
            Some((_, estimate)) => estimate,
            None => {
                let estimate = time_left(left);
                self.last = Some((Instant::now(), estimate));
                estimate
            }
        };
        if left == 0 {
            String::new()
        } else {
            format!(", eta {}", about(estimate))
        }
    }
}

async fn render(
    mut events: UnboundedReceiver<RunnerEvent>,
    span: &tracing::Span,
    terminal: bool,
    time_left: Option<TimeLeft>,
) {
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut latest: Option<(Counts, u64)> = None;
    // The bar's message while CertCentral is unreachable.
    let mut paused: Option<String> = None;
    let mut last_settling_log: Option<Instant> = None;
    let mut eta = Eta {
        time_left,
        last: None,
    };
    // The bar's ETA counts down while the windows hold every request back.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
            _ = tick.tick(), if terminal => {
                if let Some((counts, _)) = &latest {
                    span.pb_set_message(&bar_message(counts, paused.as_deref(), &mut eta));
                }
                continue;
            }
        };
        match event {
            RunnerEvent::Progress { counts, requests } => {
                if terminal {
                    let open = counts.open();
                    span.pb_set_length(counts.total());
                    span.pb_set_position(counts.total() - open);
                    span.pb_set_message(&bar_message(&counts, paused.as_deref(), &mut eta));
                } else if last_log.elapsed() >= LOG_EVERY {
                    last_log = Instant::now();
                    log_line(
                        &counts,
                        requests,
                        started.elapsed(),
                        &eta.text(counts.open()),
                    );
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
        log_line(&counts, requests, started.elapsed(), "");
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

/// The bar's message: the counts, then the pause note while CertCentral is unreachable, else
/// the ETA from the quota model.
fn bar_message(counts: &Counts, paused: Option<&str>, eta: &mut Eta) -> String {
    match paused {
        Some(note) => format!("{}; {note}", counts.summary()),
        None => format!("{}{}", counts.summary(), eta.text(counts.open())),
    }
}

fn log_line(counts: &Counts, requests: u64, elapsed: Duration, eta: &str) {
    let rate = requests as f64 / elapsed.as_secs_f64().max(0.001);
    tracing::info!(
        "{} of {} done: {}; {requests} requests, {rate:.1}/s{eta}",
        counts.total() - counts.open(),
        counts.total(),
        counts.summary()
    );
}

/// What the confirmation and the first log line say of a run's length:
/// `1,000 reissues: about 45 s at 100/5s + 1000/3m`. `fastest` is the fastest schedule the
/// quotas allow from the windows as they are.
pub fn expected_duration(count: u64, quotas: &[Quota], fastest: Duration) -> String {
    let what = format!(
        "{} reissue{}",
        thousands(count),
        if count == 1 { "" } else { "s" }
    );
    if quotas.is_empty() {
        return format!("{what}: no quota (--rate unlimited)");
    }
    let quotas: Vec<String> = quotas.iter().map(ToString::to_string).collect();
    format!("{what}: {} at {}", about(fastest), quotas.join(" + "))
}

/// A duration as people say it: `about 45 s`, `about 12 min`, `about 5 h 30 min`.
pub fn about(duration: Duration) -> String {
    let secs = duration.as_secs_f64().round() as u64;
    match secs {
        0 => "under a second".to_owned(),
        1..100 => format!("about {secs} s"),
        100..6000 => format!("about {} min", (secs + 30) / 60),
        _ => {
            let minutes = (secs + 30) / 60;
            format!("about {} h {:02} min", minutes / 60, minutes % 60)
        }
    }
}

/// `1000000` as `1,000,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_duration_names_the_count_the_time_and_the_quotas() {
        let quotas = crate::config::default_quotas();
        let fastest = crate::limiter::fastest_span(&quotas, 1000);
        assert_eq!(
            expected_duration(1000, &quotas, fastest),
            "1,000 reissues: about 45 s at 100/5s + 1000/3m"
        );
        let fastest = crate::limiter::fastest_span(&quotas, 100_000);
        assert_eq!(
            expected_duration(100_000, &quotas, fastest),
            "100,000 reissues: about 4 h 58 min at 100/5s + 1000/3m"
        );
        assert_eq!(
            expected_duration(1, &quotas, Duration::ZERO),
            "1 reissue: under a second at 100/5s + 1000/3m"
        );
        assert_eq!(
            expected_duration(12, &[], Duration::ZERO),
            "12 reissues: no quota (--rate unlimited)"
        );
    }

    #[test]
    fn durations_read_as_people_say_them() {
        let s = Duration::from_secs;
        assert_eq!(about(Duration::from_millis(400)), "under a second");
        assert_eq!(about(s(45)), "about 45 s");
        assert_eq!(about(s(99)), "about 99 s");
        assert_eq!(about(s(100)), "about 2 min");
        assert_eq!(about(s(725)), "about 12 min");
        assert_eq!(about(s(5 * 3600 + 30 * 60)), "about 5 h 30 min");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
