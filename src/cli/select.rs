//! `select [FILTERS] --out FILE`: the account's orders that match every filter, as a manifest
//! for `keygen` and `run --fill-from-order`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use indicatif::ProgressStyle;
use time::Date;
use tracing::Instrument;
use tracing_indicatif::span_ext::IndicatifSpanExt;

use crate::campaign::select::{
    self, DomainPattern, Filters, Format, KNOWN_HASHES, KNOWN_STATUSES, ListProgress,
};
use crate::exit::Exit;

use super::send::{Connection, UsageError};
use super::{Cli, ConnectionArgs};

/// `select --help`: what it reads, what it writes, what it promises.
pub(crate) const LONG_ABOUT: &str =
    "Choose a campaign's orders from the account: list every order \
(GET /order/certificate, every page of at most 1000, through the rate limiter), keep those that \
match every filter, and write them to FILE as a manifest with columns \
order_id,common_name,dns_names (DNS names separated by ';') that `keygen` and \
`run --fill-from-order` take.

Filters: a repeated filter matches any of its values; different filters must all match. \
Filters with a documented server syntax (one --status, one --product, one --domain without \
wildcards, --organization, --container) are also sent to CertCentral so it lists less; every \
filter is checked again on what comes back, so a server that ignores or refuses a filter \
neither widens nor narrows the selection.

FILE is written whole (a temporary file renamed into place) or not at all; an existing FILE is \
replaced. No match writes the header only, and says so. The requests count against --rate and \
are recorded in the journal, like every other command's. Like every command that talks to \
CertCentral, select first asks who the key is (GET /user/me): a refused key exits 4 and writes \
nothing.

Exit: 0 written (even with no match); 1 the listing came back incomplete (nothing written); \
2 usage error; 4 the key was refused; 6 CertCentral unreachable.

Examples:
  reissuer select --signature-hash sha1 --out sha1.csv
  reissuer select --domain example.com --domain '*.example.com' --out example.csv
  reissuer select --expires-before 2027-03-01 --status issued --out expiring.csv";

/// `select [FILTERS] --out FILE [--format csv|json]`.
#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Keep orders in this status (repeatable) [default: issued]. `any` keeps every status.
    /// Known: issued, expired, pending, needs_approval, reissue_pending, waiting_pickup,
    /// revoked, rejected, canceled.
    #[arg(long = "status", value_name = "STATUS", value_parser = select::parse_name)]
    pub statuses: Vec<String>,

    /// Keep orders of this product (its name_id, e.g. ssl_plus, ssl_wildcard; repeatable).
    #[arg(long = "product", value_name = "NAME_ID", value_parser = select::parse_name)]
    pub products: Vec<String>,

    /// Keep orders whose common name or any DNS name matches PATTERN (repeatable). `*` matches
    /// any run of characters, dots too; case does not matter. `example.com` is that name only:
    /// add `*.example.com` for its subdomains.
    #[arg(long = "domain", value_name = "PATTERN", value_parser = DomainPattern::parse)]
    pub domains: Vec<DomainPattern>,

    /// Keep orders whose certificate's valid_till is before DATE (YYYY-MM-DD).
    #[arg(long, value_name = "DATE", value_parser = select::parse_date)]
    pub expires_before: Option<Date>,

    /// Keep orders whose certificate's valid_till is after DATE (YYYY-MM-DD).
    #[arg(long, value_name = "DATE", value_parser = select::parse_date)]
    pub expires_after: Option<Date>,

    /// Keep orders whose certificate is signed with this hash: sha1, sha256, sha384, sha512
    /// (repeatable; case does not matter).
    #[arg(long = "signature-hash", value_name = "HASH", value_parser = select::parse_name)]
    pub signature_hashes: Vec<String>,

    /// Keep orders of this organization id.
    #[arg(long, value_name = "ID")]
    pub organization: Option<u64>,

    /// Keep orders in this container id.
    #[arg(long, value_name = "ID")]
    pub container: Option<u64>,

    /// Where the selection goes.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// csv: the manifest (order_id,common_name,dns_names); json: an array of objects with those
    /// and status, product, valid_till, signature_hash, organization_id, container_id.
    #[arg(long, value_enum, default_value_t = SelectFormat::Csv)]
    pub format: SelectFormat,

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SelectFormat {
    Csv,
    Json,
}

