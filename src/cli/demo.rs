//! `demo`: the bundled sample manifest, sent through the real runner to the built-in simulator
//! on loopback, with the same progress display and journal as a real run. Needs no API key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{Client, Network, Trust};
use crate::config::Quota;
use crate::exit::Exit;
use crate::limiter::Limiter;
use crate::runner::RunnerOptions;
use crate::secret::ApiKey;
use crate::simulator::{self, Scenario};

use super::send::Sender;
use super::{Cli, ConnectionArgs, DemoArgs, ManifestArgs, RunArgs, SendArgs};

const DEMO_KEY: &str = "demo-key-not-a-secret";
/// What a real hook would do (copy the files into place, reload the server), only said.
const DEMO_HOOK: &str = "echo \"would install $REISSUER_CERT_FILE${REISSUER_KEY_FILE:+ with $REISSUER_KEY_FILE} for $REISSUER_DNS_NAMES and reload nginx\"";

pub(crate) async fn demo(cli: &Cli, args: &DemoArgs) -> anyhow::Result<Exit> {
    let manifest = args.manifest.clone().unwrap_or_else(|| {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/orders.csv"))
    });
    let temp = tempfile::Builder::new()
        .prefix("reissuer-demo-")
        .tempdir()?;
    let journal_path = match &cli.journal {
        Some(path) => path.clone(),
        // Kept after the demo, so the suggested commands work on it.
        None => temp.keep().join("reissuer.db"),
    };
    // A modest quota, so the limiter's pacing is visible.
    let quota = Quota {
        limit: 10,
        window: Duration::from_secs(1),
    };
    let sim = simulator::start_on_loopback(Scenario {
        api_key: Some(DEMO_KEY.to_owned()),
        quotas: vec![quota],
        issuance_delay: Duration::from_secs(2),
        // Reissues sent without skip_approval wait for an administrator, as on many accounts.
        approval_required: true,
        ..Scenario::default()
    })
    .await?;
    let base_url = sim.base_url();
    eprintln!("simulator listening at {base_url}");
    let key = ApiKey::new(DEMO_KEY).expect("the demo key is not blank");
    // The simulator is on loopback: no proxy in the environment may see its traffic.
    let network = Network {
        trust: Trust::load(None)?,
        direct: true,
    };
    let sender = Sender {
        base_url: base_url.clone(),
        client: Client::new(&base_url, &key, Duration::from_secs(10), 4, &network)?,
        limiter: Arc::new(Limiter::new(&[quota])),
        options: RunnerOptions {
            concurrency: 4,
            max_attempts: 5,
            resend_uncertain: false,
            force: false,
            drain_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            give_up_after: Duration::from_secs(60),
            settle: crate::runner::DEFAULT_SETTLE,
        },
    };
    let run_args = RunArgs {
        manifest: ManifestArgs {
            manifest: manifest.clone(),
            defaults: Vec::new(),
            allow_cn_mismatch: false,
        },
        send: demo_send_args(),
        dry_run: false,
        force: false,
        skip_invalid: false,
        fill_from_order: false,
    };
    let client = sender.client.clone();
    let limiter = sender.limiter.clone();
    let exit = super::run::plan_and_send(&journal_path, &run_args, sender).await?;
    check_domain_control(&journal_path, &sim, &client, &limiter).await?;
    approve_requests(&journal_path, &client, &limiter).await?;
    let certs = journal_path.with_file_name("certs");
    collect_certificates(&journal_path, &client, &limiter, &certs).await?;
    let journal = crate::journal::Journal::open_read_only(&journal_path).await?;
    if let Some(run) = journal.newest_run().await? {
        let rows = journal.report_rows(run.id).await?;
        println!();
        crate::report::write_csv(&rows, std::io::stdout().lock())?;
    }
    journal.close().await;
    let ledger = sim.ledger();
    sim.shutdown().await;
    let journal_arg = journal_path.display();
    eprintln!(
        "\nthe simulator accepted {} reissue(s) for {} order(s).\nnext, try:\n  \
         reissuer status --journal {journal_arg}\n  \
         reissuer collect --journal {journal_arg} --out DIR (against a real account)\n  \
         reissuer report --journal {journal_arg} --format json\n  \
         reissuer validate --print {}\n  \
         reissuer run {} --dry-run\n",
        ledger.accepted.len(),
        ledger.accepted_per_order().len(),
        manifest.display(),
        manifest.display(),
    );
    Ok(exit)
}

