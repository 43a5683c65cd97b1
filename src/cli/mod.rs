//! The command line: clap types, one file per subcommand, and the edge where errors become exit
//! codes. Nothing below this module prints or knows about clap.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Quota;
use crate::exit::Exit;

pub mod approve;
mod collect;
mod color;
pub mod dcv;
mod demo;
mod docs;
pub mod keygen;
mod prune;
mod run;
pub mod select;
mod send;
pub mod simulate;
mod status;
mod validate;

/// Reissues DigiCert CertCentral certificates in bulk: exactly once, inside the account's rate
/// limits, with a journal that survives crashes and reruns.
#[derive(Debug, Parser)]
#[command(
    name = "reissuer",
    version,
    propagate_version = true,
    after_help = "The API key comes from DIGICERT_API_KEY or --api-key-file and is never written anywhere. \
Every command that talks to CertCentral first asks who the key belongs to (GET /user/me): runs are \
recorded with that account id and scoped by it.\n\n\
Exit codes: 0 every order succeeded or was skipped; 1 some failed, are uncertain or invalid; \
2 usage error or invalid manifest (nothing sent); 3 interrupted by SIGINT/SIGTERM (resumable); \
4 credentials refused (401/403), or the key is not of the run's account; 5 the journal is locked by another process, or (PostgreSQL journal) another process sends for the account \
(--no-wait) or took the lease over; \
6 CertCentral unreachable, or its server certificate not trusted (unsent items still pending).\n\n\
Colour: only on a terminal (--color auto), or always, or never; never when NO_COLOR is set \
to anything but the empty string, whatever --color says."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// The journal that records runs, orders and every request: a SQLite file [default:
    /// reissuer.db; for `demo`, one in a new temporary directory], or a PostgreSQL database
    /// (`postgres://USER@HOST/DB`) that several hosts may share.
    #[arg(long, global = true, env = "REISSUER_JOURNAL")]
    pub journal: Option<PathBuf>,

    /// Log line format on stderr (filter with RUST_LOG, e.g. RUST_LOG=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Colour in log lines: auto (only when stderr is a terminal), always, or never. NO_COLOR
    /// set to anything but the empty string turns colour off whatever this says.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl Cli {
    /// `--journal`, or `reissuer.db` in the current directory.
    pub fn journal_path(&self) -> PathBuf {
        self.journal
            .clone()
            .unwrap_or_else(|| PathBuf::from("reissuer.db"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the manifest, record it as a run, send every reissue not already done.
    Run(RunArgs),
    /// Continue the newest unfinished run (or --run ID) from the journal alone.
    Resume(ResumeArgs),
    /// Put a run's failed items back to pending and send them again.
    Retry(RetryArgs),
    /// Show the runs in the journal, or one run: counts per state, start/end, options.
    Status(StatusArgs),
    /// One row per order with its outcome, as CSV or JSON.
    Report(ReportArgs),
    /// Parse, build and check every payload; no network, no journal.
    Validate(ValidateArgs),
    /// Run the bundled sample manifest against the built-in simulator; needs no API key.
    Demo(DemoArgs),
    /// Wait for a run's reissues to be issued, download each certificate (PEM chain), check its
    /// key against the CSR that was sent, and write DIR/<order_id>.pem.
    Collect(CollectArgs),
    /// Run the built-in CertCentral simulator (test equipment) and print its base URL.
    Simulate(simulate::SimulateArgs),
    /// Generate a private key and CSR per order, and a new manifest that points at the CSRs.
    #[command(long_about = keygen::LONG_ABOUT)]
    Keygen(keygen::KeygenArgs),
    /// Domain control for token-DCV reissues: `dcv check` asks CertCentral to check it.
    Dcv(dcv::DcvArgs),
    /// Approve the run's reissue requests that wait for approval, each exactly once.
    #[command(long_about = approve::LONG_ABOUT)]
    Approve(approve::ApproveArgs),
    /// Remove finished runs (their items and attempts) from the journal and reclaim the space.
    #[command(long_about = prune::LONG_ABOUT)]
    Prune(prune::PruneArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(long_about = docs::COMPLETIONS_ABOUT)]
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff), e.g. `reissuer man > reissuer.1`.
    Man,
    /// Write the account's orders that match every filter as a manifest (order_id,common_name,
    /// dns_names) for keygen and run --fill-from-order.
    #[command(long_about = select::LONG_ABOUT)]
    Select(select::SelectArgs),
}

/// How a manifest is read into orders.
#[derive(Debug, Clone, Args)]
pub struct ManifestArgs {
    /// The manifest: a .csv or .toml file of orders.
    ///
    /// A CSV has a header row of field names, then one order per row. Its cells are separated by
    /// commas and a list's items (dns_names, emails...) by semicolons; when the header is
    /// separated by semicolons instead, as spreadsheets save CSV where the decimal separator is a
    /// comma, cells are separated by semicolons and list items by commas. Either file may be
    /// UTF-8 (with or without a byte-order mark) or UTF-16 with a byte-order mark, with any line
    /// endings.
    pub manifest: PathBuf,

    /// A default for every order that does not set PATH, e.g. --set signature_hash=sha256.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub defaults: Vec<String>,

    /// Accept a common_name that is neither the CSR's CN nor one of its DNS names.
    #[arg(long)]
    pub allow_cn_mismatch: bool,
}

/// Which account, and how fast: what every command that talks to CertCentral takes.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// CertCentral API base URL; plain http:// only to a loopback host.
    #[arg(long, env = "DIGICERT_BASE_URL", conflicts_with = "region")]
    pub base_url: Option<String>,

    /// Shorthand for the documented base URLs: us (www.digicert.com) or eu (certcentral.digicert.eu).
    #[arg(long, value_enum)]
    pub region: Option<Region>,

    /// Read the API key from this file instead of DIGICERT_API_KEY.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,

    /// A rolling-window quota N/DURATION (ms, s, m, h), repeatable; all are enforced at once:
    /// in every interval of DURATION, at most N requests start (every request counts: reissues,
    /// lookups, fill, collect). A window's whole allowance may be used at once.
    /// Default: `--rate 100/5s --rate 1000/3m`, DigiCert's current account limits. They are per
    /// API key and shared with any other integration using the same key: give that one room by
    /// lowering them (e.g. `--rate 50/5s --rate 500/3m`). `--rate unlimited` turns the limiter
    /// off (test servers only).
    #[arg(long = "rate", value_name = "N/DURATION")]
    pub rates: Vec<String>,

    /// Per-request timeout.
    #[arg(long, default_value = "60s", value_parser = parse_duration_arg)]
    pub timeout: std::time::Duration,

    /// Also trust the CA certificate(s) in this PEM file (a company CA, say), besides the
    /// system trust store (which honours SSL_CERT_FILE and SSL_CERT_DIR). Proxies come from
    /// HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY.
    #[arg(long, value_name = "PATH", env = "REISSUER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// How reissues are sent.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Attempts per order before it is marked failed.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Send without asking, even on a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Send items whose outcome could not be decided by reconciliation (may send twice).
    #[arg(long)]
    pub resend_uncertain: bool,

    /// When CertCentral cannot be reached (or answers only 5xx), every worker pauses and one
    /// probe at a time checks with a growing interval; no order spends attempts on it. If the
    /// outage lasts longer than this, the run stops with unsent orders pending and exits 6.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration_arg)]
    pub give_up_after: std::time::Duration,
    /// How long after it was sent a reissue whose answer was lost (timeout, reset, crash) may
    /// still take effect at CertCentral. Until then a lookup that does not find it is not
    /// trusted: the order stays uncertain, is looked up again, and is never resent; other orders
    /// go on. Raise it when CertCentral is slow (a mass revocation day); a resend of a lost
    /// request waits this long.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration_arg)]
    pub settle: std::time::Duration,

    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// The account's lease on a PostgreSQL journal, for every command that acts for an account
/// (`run`, `resume`, `retry`, `collect`, `dcv check`, `approve`).
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// With a PostgreSQL journal: one process acts for an account at a time (sends, collects,
    /// checks DCV or approves), holding a lease it renews every third of this. When the holder
    /// stops renewing (killed, frozen, cut off) a standby takes over once the lease runs out,
    /// waits out the holder's --timeout (and, after a collect, its --hook-timeout), then
    /// reconciles what it left in flight.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration_arg)]
    pub lease: std::time::Duration,

    /// With a PostgreSQL journal: when another process holds the account's lease, exit 5 at
    /// once instead of standing by.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Region {
    Us,
    Eu,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,

    #[command(flatten)]
    pub send: SendArgs,

    /// Print each payload as one JSON line; send nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Send even orders whose identical payload already succeeded in this journal.
    #[arg(long)]
    pub force: bool,

    /// Record invalid rows as `invalid` and send the valid ones, instead of refusing the manifest.
    #[arg(long)]
    pub skip_invalid: bool,

    /// Fill each order's unset common_name, dns_names, server_platform.id and signature_hash
    /// from its live order (GET /order/certificate/{id}, counted against the quotas; fetched
    /// once per order and kept in the journal). Values in the manifest win.
    #[arg(long, conflicts_with = "dry_run")]
    pub fill_from_order: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run to continue (default: the newest unfinished one).
    #[arg(long = "run", value_name = "ID")]
    pub run_id: Option<i64>,

    #[command(flatten)]
    pub send: SendArgs,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The run whose failed items are retried (default: the newest run).
    #[arg(long = "run", value_name = "ID")]
    pub run_id: Option<i64>,

    /// Also retry items CertCentral rejected (4xx), not only transient failures.
    #[arg(long)]
    pub all: bool,

    #[command(flatten)]
    pub send: SendArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show one run in detail.
    #[arg(long = "run", value_name = "ID")]
    pub run_id: Option<i64>,

    /// Print JSON instead of a table (every run, oldest first, unless --last is given).
    #[arg(long)]
    pub json: bool,

    /// Show every run (the table shows the newest 10 by default).
    #[arg(long, conflicts_with_all = ["run_id", "last"])]
    pub all: bool,

    /// Show the newest N runs.
    #[arg(long, value_name = "N", conflicts_with = "run_id",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub last: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run to report on (default: the newest run).
    #[arg(long = "run", value_name = "ID")]
    pub run_id: Option<i64>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Csv)]
    pub format: ReportFormat,

    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Write the DCV tokens instead, for DNS/HTTP validation automation: one row per order
    /// whose reissue returned a dcv_random_value, with columns
    /// order_id,dcv_method,dcv_random_value,common_name,dns_names (method and names as sent;
    /// dns_names ;-separated in CSV, an array in JSON).
    #[arg(long)]
    pub dcv: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,

    /// Print each payload as one JSON line, as `run --dry-run` does.
    #[arg(long)]
    pub print: bool,

    /// Base URL used in the printed `url` fields.
    #[arg(long, env = "DIGICERT_BASE_URL", conflicts_with = "region")]
    pub base_url: Option<String>,

    /// Shorthand for the documented base URLs.
    #[arg(long, value_enum)]
    pub region: Option<Region>,
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// The run whose certificates are collected (default: the newest run).
    #[arg(long = "run", value_name = "ID")]
    pub run_id: Option<i64>,

    /// Where the certificates go, as <order_id>.pem (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// How long to wait for reissues to be issued, polling with a growing interval; 0s looks
    /// once.
    #[arg(long, default_value = "0s", value_parser = parse_duration_arg)]
    pub wait: std::time::Duration,

    /// Run CMD (through sh -c) once for each certificate written and key-checked, with
    /// REISSUER_ORDER_ID, REISSUER_CERT_FILE, REISSUER_KEY_FILE (the <order_id>.key keygen wrote
    /// beside the run's manifest, when it holds the certificate's key), REISSUER_COMMON_NAME and
    /// REISSUER_DNS_NAMES (space-separated) set, and neither DIGICERT_API_KEY nor any variable
    /// holding the key. A hook that exits 0 never runs again for that certificate; one that
    /// fails or times out is reported and runs again with the next collect (which exits 1).
    /// Killed while a hook runs, the next collect runs that hook again.
    #[arg(long, value_name = "CMD")]
    pub deploy_hook: Option<String>,

    /// A deploy hook still running after this is killed (with everything it started) and
    /// counts as failed.
    #[arg(long, default_value = "5m", value_parser = parse_duration_arg, requires = "deploy_hook")]
    pub hook_timeout: std::time::Duration,

    /// Deploy hooks running at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64), requires = "deploy_hook")]
    pub hook_concurrency: u32,

    #[command(flatten)]
    pub connection: ConnectionArgs,

    #[command(flatten)]
    pub lease: LeaseArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The manifest to run [default: the bundled samples/orders.csv].
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(text).map_err(|e| e.to_string())
}

