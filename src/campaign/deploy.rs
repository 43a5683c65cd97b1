//! `collect --deploy-hook CMD`: runs `CMD` through `sh -c` once for each certificate `collect`
//! has written and key-checked, as each is written (and for any written earlier whose hook has
//! not succeeded), at most `concurrency` at a time.
//!
//! The hook learns what to install from its environment: `REISSUER_ORDER_ID`,
//! `REISSUER_CERT_FILE`, `REISSUER_KEY_FILE` (the `<order_id>.key` that `keygen` wrote beside
//! the run's manifest, only when it holds the certificate's key), `REISSUER_COMMON_NAME` and
//! `REISSUER_DNS_NAMES` (space-separated), read from the certificate itself. The environment is
//! the caller's without `DIGICERT_API_KEY` and without any variable whose value holds the key.
//!
//! Exactly once as far as a hook can be: `running` is committed before the hook starts,
//! `deployed` after it exits 0, and only a certificate not `deployed` gets its hook again. A
//! process killed while hooks run leaves them `running`, so those (at most `concurrency`) run
//! again next time. A hook that fails or runs past the timeout (its whole process group is
//! killed) is `failed`, reported with its exit status and the tail of its output, and runs again
//! next time.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::journal::{Deployable, Journal, JournalError};
use crate::secret::ApiKey;

/// The output kept of a hook: enough for the last lines of a chatty one.
const KEPT_OUTPUT: usize = 8 * 1024;
/// Lines of output shown and recorded.
const TAIL_LINES: usize = 20;
/// After the hook exits, how long its output may still take to arrive (a process it started in
/// the background may hold the pipes open for good).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// The variables the hook is given; taken out of the inherited environment first.
const HOOK_VARIABLES: [&str; 5] = [
    "REISSUER_ORDER_ID",
    "REISSUER_CERT_FILE",
    "REISSUER_KEY_FILE",
    "REISSUER_COMMON_NAME",
    "REISSUER_DNS_NAMES",
];

/// How hooks run.
#[derive(Debug, Clone)]
pub struct HookOptions {
    /// Run through `sh -c`.
    pub command: String,
    /// A hook still running after this is killed (its process group) and counts as failed.
    pub timeout: Duration,
    /// Hooks running at once.
    pub concurrency: usize,
    /// Kept out of the hook's environment (by name and by value) and out of recorded output.
    pub key: ApiKey,
    /// Where `keygen` wrote the run's keys (`<order_id>.key`): the run manifest's directory.
    pub key_dir: Option<PathBuf>,
}

/// A hook that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure {
    pub order_id: i64,
    /// `exit 3`, `killed by signal 9`, `timed out after 5m`, `cannot start: …`.
    pub status: String,
    /// The last lines of its output (stdout and stderr, as they came).
    pub tail: String,
}

/// What the hooks of one `collect` did.
#[derive(Debug, Clone, Default)]
pub struct DeployReport {
    /// Orders whose hook exited 0 now.
    pub deployed: Vec<i64>,
    pub failed: Vec<HookFailure>,
    /// Certificates left for the next collect (a stop came first).
    pub not_started: usize,
}

/// Why hooks could not go on.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The journal failed.
    #[error("journal failure while running deploy hooks")]
    Journal(#[from] JournalError),
}

/// How one hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HookRun {
    success: bool,
    status: String,
    tail: String,
}

/// Makes the run's certificates whose hook has not succeeded and whose file is not on this host
/// (downloaded by another host's `collect` into its `--out`, or removed since) collectable
/// again, so that this `collect` writes them into its own `--out` before their hooks run,
/// instead of handing a hook a path that does not exist here. Returns their orders.
pub async fn forget_missing_files(
    journal: &Journal,
    run_id: i64,
) -> Result<Vec<(i64, String)>, DeployError> {
    let mut missing = Vec::new();
    for job in journal.to_deploy(run_id).await? {
        if !Path::new(&job.certificate_file).is_file() {
            journal.forget_download(job.item_id).await?;
            missing.push((job.order_id, job.certificate_file));
        }
    }
    Ok(missing)
}

