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
    let identity = connection.identify_for_run(&journal, &run).await?;
    // Before the lease: an error here leaves no lease for the next collect to wait out.
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
    // A collect killed while its hooks ran may leave them running (each is its own process
    // group): a taker waits out their timeout too before it runs them again.
    let under_way = match &args.deploy_hook {
        Some(_) => connection.timeout.max(args.hook_timeout),
        None => connection.timeout,
    };
    let lease = send::hold_account(
        &journal,
        &send::lease_account(Some(&identity), &connection.base_url),
        &args.lease,
        &connection.limiter,
        connection.timeout,
        under_way,
    )
    .await?;
    if hooks.is_some() {
        for (order_id, file) in deploy::forget_missing_files(&journal, run.id).await? {
            tracing::warn!(
                "order {order_id}: {file} is not on this host; its certificate is written again before its hook runs"
            );
        }
    }
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
    // After a journal error the lease is left to run out: a taker then waits out the hook
    // timeout too, in case anything this process started is still under way.
    if result.is_ok() && deployed.is_ok() {
        lease.release(&journal).await;
    }
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
        "run {}: {} certificate(s) written now; {} downloaded in all, {} issued not downloaded, {} awaiting issuance{}",
        run.id,
        summary.downloaded.len(),
        progress.downloaded,
        progress.issued,
        progress.awaiting_issuance,
        super::status::cannot_collect(&progress)
    );
    let hooks_failed = deployed.as_ref().is_some_and(|report| {
        report_hooks(report, rotation.deployed, rotation.downloaded);
        !report.failed.is_empty()
    });
    if summary.interrupted {
        return Ok(Exit::Interrupted);
    }
    // The same hook again: a collect without it would run no hook, the failed ones included.
    let again = format!(
        "reissuer collect --run {} --out {}{}",
        run.id,
        shell_word(&args.out.display().to_string()),
        args.deploy_hook
            .as_deref()
            .map(|hook| format!(" --deploy-hook {}", shell_word(hook)))
            .unwrap_or_default()
    );
    if progress.issued + progress.awaiting_issuance > 0 || !summary.problems.is_empty() {
        eprintln!("collect again later: {again} --wait 10m");
        return Ok(Exit::SomeFailed);
    }
    if hooks_failed {
        eprintln!("once the cause is fixed, run the failed hooks again: {again}");
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

/// `text` as one word for `sh`: as it is when nothing in it is special, else single-quoted.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
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

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn a_shell_word_is_quoted_only_when_sh_would_split_or_expand_it() {
        assert_eq!(
            shell_word("/etc/reissuer/deploy.sh"),
            "/etc/reissuer/deploy.sh"
        );
        assert_eq!(shell_word("sh hook.sh"), "'sh hook.sh'");
        assert_eq!(shell_word("echo $X"), "'echo $X'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
