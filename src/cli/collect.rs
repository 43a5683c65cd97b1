//! `collect`: the issued certificates of a run, downloaded and checked.

use tokio_util::sync::CancellationToken;

use crate::campaign::collect::{self, CollectOptions};
use crate::exit::Exit;

use super::send;
use super::{Cli, CollectArgs};

pub(crate) async fn collect(cli: &Cli, args: &CollectArgs) -> anyhow::Result<Exit> {
    let journal = crate::journal::Journal::open(&cli.journal_path()).await?;
    let run = journal.run_or_newest(args.run_id).await?;
    let connection = send::Connection::new(&args.connection, Some(&run))?;
    send::identify_for_run(
        &journal,
        &run,
        &connection.client,
        &connection.quotas,
        &connection.limiter,
        crate::reads::DEFAULT_GIVE_UP_AFTER,
    )
    .await?;
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(send::on_signals(cancel.clone()));
    let options = CollectOptions {
        out: args.out.clone(),
        wait: args.wait,
        concurrency: connection.concurrency,
    };
    let result = collect::collect(
        &journal,
        &connection.client,
        &connection.limiter,
        run.id,
        &options,
        &cancel,
    )
    .await;
    signals.abort();
    let summary = result?;
    let progress = journal.collection(run.id).await?;
    journal.close().await;
    for (order_id, path) in &summary.downloaded {
        tracing::info!("order {order_id}: {}", path.display());
    }
    for (order_id, status) in &summary.waiting {
        eprintln!("order {order_id}: not issued yet ({status})");
    }
    for (order_id, why) in &summary.problems {
        eprintln!("order {order_id}: {why}");
    }
    eprintln!(
        "run {}: {} certificate(s) written now; {} downloaded in all, {} issued not downloaded, {} awaiting issuance",
        run.id,
        summary.downloaded.len(),
        progress.downloaded,
        progress.issued,
        progress.awaiting_issuance
    );
    if summary.interrupted {
        return Ok(Exit::Interrupted);
    }
    if progress.issued + progress.awaiting_issuance > 0 || !summary.problems.is_empty() {
        eprintln!(
            "collect again later: reissuer collect --run {} --out {} --wait 10m",
            run.id,
            args.out.display()
        );
        return Ok(Exit::SomeFailed);
    }
    Ok(Exit::Ok)
}
