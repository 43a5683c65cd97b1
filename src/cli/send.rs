//! What `run`, `resume`, `retry` and `demo` share: the key, the client, signals, the runner with
//! its progress display, the summary and the exit code; and the shell of the commands that work
//! on one run (`RunCommand`).

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::api::{Client, Network, Trust};
use crate::events::StopReason;
use crate::exit::Exit;
use crate::identity::Identity;
use crate::journal::{ItemState, Journal, RunRow};
use crate::limiter::Limiter;
use crate::runner::{self, Deps, RunnerOptions};
use crate::secret::ApiKey;

use super::{ConnectionArgs, SendArgs};

/// Requests in flight get this long to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A usage problem found before anything was sent (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The API key from `--api-key-file` or `DIGICERT_API_KEY`.
pub(crate) fn load_api_key(args: &ConnectionArgs) -> anyhow::Result<ApiKey> {
    if let Some(path) = &args.api_key_file {
        let metadata = std::fs::metadata(path)
            .with_context(|| format!("cannot read API key file {}", path.display()))?;
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "API key file {} is readable by other users; chmod 600 it",
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read API key file {}", path.display()))?;
        return ApiKey::new(&text)
            .ok_or_else(|| UsageError(format!("API key file {} is empty", path.display())).into());
    }
    std::env::var("DIGICERT_API_KEY")
        .ok()
        .and_then(|key| ApiKey::new(&key))
        .ok_or_else(|| {
            UsageError("no API key: set DIGICERT_API_KEY or pass --api-key-file PATH".to_owned())
                .into()
        })
}

/// What a send needs, resolved from the flags.
pub(crate) struct Sender {
    pub base_url: String,
    pub client: Client,
    pub limiter: Arc<Limiter>,
    pub options: RunnerOptions,
}

impl Sender {
    pub(crate) fn from_args(args: &SendArgs, force: bool) -> anyhow::Result<Self> {
        Self::build(args, None, force)
    }

    /// A resumed run goes to the account it was started against, unless told otherwise.
    pub(crate) fn for_run(
        args: &SendArgs,
        run: &crate::journal::RunRow,
        force: bool,
    ) -> anyhow::Result<Self> {
        Self::build(args, Some(run), force)
    }

    fn build(
        args: &SendArgs,
        run: Option<&crate::journal::RunRow>,
        force: bool,
    ) -> anyhow::Result<Self> {
        let connection = Connection::new(&args.connection, run)?;
        Ok(Self {
            base_url: connection.base_url,
            client: connection.client,
            limiter: connection.limiter,
            options: RunnerOptions {
                concurrency: connection.concurrency,
                max_attempts: args.max_attempts,
                resend_uncertain: args.resend_uncertain,
                force,
                drain_timeout: DRAIN_TIMEOUT,
                request_timeout: connection.timeout,
                give_up_after: args.give_up_after,
                settle: args.settle,
            },
        })
    }
}

/// A client and limiter for one account, from the flags.
pub(crate) struct Connection {
    pub base_url: String,
    pub client: Client,
    pub limiter: Arc<Limiter>,
    pub concurrency: usize,
    pub timeout: std::time::Duration,
}

impl Connection {
    /// With `run`, the account defaults to the one the run was started against.
    pub(crate) fn new(
        args: &ConnectionArgs,
        run: Option<&crate::journal::RunRow>,
    ) -> anyhow::Result<Self> {
        let base_url = match (&args.base_url, args.region, run) {
            (None, None, Some(run)) => Some(run.base_url.as_str()),
            _ => args.base_url.as_deref(),
        };
        let base_url = super::resolve_base_url(base_url, args.region)
            .map_err(|e| UsageError(format!("{e:#}")))?;
        let quotas =
            super::resolve_quotas(&args.rates).map_err(|e| UsageError(format!("{e:#}")))?;
        let key = load_api_key(args)?;
        let concurrency = args.concurrency as usize;
        let network = Network {
            trust: Trust::load(args.ca_file.as_deref())
                .map_err(|e| UsageError(format!("{:#}", anyhow::Error::from(e))))?,
            direct: false,
        };
        let client = Client::new(&base_url, &key, args.timeout, concurrency, &network)?;
        Ok(Self {
            base_url,
            client,
            limiter: Arc::new(Limiter::new(&quotas)),
            concurrency,
            timeout: args.timeout,
        })
    }