/// Resolves `--base-url` / `--region` to a checked base URL.
pub(crate) fn resolve_base_url(
    base_url: Option<&str>,
    region: Option<Region>,
) -> anyhow::Result<String> {
    let url = match (base_url, region) {
        (Some(url), _) => url,
        (None, Some(Region::Eu)) => crate::config::EU_BASE_URL,
        (None, _) => crate::config::US_BASE_URL,
    };
    Ok(crate::config::check_base_url(url)?)
}

/// Parses `--rate` values; none means the default quotas, `unlimited` means none at all.
pub(crate) fn resolve_quotas(rates: &[String]) -> anyhow::Result<Vec<Quota>> {
    if rates.is_empty() {
        return Ok(crate::config::default_quotas());
    }
    if rates.iter().any(|r| r.eq_ignore_ascii_case("unlimited")) {
        anyhow::ensure!(
            rates.len() == 1,
            "--rate unlimited cannot be combined with quotas"
        );
        return Ok(Vec::new());
    }
    rates
        .iter()
        .map(|r| r.parse::<Quota>().map_err(anyhow::Error::from))
        .collect()
}

/// Runs the command and turns its outcome into the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match dispatch(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            match untrusted_server(&err) {
                Some(server) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "error: {}\nNothing was changed; run the command again once the \
                         certificate is trusted.",
                        server.explain()
                    );
                }
                None => {
                    let _ = writeln!(std::io::stderr(), "error: {err:#}");
                }
            }
            exit_for_error(&err).into()
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    match &cli.command {
        Command::Validate(args) => return validate::validate(args),
        Command::Run(args) if args.dry_run => return validate::dry_run(args),
        Command::Completions(args) => return docs::completions(args),
        Command::Man => return docs::man(),
        _ => {}
    }
    init_tracing(cli.log_format, cli.color);
    if let Command::Keygen(args) = &cli.command {
        return keygen::keygen(&cli.journal_path(), args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Command::Simulate(args) = cli.command {
        return runtime.block_on(simulate::run(args)).map(|()| Exit::Ok);
    }
    runtime.block_on(async {
        match &cli.command {
            Command::Run(args) => run::run(&cli, args).await,
            Command::Resume(args) => run::resume(&cli, args).await,
            Command::Retry(args) => run::retry(&cli, args).await,
            Command::Status(args) => status::status(&cli, args).await,
            Command::Report(args) => status::report(&cli, args).await,
            Command::Demo(args) => demo::demo(&cli, args).await,
            Command::Collect(args) => collect::collect(&cli, args).await,
            Command::Dcv(args) => dcv::dcv(&cli, args).await,
            Command::Approve(args) => approve::approve(&cli, args).await,
            Command::Prune(args) => prune::prune(&cli, args).await,
            Command::Select(args) => select::select(&cli, args).await,
            Command::Simulate(_) => unreachable!("handled above"),
            Command::Validate(_) => unreachable!("handled above"),
            Command::Keygen(_) => unreachable!("handled above"),
            Command::Completions(_) | Command::Man => unreachable!("handled above"),
        }
    })
}

/// Logs go to stderr through the progress bar's writer, so a log line never tears the bar.
/// Colour only as `--color` and the terminal allow: cron mail and log files get plain lines.
fn init_tracing(format: LogFormat, color: ColorChoice) {
    use std::io::IsTerminal;
    let ansi = color::enabled(
        color,
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let indicatif = tracing_indicatif::IndicatifLayer::new();
    let writer = indicatif.get_stderr_writer();
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi)
                    .with_target(false),
            )
            .with(indicatif)
            .try_init(),
        // Machine-read logs get no progress bar.
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    let _ = result;
}