/// Runs the hook for every certificate of the run that needs it: those written earlier whose
/// hook has not succeeded, then each item id `written` sends, until `written` closes and every
/// hook has ended. After `cancel`, no hook starts; running ones finish (or time out).
pub async fn deploy(
    journal: &Journal,
    run_id: i64,
    mut written: UnboundedReceiver<i64>,
    options: &HookOptions,
    cancel: &CancellationToken,
) -> Result<DeployReport, DeployError> {
    let mut report = DeployReport::default();
    let mut running = JoinSet::new();
    let result = run_hooks(
        journal,
        run_id,
        &mut written,
        options,
        cancel,
        &mut running,
        &mut report,
    )
    .await;
    if result.is_err() {
        // The journal failed: the hooks still running are waited for (each within its timeout),
        // not left running unwatched while the lease is given up and another process starts
        // them again. Their ends cannot be recorded; they run again next time.
        while running.join_next().await.is_some() {}
    }
    result.map(|()| report)
}

/// The loop of [`deploy`]; on a journal error it returns at once, leaving `running` to the
/// caller.
async fn run_hooks(
    journal: &Journal,
    run_id: i64,
    written: &mut UnboundedReceiver<i64>,
    options: &HookOptions,
    cancel: &CancellationToken,
    running: &mut JoinSet<(Deployable, HookRun)>,
    report: &mut DeployReport,
) -> Result<(), DeployError> {
    let mut queue: VecDeque<Deployable> = journal.to_deploy(run_id).await?.into();
    let mut seen: HashSet<i64> = queue.iter().map(|d| d.item_id).collect();
    let mut open = true;
    loop {
        while running.len() < options.concurrency.max(1) && !cancel.is_cancelled() {
            let Some(job) = queue.pop_front() else { break };
            let env = hook_environment(
                std::env::vars_os(),
                &options.key,
                &hook_variables(&job, options.key_dir.as_deref()),
            );
            journal.mark_deploying(job.item_id).await?;
            let (command, timeout) = (options.command.clone(), options.timeout);
            running.spawn(async move {
                let run = run_hook(&command, env, timeout).await;
                (job, run)
            });
        }
        if running.is_empty() && (!open || cancel.is_cancelled()) {
            break;
        }
        tokio::select! {
            received = written.recv(), if open => match received {
                Some(item_id) => {
                    if seen.insert(item_id)
                        && let Some(job) = journal.deployable(item_id).await?
                    {
                        queue.push_back(job);
                    }
                }
                None => open = false,
            },
            Some(joined) = running.join_next() => {
                let Ok((job, run)) = joined else { continue };
                finish(journal, &job, run, &options.key, report).await?;
            }
            () = cancel.cancelled(), if open && running.is_empty() => open = false,
        }
    }
    report.not_started = queue.len();
    Ok(())
}

/// Records how a hook ended and reports it.
async fn finish(
    journal: &Journal,
    job: &Deployable,
    run: HookRun,
    key: &ApiKey,
    report: &mut DeployReport,
) -> Result<(), DeployError> {
    let tail = key.redact(&run.tail);
    journal
        .record_deployment(job.item_id, run.success, &run.status, &tail)
        .await?;
    let shown: String = tail.lines().map(|line| format!("\n  | {line}")).collect();
    if run.success {
        tracing::info!("order {}: deploy hook done{shown}", job.order_id);
        report.deployed.push(job.order_id);
    } else {
        tracing::warn!(
            "order {}: deploy hook failed ({}){shown}",
            job.order_id,
            run.status
        );
        report.failed.push(HookFailure {
            order_id: job.order_id,
            status: run.status,
            tail,
        });
    }
    Ok(())
}