    /// [`identify`] through this connection.
    pub(crate) async fn identify(&self, journal: &Journal) -> anyhow::Result<Identity> {
        identify(
            journal,
            &self.client,
            &self.limiter,
            self.timeout,
            crate::reads::DEFAULT_GIVE_UP_AFTER,
        )
        .await
    }

    /// [`identify_for_run`] through this connection.
    pub(crate) async fn identify_for_run(
        &self,
        journal: &Journal,
        run: &crate::journal::RunRow,
    ) -> anyhow::Result<Identity> {
        identify_for_run(
            journal,
            run,
            &self.client,
            &self.limiter,
            self.timeout,
            crate::reads::DEFAULT_GIVE_UP_AFTER,
        )
        .await
    }
}

impl Sender {
    /// [`identify_for_run`] with this sender's client, limiter and patience.
    pub(crate) async fn identify_for_run(
        &self,
        journal: &Journal,
        run: &crate::journal::RunRow,
    ) -> anyhow::Result<Identity> {
        identify_for_run(
            journal,
            run,
            &self.client,
            &self.limiter,
            self.options.request_timeout,
            self.options.give_up_after,
        )
        .await
    }
}

/// Asks CertCentral who the key belongs to, before anything is planned, written or sent; a
/// key that cannot be identified is an error that exits 4.
///
/// Its requests go through the command's own limiter and are recorded like every other.
/// Through an outage it asks again until `give_up_after` (then exit 6).
pub(crate) async fn identify(
    journal: &Journal,
    client: &Client,
    limiter: &Limiter,
    request_timeout: Duration,
    give_up_after: Duration,
) -> anyhow::Result<Identity> {
    let mut attempts = Vec::new();
    identify_noting(
        journal,
        client,
        limiter,
        request_timeout,
        give_up_after,
        &mut attempts,
    )
    .await
}

/// [`identify`], with every request it made pushed onto `attempts`.
async fn identify_noting(
    journal: &Journal,
    client: &Client,
    limiter: &Limiter,
    request_timeout: Duration,
    give_up_after: Duration,
    attempts: &mut Vec<crate::reads::Attempt>,
) -> anyhow::Result<Identity> {
    // Until the key's account is known, its recent requests cannot be told from other
    // accounts': the limiter counts every request the journal recorded lately, whoever made
    // it, so it never exceeds a quota.
    seed_limiter(limiter, journal, request_timeout).await?;
    let first = attempts.len();
    let identity = crate::identity::identify(client, limiter, give_up_after, attempts).await;
    for attempt in &attempts[first..] {
        journal.record_request(&attempt.sent("identify")).await?;
    }
    let identity = identity?;
    tracing::info!("the API key is of {identity}");
    Ok(identity)
}

/// How the preflight of a new run ended.
pub(crate) enum Preflight {
    /// The key is identified: plan and send.
    Identified(Identity),
    /// CertCentral could not be asked (an outage past `--give-up-after`), or a signal came
    /// first. The run may still be planned, with nothing sent: the command that continues it
    /// identifies the key before it sends anything.
    Unidentified {
        stop: StopReason,
        /// When CertCentral was first found unreachable, if it was.
        unreachable_since: Option<time::OffsetDateTime>,
        /// Requests the preflight made.
        requests: u64,
        /// The server certificate that was refused, when that stopped it.
        untrusted: Option<crate::api::UntrustedServer>,
    },
}

