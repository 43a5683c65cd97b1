//! `collect`: the issued certificates of a run, downloaded and checked, and with
//! `--deploy-hook` each handed to the hook as it is written.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::campaign::collect::{self, CollectOptions};
use crate::campaign::deploy::{self, DeployReport, HookOptions};
use crate::exit::Exit;

use super::send;
use super::{Cli, CollectArgs};

pub(crate) async fn collect(cli: &Cli, args: &CollectArgs) -> anyhow::Result<Exit> {
    let journal = crate::journal::Journal::open(&cli.journal_path()).await?;
    let run = journal.run_or_newest(args.run_id).await?;
    let connection = send::Connection::new(&args.connection, Some(&run))?;
    connection.identify_for_run(&journal, &run).await?;
    let hooks = match &args.deploy_hook {
        Some(command) => Some(HookOptions {
            command: command.clone(),
            timeout: args.hook_timeout,
            concurrency: args.hook_concurrency as usize,
            key: send::load_api_key(&args.connection)?,
            key_dir: run.manifest.as_deref().and_then(manifest_dir),
        }),
        None => None,
    };
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(send::on_signals(cancel.clone()));
    let (written, written_rx) = tokio::sync::mpsc::unbounded_channel();
    let options = CollectOptions {
        out: args.out.clone(),
        wait: args.wait,
        concurrency: connection.concurrency,
        written: hooks.is_some().then_some(written),
    };
    let collecting = async {
        let options = options;
        let result = collect::collect(
            &journal,
            &connection.client,
            &connection.limiter,
            run.id,
            &options,
            &cancel,
        )
        .await;
        // Closing the channel tells the hooks that no more certificates come.
        drop(options);
        result
    };
    let deploying = async {
        match &hooks {
            Some(hooks) => deploy::deploy(&journal, run.id, written_rx, hooks, &cancel)
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let (result, deployed) = tokio::join!(collecting, deploying);
    signals.abort();
    let summary = result?;
    let deployed = deployed?;
    let progress = journal.collection(run.id).await?;
    let rotation = journal.rotation(run.id).await?;
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
    let hooks_failed = deployed.as_ref().is_some_and(|report| {
        report_hooks(report, rotation.deployed, rotation.downloaded);
        !report.failed.is_empty()
    });
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
    if hooks_failed {
        return Ok(Exit::SomeFailed);
    }
    Ok(Exit::Ok)
}

/// The hooks' outcome: each failure with its exit status and the tail of its output.
fn report_hooks(report: &DeployReport, deployed: u64, downloaded: u64) {
    for failure in &report.failed {
        eprintln!(
            "order {}: deploy hook failed ({}); it runs again with the next collect{}",
            failure.order_id,
            failure.status,
            failure
                .tail
                .lines()
                .map(|line| format!("\n  | {line}"))
                .collect::<String>()
        );
    }
    eprintln!(
        "deploy hook: {} succeeded now, {} failed; {deployed} of {downloaded} downloaded certificate(s) deployed{}",
        report.deployed.len(),
        report.failed.len(),
        if report.not_started > 0 {
            format!(", {} left for the next collect", report.not_started)
        } else {
            String::new()
        }
    );
}

/// Where `keygen` put the run's keys: the directory of the manifest it wrote (a relative
/// manifest path is taken from the current directory).
fn manifest_dir(manifest: &str) -> Option<PathBuf> {
    let dir = Path::new(manifest).parent()?;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::path::absolute(dir).ok()
}