/// The variables that tell the hook what to install, read from the certificate file.
fn hook_variables(job: &Deployable, key_dir: Option<&Path>) -> Vec<(&'static str, OsString)> {
    let cert_file = absolute(Path::new(&job.certificate_file));
    let leaf = std::fs::read_to_string(&cert_file)
        .ok()
        .and_then(|pem| Leaf::parse(&pem));
    let mut vars = vec![
        (
            "REISSUER_ORDER_ID",
            OsString::from(job.order_id.to_string()),
        ),
        ("REISSUER_CERT_FILE", cert_file.into_os_string()),
    ];
    if let Some(leaf) = &leaf {
        if let Some(key_file) = key_dir.and_then(|dir| matching_key(dir, job.order_id, leaf)) {
            vars.push(("REISSUER_KEY_FILE", absolute(&key_file).into_os_string()));
        }
        if let Some(common_name) = &leaf.common_name {
            vars.push(("REISSUER_COMMON_NAME", common_name.into()));
        }
        vars.push(("REISSUER_DNS_NAMES", leaf.dns_names.join(" ").into()));
    }
    vars
}

/// `<key_dir>/<order_id>.key`, when it exists and holds the certificate's key.
fn matching_key(key_dir: &Path, order_id: i64, leaf: &Leaf) -> Option<PathBuf> {
    let path = key_dir.join(format!("{order_id}.key"));
    let pem = std::fs::read_to_string(&path).ok()?;
    let key = rcgen::KeyPair::from_pem(&pem).ok()?;
    let matches = rcgen::PublicKeyData::subject_public_key_info(&key) == leaf.public_key;
    if !matches {
        tracing::warn!(
            "order {order_id}: {} does not hold the certificate's key; REISSUER_KEY_FILE not set",
            path.display()
        );
    }
    matches.then_some(path)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// What the hook is told about the certificate, from its leaf.
struct Leaf {
    common_name: Option<String>,
    dns_names: Vec<String>,
    public_key: Vec<u8>,
}

impl Leaf {
    fn parse(pem: &str) -> Option<Self> {
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
        let certificate = block.parse_x509().ok()?;
        let common_name = certificate
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut dns_names = Vec::new();
        for extension in certificate.extensions() {
            if let ParsedExtension::SubjectAlternativeName(san) = extension.parsed_extension() {
                for name in &san.general_names {
                    if let GeneralName::DNSName(name) = name {
                        dns_names.push((*name).to_owned());
                    }
                }
            }
        }
        Some(Self {
            common_name,
            dns_names,
            public_key: certificate.tbs_certificate.subject_pki.raw.to_vec(),
        })
    }
}

/// The hook's environment: the inherited one without `DIGICERT_API_KEY`, without any variable
/// whose value holds the key, without stale `REISSUER_*` hook variables, plus `ours`.
fn hook_environment(
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
    key: &ApiKey,
    ours: &[(&'static str, OsString)],
) -> Vec<(OsString, OsString)> {
    inherited
        .into_iter()
        .filter(|(name, value)| {
            name != "DIGICERT_API_KEY"
                && !HOOK_VARIABLES.iter().any(|hook| name == hook)
                && !key.is_in(value.as_bytes())
                && !key.is_in(name.as_bytes())
        })
        .chain(
            ours.iter()
                .filter(|(_, value)| !key.is_in(value.as_bytes()))
                .map(|(name, value)| (OsString::from(name), value.clone())),
        )
        .collect()
}

/// Runs `sh -c command` in a process group of its own with exactly `env`, its output kept.
async fn run_hook(command: &str, env: Vec<(OsString, OsString)>, timeout: Duration) -> HookRun {
    let mut child = match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: a terminal's Ctrl-C does not cut a deployment short, and a timeout
        // kills everything the hook started.
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            return HookRun {
                success: false,
                status: format!("cannot start: {err}"),
                tail: String::new(),
            };
        }
    };
    let kept = Arc::new(Mutex::new(Vec::new()));
    let mut readers = JoinSet::new();
    if let Some(stdout) = child.stdout.take() {
        readers.spawn(keep_output(stdout, kept.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.spawn(keep_output(stderr, kept.clone()));
    }
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => describe(status),
        Ok(Err(err)) => Err(format!("cannot wait for it: {err}")),
        Err(_) => {
            if let Some(pid) = child.id() {
                kill_group(pid);
            }
            let _ = child.wait().await;
            Err(format!(
                "timed out after {}",
                crate::config::format_duration(timeout)
            ))
        }
    };
    let _ = tokio::time::timeout(OUTPUT_GRACE, async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    readers.abort_all();
    let output = kept.lock().map(|kept| kept.clone()).unwrap_or_default();
    let (success, status) = match status {
        Ok(()) => (true, "exit 0".to_owned()),
        Err(status) => (false, status),
    };
    HookRun {
        success,
        status,
        tail: tail(&output),
    }
}

/// `Ok` for exit 0, else how it ended.
fn describe(status: ExitStatus) -> Result<(), String> {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(format!("exit {code}")),
        (None, Some(signal)) => Err(format!("killed by signal {signal}")),
        (None, None) => Err("ended without a status".to_owned()),
    }
}

/// Kills every process of the hook's group.
fn kill_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory of
    // ours. The group is the hook's own (process_group(0)), so nothing else is hit.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Appends what `pipe` gives to `kept`, keeping only the last [`KEPT_OUTPUT`] bytes.
async fn keep_output(mut pipe: impl tokio::io::AsyncRead + Unpin, kept: Arc<Mutex<Vec<u8>>>) {
    let mut buffer = [0u8; 4096];
    while let Ok(read) = pipe.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        if let Ok(mut kept) = kept.lock() {
            kept.extend_from_slice(&buffer[..read]);
            let excess = kept.len().saturating_sub(KEPT_OUTPUT);
            kept.drain(..excess);
        }
    }
}

/// The last [`TAIL_LINES`] lines of the output.
fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKey {
        ApiKey::new("s3cret-key").expect("a key")
    }

    #[test]
    fn the_hook_environment_holds_no_key_by_name_or_value_and_our_variables_win() {
        let inherited = [
            ("PATH", "/usr/bin"),
            ("DIGICERT_API_KEY", "anything"),
            ("COPY", "s3cret-key"),
            ("HEADER", "X-DC-DEVKEY: s3cret-key"),
            ("REISSUER_KEY_FILE", "/stale.key"),
            ("REISSUER_JOURNAL", "j.db"),
        ]
        .map(|(n, v)| (OsString::from(n), OsString::from(v)));
        let ours = [
            ("REISSUER_ORDER_ID", OsString::from("7")),
            ("REISSUER_COMMON_NAME", OsString::from("a.example")),
        ];
        let env = hook_environment(inherited, &key(), &ours);
        let names: Vec<&str> = env.iter().filter_map(|(n, _)| n.to_str()).collect();
        assert_eq!(
            names,
            [
                "PATH",
                "REISSUER_JOURNAL",
                "REISSUER_ORDER_ID",
                "REISSUER_COMMON_NAME"
            ]
        );
    }

    #[test]
    fn the_tail_is_the_last_lines_of_the_output() {
        let output: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        let tail = tail(output.as_bytes());
        assert!(
            tail.starts_with("line 11\n") && tail.ends_with("line 30"),
            "{tail}"
        );
        assert_eq!(super::tail(b""), "");
    }

    #[tokio::test]
    async fn a_hook_reports_its_exit_status_output_and_timeout() {
        let ok = run_hook("echo out; echo err >&2", Vec::new(), Duration::from_secs(5)).await;
        assert!(ok.success, "{ok:?}");
        assert!(ok.tail.contains("out") && ok.tail.contains("err"), "{ok:?}");
        let failed = run_hook("echo why; exit 3", Vec::new(), Duration::from_secs(5)).await;
        assert_eq!((failed.success, failed.status.as_str()), (false, "exit 3"));
        assert_eq!(failed.tail, "why");
        let started = std::time::Instant::now();
        let slow = run_hook(
            "echo begun; sleep 30 & wait",
            Vec::new(),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(slow.status, "timed out after 300ms");
        assert_eq!(slow.tail, "begun");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the group was not killed"
        );
    }

    #[tokio::test]
    async fn a_hook_sees_exactly_the_environment_it_is_given() {
        let env = vec![(OsString::from("ONLY"), OsString::from("this"))];
        let run = run_hook(
            "env | grep -v '^PWD=' | grep -v '^SHLVL=' | grep -v '^_='",
            env,
            Duration::from_secs(5),
        )
        .await;
        assert!(run.success, "{run:?}");
        assert_eq!(run.tail, "ONLY=this");
    }
}