/// The preflight of `run`: [`identify`], through an outage for up to `--give-up-after`, and
/// stopped by SIGINT/SIGTERM (`cancel`).
pub(crate) async fn preflight(
    journal: &Journal,
    sender: &Sender,
    cancel: &CancellationToken,
) -> anyhow::Result<Preflight> {
    let mut attempts = Vec::new();
    let asked = {
        let identifying = identify_noting(
            journal,
            &sender.client,
            &sender.limiter,
            sender.options.request_timeout,
            sender.options.give_up_after,
            &mut attempts,
        );
        tokio::select! {
            result = identifying => Some(result),
            () = cancel.cancelled() => None,
        }
    };
    let requests = u64::try_from(attempts.len()).unwrap_or(u64::MAX);
    match asked {
        Some(Ok(identity)) => Ok(Preflight::Identified(identity)),
        Some(Err(err)) => {
            // Not an outage, but the run is planned all the same, every order pending, so that
            // `resume` goes on once the certificate is trusted.
            if let Some(server) = super::untrusted_server(&err) {
                return Ok(Preflight::Unidentified {
                    stop: StopReason::Unreachable,
                    unreachable_since: None,
                    requests,
                    untrusted: Some(server.clone()),
                });
            }
            match outage_of(&err) {
                Some(since) => Ok(Preflight::Unidentified {
                    stop: StopReason::Unreachable,
                    unreachable_since: Some(since),
                    requests,
                    untrusted: None,
                }),
                None => Err(err),
            }
        }
        None => Ok(Preflight::Unidentified {
            stop: StopReason::Interrupted,
            // The first try that found no CertCentral (no answer, or a 5xx other than 503).
            unreachable_since: attempts
                .iter()
                .find(|a| {
                    a.http_status
                        .is_none_or(|status| status >= 500 && status != 503)
                })
                .map(|a| a.started_at),
            requests,
            untrusted: None,
        }),
    }
}

/// When the outage that stopped an identification began, if that is what stopped it.
fn outage_of(err: &anyhow::Error) -> Option<time::OffsetDateTime> {
    err.chain().find_map(
        |cause| match cause.downcast_ref::<crate::identity::IdentityError>() {
            Some(crate::identity::IdentityError::Unreachable(read)) => {
                crate::reads::unreachable_since(read)
            }
            _ => None,
        },
    )
}

/// Identifies the key for a run being continued (or collected): it must be of the run's
/// account; a run from before accounts were identified is claimed for it, with the other old
/// runs through the same base URL.
pub(crate) async fn identify_for_run(
    journal: &Journal,
    run: &crate::journal::RunRow,
    client: &Client,
    limiter: &Limiter,
    request_timeout: Duration,
    give_up_after: Duration,
) -> anyhow::Result<Identity> {
    let identity = identify(journal, client, limiter, request_timeout, give_up_after).await?;
    crate::identity::check_run_account(run.id, run.account_id, &identity)?;
    journal
        .claim_runs(identity.journal_account(), client.base_url(), Some(run.id))
        .await?;
    Ok(identity)
}

/// What a lease is taken on: the account the key belongs to, or for a key not identified
/// (CertCentral unreachable at the preflight; nothing is sent then) the base URL.
pub(crate) fn lease_account(identity: Option<&Identity>, base_url: &str) -> String {
    match identity {
        Some(identity) => identity.account_id.to_string(),
        None => base_url.to_owned(),
    }
}

/// The account lease held on a shared journal, kept alive by a renewal task.
pub(crate) struct HeldLease {
    renewal: Option<tokio::task::JoinHandle<()>>,
}

impl HeldLease {
    /// Stops renewing and gives the lease up, so a standby takes over at once.
    pub(crate) async fn release(mut self, journal: &Journal) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
            if let Err(err) = journal.release_lease().await {
                tracing::warn!("could not release the lease: {err}");
            }
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}

