//! `dcv check`: ask CertCentral to check domain control for a run's token-DCV reissues.

use std::io::Write;

use crate::campaign::dcv::check::{self, CheckOptions, DcvCheckError};
use crate::exit::Exit;

use super::{Cli, ConnectionArgs, send};

pub(crate) const CHECK_LONG_ABOUT: &str = "\
Asks CertCentral to check domain control (PUT /order/certificate/{id}/check-dcv) for every order \
of the run whose reissue used a token DCV method (dns-txt-token, dns-cname-token, http-token) and \
is not validated yet, under the rate limiter, and records each order's and each name's status in \
the journal.

Publish the tokens first: `reissuer report --dcv` lists them with their method and names. A \
\"not found yet\" answer (invalid_dns_txt, file_random_value_not_found, ...) is not a failure: \
the order keeps waiting. With --wait, orders still waiting are checked again with a growing \
interval (2s, 4s, 8s, ... at most 5m) until all are validated or the time is up. A token that \
has run out is replaced (PUT .../dcv-random-value) and the new value shows in `report --dcv`: \
publish it and check again.

Prints the orders still waiting and their names on stdout, one per line. Exit 0 when no order of \
the run awaits DCV, 1 when some still do, 3 when interrupted, 4 when the key is refused.";

/// `dcv` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DcvCommand {
    /// Ask CertCentral to check domain control for the run's token-DCV reissues.
    #[command(long_about = CHECK_LONG_ABOUT)]
    Check(DcvCheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct DcvArgs {
    #[command(subcommand)]
    pub command: DcvCommand,
}

#[derive(Debug, clap::Args)]
pub struct DcvCheckArgs {
    /// The run whose orders are checked (default: the newest run).
    #[arg(long = "run", value_name = "ID")]
    pub run_id: Option<i64>,

    /// Keep checking the orders that still wait, with a growing interval, for this long; 0s
    /// checks once.
    #[arg(long, default_value = "0s", value_parser = super::parse_duration_arg)]
    pub wait: std::time::Duration,

    #[command(flatten)]
    pub connection: ConnectionArgs,

    #[command(flatten)]
    pub lease: super::LeaseArgs,
}

pub(crate) async fn dcv(cli: &Cli, args: &DcvArgs) -> anyhow::Result<Exit> {
    match &args.command {
        DcvCommand::Check(args) => check(cli, args).await,
    }
}

async fn check(cli: &Cli, args: &DcvCheckArgs) -> anyhow::Result<Exit> {
    let mut command = send::RunCommand::start(
        &cli.journal_path(),
        args.run_id,
        &args.connection,
        &args.lease,
    )
    .await?;
    let has_work = !command
        .journal
        .dcv_waiting(command.run.id)
        .await?
        .is_empty();
    let options = CheckOptions {
        wait: args.wait,
        concurrency: command.connection.concurrency,
    };
    let worked = command
        .work(has_work, |command| {
            check::check(
                &command.journal,
                &command.connection.client,
                &command.connection.limiter,
                command.run.id,
                &options,
                &command.cancel,
            )
        })
        .await;
    let run = command.finish().await;
    let result = worked?;
    let summary = match result {
        Ok(summary) => summary,
        Err(DcvCheckError::Credentials(why)) => {
            eprintln!(
                "error: {why}: the key cannot check DCV for this account; nothing more was sent"
            );
            return Ok(Exit::Credentials);
        }
        Err(err) => return Err(err.into()),
    };
    let mut out = std::io::stdout().lock();
    for order in &summary.waiting {
        writeln!(
            out,
            "order {} awaits DCV ({}): {}",
            order.order_id,
            order.reason,
            if order.names.is_empty() {
                "names unknown".to_owned()
            } else {
                order.names.join(" ")
            }
        )?;
    }
    out.flush()?;
    if !summary.new_tokens.is_empty() {
        eprintln!(
            "new DCV token(s) for order(s) {}: publish them (reissuer report --dcv --run {}) and check again",
            summary
                .new_tokens
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            run.id
        );
    }
    eprintln!(
        "run {}: {} order(s) validated now, {} awaiting DCV ({} request(s))",
        run.id,
        summary.validated.len(),
        summary.waiting.len(),
        summary.requests
    );
    if summary.interrupted {
        return Ok(Exit::Interrupted);
    }
    Ok(if summary.waiting.is_empty() {
        Exit::Ok
    } else {
        Exit::SomeFailed
    })
}
