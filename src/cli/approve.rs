//! `approve`: approve a run's reissue requests that wait for approval, each exactly once.

use crate::campaign::approve::{self, ApproveError, ApproveOptions};
use crate::exit::Exit;

use super::{Cli, ConnectionArgs, send};

pub(crate) const LONG_ABOUT: &str = "\
Approves the run's reissue requests that wait for approval (a reissue sent without skip_approval, \
or with a key that may not skip it): PUT /request/{id}/status with status approved and --comment \
as processor_comment. Which requests wait comes from CertCentral's list of pending requests \
(GET /request?filters[status]=pending, all pages, under the rate limiter).

Each request is approved exactly once: it is marked in the journal before the approval leaves and \
recorded when it is answered. An approval whose answer was lost (a crash, a timeout) is settled \
by reading the request back (GET /request/{id}), never by approving again blindly. A request \
found not pending is settled for good, so running approve again sends no approval.

Approving needs a key of a user with the Administrator or Manager role; another key is refused \
(403) and approve stops with exit 4. Exit 0 when no request of the run is left waiting, 1 when \
some are (listed with the reason), 3 when interrupted, 6 when CertCentral's server certificate \
is not trusted (nothing is approved; trust its issuer with --ca-file).";

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The run whose requests are approved (default: the newest run).
    #[arg(long = "run", value_name = "ID")]
    pub run_id: Option<i64>,

    /// The note recorded with each approval (processor_comment).
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,

    #[command(flatten)]
    pub connection: ConnectionArgs,

    #[command(flatten)]
    pub lease: super::LeaseArgs,
}

pub(crate) async fn approve(cli: &Cli, args: &ApproveArgs) -> anyhow::Result<Exit> {
    let mut command = send::RunCommand::start(
        &cli.journal_path(),
        args.run_id,
        &args.connection,
        &args.lease,
    )
    .await?;
    let has_work = !command
        .journal
        .approval_items(command.run.id)
        .await?
        .is_empty();
    let options = ApproveOptions {
        comment: args.comment.clone(),
        concurrency: command.connection.concurrency,
    };
    let worked = command
        .work(has_work, |command| {
            approve::approve(
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
        Err(ApproveError::Credentials(why)) => {
            eprintln!(
                "error: CertCentral refused the approval ({why}): approving needs a key of a user \
                 with the Administrator or Manager role; nothing more was sent"
            );
            return Ok(Exit::Credentials);
        }
        Err(err) => return Err(err.into()),
    };
    for order_id in &summary.found_approved {
        eprintln!("order {order_id}: approved by an earlier, interrupted approve");
    }
    for (order_id, why) in &summary.left {
        eprintln!("order {order_id}: still waiting for approval: {why}");
    }
    eprintln!(
        "run {}: {} request(s) approved now, {} found approved, {} not waiting for approval, {} left ({} request(s))",
        run.id,
        summary.approved.len(),
        summary.found_approved.len(),
        summary.not_waiting,
        summary.left.len(),
        summary.requests
    );
    if summary.interrupted {
        return Ok(Exit::Interrupted);
    }
    Ok(if summary.left.is_empty() {
        Exit::Ok
    } else {
        Exit::SomeFailed
    })
}