/// [`hold_account`] for a command that sends reissues: a taker waits out its request timeout.
pub(crate) async fn hold_lease(
    journal: &Journal,
    account: &str,
    args: &SendArgs,
    limiter: &Limiter,
) -> anyhow::Result<HeldLease> {
    let timeout = args.connection.timeout;
    hold_account(journal, account, &args.lease, limiter, timeout, timeout).await
}

/// On a PostgreSQL journal, takes the lease on the account (`base_url`) before anything is
/// planned or sent: while another process holds it, says so once and stands by (or, with
/// `--no-wait`, fails: exit 5). After taking it from a holder that stopped renewing, waits out
/// how long that holder's last actions may still be under way (`under_way` is this process's,
/// recorded for the next taker: its request timeout, and for `collect` its hook timeout), so
/// the reconciliation that follows sees every request it sent already answered or lost. Then
/// counts the account's recent requests in `limiter` again, from the journal: the holder it
/// waited for sent after this process first counted them. A SQLite journal has its lock file
/// instead.
///
/// The lease is per account and shared by every command that acts for it (`run`, `resume`,
/// `retry`, `collect`, `dcv check`, `approve`), not one per command: one actor per account is
/// what keeps its quota (each process's limiter knows only its own requests and the journal's)
/// and what makes a deploy hook or an approval happen once when two hosts run the same job. A
/// `collect` thus waits while another host's `run` sends, as it would on SQLite's lock file.
pub(crate) async fn hold_account(
    journal: &Journal,
    base_url: &str,
    args: &super::LeaseArgs,
    limiter: &Limiter,
    request_timeout: Duration,
    under_way: Duration,
) -> anyhow::Result<HeldLease> {
    use crate::journal::{Engine, JournalError, LeaseAttempt};
    if journal.engine() != Engine::Postgres {
        return Ok(HeldLease { renewal: None });
    }
    let lease = args.lease.max(Duration::from_millis(300));
    let poll = (lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut standing_by = false;
    let renewal;
    loop {
        match journal.try_lease(base_url, lease, under_way).await? {
            LeaseAttempt::Taken { from } => {
                // Renewed from now on: the wait below may outlast the lease.
                renewal = journal.lease_keeper(lease).map(tokio::spawn);
                if let Some((old, drain_ms)) = from {
                    let drain = Duration::from_millis(drain_ms);
                    tracing::warn!(
                        "taking over account {base_url} from {} (pid {}), sending since {}: its \
                         lease ran out; waiting {} for requests it may have left under \
                         way, then reconciling what it left in flight",
                        old.host,
                        old.pid,
                        old.since,
                        humantime::format_duration(Duration::from_millis(drain_ms / 1000 * 1000)),
                    );
                    tokio::time::sleep(drain).await;
                } else if standing_by {
                    tracing::info!("account {base_url}: the lease was given up; sending from here");
                }
                let (host, pid) = crate::journal::holder_identity();
                tracing::info!(
                    "account {base_url}: sent from {host} (pid {pid}) from now on; the {} lease \
                     is renewed every third of it",
                    humantime::format_duration(lease)
                );
                break;
            }
            LeaseAttempt::Held(holder) => {
                if args.no_wait {
                    return Err(JournalError::LeaseHeld {
                        account: base_url.to_owned(),
                        host: holder.host,
                        pid: holder.pid,
                        since: holder.since,
                    }
                    .into());
                }
                if !standing_by {
                    tracing::info!(
                        "standing by: account {base_url} is being sent by {} (pid {}) since {}; \
                         taking over if it stops renewing its {} lease",
                        holder.host,
                        holder.pid,
                        holder.since,
                        humantime::format_duration(lease)
                    );
                    standing_by = true;
                }
                if interrupted_within(poll).await {
                    anyhow::bail!(StandbyInterrupted);
                }
            }
        }
    }
    let held = HeldLease { renewal };
    if let Some(span) = limiter.longest_window() {
        let ended = journal.recent_request_ends(span, request_timeout).await?;
        limiter.reseed(&ended);
    }
    Ok(held)
}

/// A signal stopped a process that was standing by; it had sent nothing.
#[derive(Debug, thiserror::Error)]
#[error("interrupted while standing by; nothing was sent from here")]
pub(crate) struct StandbyInterrupted;

/// Sleeps `pause`; `true` if SIGINT or SIGTERM came first.
async fn interrupted_within(pause: Duration) -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tokio::time::sleep(pause).await;
        return false;
    };
    tokio::select! {
        _ = tokio::time::sleep(pause) => false,
        _ = interrupt.recv() => true,
        _ = terminate.recv() => true,
    }
}