/// The filters the flags ask for, checked.
fn filters(args: &SelectArgs) -> anyhow::Result<Filters> {
    let statuses = match args.statuses.as_slice() {
        [] => vec!["issued".to_owned()],
        all if all.iter().any(|s| s == "any") => Vec::new(),
        some => some.to_vec(),
    };
    for status in &statuses {
        if !KNOWN_STATUSES.contains(&status.as_str()) {
            tracing::warn!(
                "--status {status}: not a status CertCentral is known to give ({}); orders in it are kept if there are any",
                KNOWN_STATUSES.join(", ")
            );
        }
    }
    for hash in &args.signature_hashes {
        if !KNOWN_HASHES.contains(&hash.as_str()) {
            tracing::warn!(
                "--signature-hash {hash}: not a hash CertCentral is known to list ({})",
                KNOWN_HASHES.join(", ")
            );
        }
    }
    let filters = Filters {
        statuses,
        products: args.products.clone(),
        domains: args.domains.clone(),
        expires_before: args.expires_before,
        expires_after: args.expires_after,
        signature_hashes: args.signature_hashes.clone(),
        organization: args.organization,
        container: args.container,
    };
    filters
        .check()
        .map_err(|e| UsageError(format!("{e}; nothing was listed")))?;
    Ok(filters)
}

/// The directory `--out` goes into must exist before anything is listed.
fn check_out(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(UsageError(format!(
            "--out {}: directory {} does not exist; nothing was listed",
            path.display(),
            dir.display()
        ))
        .into());
    }
    if path.is_dir() {
        return Err(UsageError(format!(
            "--out {} is a directory; name a file",
            path.display()
        ))
        .into());
    }
    Ok(())
}

pub(crate) async fn select(cli: &Cli, args: &SelectArgs) -> anyhow::Result<Exit> {
    let filters = filters(args)?;
    check_out(&args.out)?;
    let connection = Connection::new(&args.connection, None)?;
    let journal_path = cli.journal_path();
    let journal_existed = journal_path.exists();
    let journal = crate::journal::Journal::open(&journal_path).await?;
    let identity = match connection.identify(&journal).await {
        Ok(identity) => identity,
        Err(err) => {
            journal.close().await;
            if !journal_existed {
                super::run::remove_journal_files(&journal_path);
            }
            return Err(err);
        }
    };
    let mut attempts = Vec::new();
    let result = list(&connection, &filters, &mut attempts).await;
    for attempt in &attempts {
        journal.record_request(&attempt.sent("list_orders")).await?;
    }
    journal.close().await;
    let selection = result?;
    let format = match args.format {
        SelectFormat::Csv => Format::Csv,
        SelectFormat::Json => Format::Json,
    };
    select::write(&args.out, format, &selection.matched)?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "account {}: listed {} order(s) in {} page(s), {} request(s); {} matched every filter",
        identity.account_id,
        selection.listed,
        selection.pages,
        attempts.len(),
        selection.matched.len()
    )?;
    if selection.without_id > 0 {
        writeln!(
            out,
            "{} listed order(s) had no id and were left out",
            selection.without_id
        )?;
    }
    if selection.matched.is_empty() {
        writeln!(
            out,
            "no order matched: wrote {} with the header only",
            args.out.display()
        )?;
    } else {
        writeln!(
            out,
            "wrote {} order(s) to {}",
            selection.matched.len(),
            args.out.display()
        )?;
        if format == Format::Csv {
            writeln!(
                out,
                "next: reissuer keygen {} --out DIR --fill-from-order",
                args.out.display()
            )?;
        }
    }
    out.flush()?;
    Ok(Exit::Ok)
}

/// Lists with a progress bar on a terminal, a log line per page otherwise.
async fn list(
    connection: &Connection,
    filters: &Filters,
    attempts: &mut Vec<crate::reads::Attempt>,
) -> Result<select::Selection, select::SelectError> {
    let terminal = std::io::stderr().is_terminal();
    let span = tracing::info_span!("select");
    if terminal {
        let style = ProgressStyle::with_template(
            "{spinner} listing orders [{bar:30}] {pos}/{len} ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        span.pb_set_style(&style);
    }
    let on_page = |progress: ListProgress| {
        if terminal {
            if let Some(total) = progress.total {
                span.pb_set_length(total);
            }
            span.pb_set_position(progress.read);
        } else {
            let total = progress
                .total
                .map_or_else(|| "?".to_owned(), |t| t.to_string());
            tracing::info!("listed {} of {total} order(s)", progress.read);
        }
    };
    select::select(
        &connection.client,
        &connection.limiter,
        crate::reads::DEFAULT_GIVE_UP_AFTER,
        filters,
        attempts,
        on_page,
    )
    .instrument(span.clone())
    .await
}