/// Domain control: publish each token (the simulator stands in for DNS automation), then ask
/// CertCentral to check, as `reissuer dcv check --wait` does.
async fn check_domain_control(
    journal_path: &std::path::Path,
    sim: &simulator::SimulatorHandle,
    client: &Client,
    limiter: &Arc<Limiter>,
) -> anyhow::Result<()> {
    let journal = crate::journal::Journal::open(journal_path).await?;
    let Some(run) = journal.newest_run().await? else {
        return Ok(());
    };
    let tokens = journal.dcv_items(run.id).await?;
    if tokens.is_empty() {
        journal.close().await;
        return Ok(());
    }
    eprintln!(
        "\npublishing {} DCV token(s) (reissuer report --dcv; your DNS automation), then: reissuer dcv check --wait 10s",
        tokens.len()
    );
    for item in &tokens {
        let row = crate::campaign::dcv::DcvRow::from_payload(
            item.order_id,
            &item.payload,
            item.dcv_random_value.clone(),
        )?;
        for name in row.common_name.iter().chain(&row.dns_names) {
            sim.publish_dcv_token(name, &row.dcv_random_value);
        }
    }
    let options = crate::campaign::dcv::check::CheckOptions {
        wait: Duration::from_secs(10),
        concurrency: 4,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let summary =
        crate::campaign::dcv::check::check(&journal, client, limiter, run.id, &options, &cancel)
            .await?;
    for order_id in &summary.validated {
        eprintln!("  order {order_id}: domain control validated");
    }
    for order in &summary.waiting {
        eprintln!(
            "  order {}: awaits DCV ({}): {}",
            order.order_id,
            order.reason,
            order.names.join(" ")
        );
    }
    journal.close().await;
    Ok(())
}

/// Approval: the reissues sent without skip_approval wait for it, as `reissuer approve` does.
async fn approve_requests(
    journal_path: &std::path::Path,
    client: &Client,
    limiter: &Arc<Limiter>,
) -> anyhow::Result<()> {
    let journal = crate::journal::Journal::open(journal_path).await?;
    let Some(run) = journal.newest_run().await? else {
        return Ok(());
    };
    eprintln!("\napproving the requests that wait: reissuer approve --comment 'key rotation demo'");
    let options = crate::campaign::approve::ApproveOptions {
        comment: Some("key rotation demo".to_owned()),
        concurrency: 4,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let summary =
        crate::campaign::approve::approve(&journal, client, limiter, run.id, &options, &cancel)
            .await?;
    eprintln!(
        "  {} approved, {} needed no approval",
        summary.approved.len(),
        summary.not_waiting
    );
    journal.close().await;
    Ok(())
}

/// The rest of a campaign: wait for issuance and download the certificates.
async fn collect_certificates(
    journal_path: &std::path::Path,
    client: &Client,
    limiter: &Arc<Limiter>,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let journal = crate::journal::Journal::open(journal_path).await?;
    let Some(run) = journal.newest_run().await? else {
        return Ok(());
    };
    eprintln!(
        "\ncollecting the issued certificates into {}, each handed to a deploy hook:\n  reissuer collect --out {} --wait 15s --deploy-hook '{DEMO_HOOK}'",
        out.display(),
        out.display()
    );
    let (written, written_rx) = tokio::sync::mpsc::unbounded_channel();
    let options = crate::campaign::collect::CollectOptions {
        out: out.to_owned(),
        wait: Duration::from_secs(15),
        concurrency: 4,
        written: Some(written),
    };
    let hooks = crate::campaign::deploy::HookOptions {
        command: DEMO_HOOK.to_owned(),
        timeout: Duration::from_secs(10),
        concurrency: 1,
        key: ApiKey::new(DEMO_KEY).expect("the demo key is not blank"),
        key_dir: None,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let collecting = async {
        let options = options;
        let result =
            crate::campaign::collect::collect(&journal, client, limiter, run.id, &options, &cancel)
                .await;
        drop(options);
        result
    };
    let deploying = crate::campaign::deploy::deploy(&journal, run.id, written_rx, &hooks, &cancel);
    let (summary, deployed) = tokio::join!(collecting, deploying);
    let (summary, deployed) = (summary?, deployed?);
    eprintln!(
        "  deploy hook: {} certificate(s) deployed, {} failed",
        deployed.deployed.len(),
        deployed.failed.len()
    );
    for (order_id, path) in &summary.downloaded {
        eprintln!("  order {order_id}: {}", path.display());
    }
    for (order_id, why) in summary.problems.iter().chain(&summary.waiting) {
        eprintln!("  order {order_id}: {why}");
    }
    journal.close().await;
    Ok(())
}

fn demo_send_args() -> SendArgs {
    SendArgs {
        connection: ConnectionArgs {
            base_url: None,
            region: None,
            api_key_file: None,
            concurrency: 4,
            rates: Vec::new(),
            timeout: Duration::from_secs(10),
            ca_file: None,
        },
        max_attempts: 5,
        yes: true,
        resend_uncertain: false,
        give_up_after: Duration::from_secs(60),
        settle: crate::runner::DEFAULT_SETTLE,
        lease: super::LeaseArgs {
            lease: Duration::from_secs(30),
            no_wait: false,
        },
    }
}