/// Counts in the limiter's windows the requests the journal recorded lately (by this command's
/// predecessors, or another command), before this one makes any. Seeding a limiter twice
/// changes nothing.
pub(crate) async fn seed_limiter(
    limiter: &Limiter,
    journal: &Journal,
    request_timeout: Duration,
) -> anyhow::Result<()> {
    // Only the first seed counts: no need to read the journal's recent requests again.
    if limiter.is_seeded() {
        return Ok(());
    }
    if let Some(span) = limiter.longest_window() {
        let ended = journal.recent_request_ends(span, request_timeout).await?;
        limiter.seed(&ended);
    }
    Ok(())
}

/// What a command that works on one run against CertCentral (`dcv check`, `approve`) holds
/// while it works: the journal, opened and locked; the run; a connection whose limiter starts
/// with the journal's recent requests in its windows; and a token that SIGINT/SIGTERM cancel.
pub(crate) struct RunCommand {
    pub journal: Journal,
    pub run: RunRow,
    pub connection: Connection,
    pub cancel: CancellationToken,
    signals: tokio::task::JoinHandle<()>,
    lease_args: super::LeaseArgs,
    lease: Option<HeldLease>,
}

impl RunCommand {
    /// Opens the journal and the run (`run_id`, or the newest), then the connection, seeded.
    pub(crate) async fn start(
        journal_path: &std::path::Path,
        run_id: Option<i64>,
        args: &ConnectionArgs,
        lease_args: &super::LeaseArgs,
    ) -> anyhow::Result<Self> {
        let journal = Journal::open(journal_path).await?;
        let run = journal.run_or_newest(run_id).await?;
        let connection = Connection::new(args, Some(&run))?;
        seed_limiter(&connection.limiter, &journal, connection.timeout).await?;
        let cancel = CancellationToken::new();
        let signals = tokio::spawn(on_signals(cancel.clone()));
        Ok(Self {
            journal,
            run,
            connection,
            cancel,
            signals,
            lease_args: lease_args.clone(),
            lease: None,
        })
    }

    /// Makes sure the key is of the run's account, then (on a PostgreSQL journal) takes the
    /// account's lease, standing by while another process holds it; before the command's first
    /// request for the run. A command with nothing to send does not call this, and asks
    /// CertCentral nothing. What the command then does is read from the journal after the
    /// lease is taken, so a predecessor's work is seen, not done again.
    async fn identify(&mut self) -> anyhow::Result<()> {
        let identity = self
            .connection
            .identify_for_run(&self.journal, &self.run)
            .await?;
        let account = lease_account(Some(&identity), &self.connection.base_url);
        let lease = hold_account(
            &self.journal,
            &account,
            &self.lease_args,
            &self.connection.limiter,
            self.connection.timeout,
            self.connection.timeout,
        )
        .await?;
        self.lease = Some(lease);
        Ok(())
    }

    /// Carries out the command's work on the run when it has any (`has_work`), with the key
    /// identified and the lease taken first ([`RunCommand::identify`]); without work nothing is
    /// asked of CertCentral, even if work appears meanwhile, and the outcome is the empty one.
    /// `Err`: the key could not be identified or the lease not taken (nothing was sent).
    pub(crate) async fn work<'a, T, E, Fut>(
        &'a mut self,
        has_work: bool,
        work: impl FnOnce(&'a Self) -> Fut,
    ) -> anyhow::Result<Result<T, E>>
    where
        T: Default,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        if !has_work {
            return Ok(Ok(T::default()));
        }
        self.identify().await?;
        Ok(work(self).await)
    }

    /// Stops listening for signals, gives the lease up and closes the journal; what is left is
    /// the run.
    pub(crate) async fn finish(mut self) -> RunRow {
        self.signals.abort();
        if let Some(lease) = self.lease.take() {
            lease.release(&self.journal).await;
        }
        self.journal.close().await;
        self.run
    }
}