/// The refused server certificate, when that is what stopped the command: from whichever
/// command, wrapped in whatever error.
pub(crate) fn untrusted_server(err: &anyhow::Error) -> Option<&crate::api::UntrustedServer> {
    err.chain().find_map(|cause| {
        cause
            .downcast_ref::<crate::api::UntrustedServer>()
            .or_else(|| match cause.downcast_ref::<crate::api::ApiError>() {
                Some(crate::api::ApiError::Untrusted(server)) => Some(server.as_ref()),
                _ => None,
            })
    })
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    let broken = |kind: Option<std::io::ErrorKind>| kind == Some(std::io::ErrorKind::BrokenPipe);
    err.chain().any(|cause| {
        broken(cause.downcast_ref::<std::io::Error>().map(std::io::Error::kind))
            // JSON written straight to stdout reports the pipe through its own error type.
            || broken(cause.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind))
    })
}

/// Picks the exit code for an error that reached the edge: typed errors decide, anything else is
/// a usage error (nothing was sent).
fn exit_for_error(err: &anyhow::Error) -> Exit {
    use crate::journal::JournalError;
    if untrusted_server(err).is_some() {
        return Exit::Unreachable;
    }
    for cause in err.chain() {
        if cause.downcast_ref::<send::StandbyInterrupted>().is_some() {
            return Exit::Interrupted;
        }
        if let Some(
            JournalError::Locked { .. }
            | JournalError::LeaseHeld { .. }
            | JournalError::LeaseLost { .. },
        ) = cause.downcast_ref::<JournalError>()
        {
            return Exit::Locked;
        }
        if let Some(crate::campaign::collect::CollectError::Credentials) = cause.downcast_ref() {
            return Exit::Credentials;
        }
        if let Some(crate::campaign::fill::FillError::Credentials { .. }) = cause.downcast_ref() {
            return Exit::Credentials;
        }
        if let Some(crate::runner::RunnerError::Journal(JournalError::LeaseLost { .. })) =
            cause.downcast_ref()
        {
            return Exit::Locked;
        }
        if let Some(err) = cause.downcast_ref::<crate::identity::IdentityError>() {
            use crate::identity::IdentityError;
            return match err {
                IdentityError::Refused(_) | IdentityError::OtherAccount { .. } => Exit::Credentials,
                IdentityError::Unreachable(_) => Exit::Unreachable,
                IdentityError::NoAccount | IdentityError::Rejected { .. } => Exit::Usage,
            };
        }
        if let Some(err) = cause.downcast_ref::<crate::campaign::select::SelectError>() {
            use crate::campaign::select::SelectError;
            use crate::reads::ReadError;
            return match err {
                SelectError::Credentials(_) => Exit::Credentials,
                SelectError::List {
                    source: ReadError::GaveUp { .. },
                    ..
                } => Exit::Unreachable,
                SelectError::List { .. } => Exit::Usage,
                SelectError::Incomplete { .. } => Exit::SomeFailed,
            };
        }
        if cause.downcast_ref::<crate::runner::RunnerError>().is_some() {
            return Exit::SomeFailed;
        }
    }
    Exit::Usage
}