/// How long `count` reissues take at the limiter's quotas, from its windows as they are:
/// `1,000 reissues: about 45 s at 100/5s + 1000/3m`.
pub(crate) fn expected_duration(limiter: &Limiter, count: u64) -> String {
    crate::progress::expected_duration(count, limiter.quotas(), limiter.fastest_finish(count))
}

/// On a terminal, asks before sending, saying how long it will take; `--yes` or no terminal
/// means yes.
pub(crate) fn confirm(
    to_send: u64,
    base_url: &str,
    expected: &str,
    yes: bool,
) -> std::io::Result<bool> {
    if yes || to_send == 0 || !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(true);
    }
    let mut stderr = std::io::stderr();
    write!(
        stderr,
        "About to send {to_send} reissue request(s) to {base_url}.\n\
         {expected} (the quotas are per API key, shared with any other integration using the \
         same key; lower them with --rate if another one is busy).\n\
         Continue? [y/N] "
    )?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// Runs the runner on `run_id` with progress, signals and the summary; returns the exit code.
pub(crate) async fn execute(
    journal: &Journal,
    run_id: i64,
    sender: Sender,
) -> anyhow::Result<Exit> {
    seed_limiter(&sender.limiter, journal, sender.options.request_timeout).await?;
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(on_signals(cancel.clone()));
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let time_left: Option<crate::progress::TimeLeft> = match sender.limiter.quotas() {
        [] => None,
        _ => {
            let limiter = sender.limiter.clone();
            Some(Box::new(move |left| limiter.fastest_finish(left)))
        }
    };
    let display = tokio::spawn(crate::progress::show(events_rx, run_id, time_left));
    let deps = Deps {
        journal,
        client: sender.client,
        limiter: sender.limiter,
        events: Some(events_tx),
    };
    let result = runner::run(run_id, &sender.options, deps, cancel).await;
    let _ = display.await;
    signals.abort();
    let summary = result?;
    eprint!(
        "{}",
        crate::progress::summary(run_id, &summary, journal.path())
    );
    explain_untrusted(&summary);
    Ok(exit_for(&summary))
}

/// When a refused server certificate stopped the run: whose it is, and how to trust it.
pub(crate) fn explain_untrusted(summary: &runner::RunSummary) {
    if let Some(server) = &summary.untrusted {
        eprintln!(
            "error: {}\nNo request left for it; unsent orders are still pending (reissuer resume \
             continues once the certificate is trusted).",
            server.explain()
        );
    }
}

fn exit_for(summary: &runner::RunSummary) -> Exit {
    let counts = &summary.counts;
    match summary.stop {
        StopReason::CredentialsRefused => Exit::Credentials,
        StopReason::Unreachable | StopReason::Untrusted => Exit::Unreachable,
        StopReason::Interrupted => Exit::Interrupted,
        StopReason::Finished
            if counts.get(ItemState::Succeeded) + counts.get(ItemState::Skipped)
                == counts.total() =>
        {
            Exit::Ok
        }
        StopReason::Finished => Exit::SomeFailed,
    }
}

/// First SIGINT/SIGTERM: cancel (no new sends). Second: exit 3 at once; the write-ahead marks
/// keep the journal consistent.
pub(crate) async fn on_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    for round in 0..2 {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        if round == 0 {
            cancel.cancel();
        } else {
            let _ = writeln!(std::io::stderr(), "second signal: stopping now");
            std::process::exit(Exit::Interrupted as i32);
        }
    }
}
