//! `reissuer simulate`: the built-in CertCentral simulator as a standalone server, for scripts
//! and tests that run reissuer as a separate process. It is test equipment: it listens wherever
//! `--listen` says, over plain HTTP or (with `--tls-ca-out`) HTTPS from a throwaway CA, and
//! should only ever face loopback.

use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::{Quota, parse_duration};
use crate::secret::ApiKey;
use crate::simulator::{self, Faults, KeyAccount, Role, Scenario, ServerTls};

/// Runs the CertCentral simulator until SIGINT or SIGTERM; prints its base URL first.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on. Port 0 picks a free port. Test equipment: keep it on loopback.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// Write the bound port number and a newline to this file once listening (for scripts).
    #[arg(long, value_name = "PATH")]
    pub port_file: Option<PathBuf>,

    /// Accept only this X-DC-DEVKEY (otherwise any non-empty key is accepted).
    #[arg(
        long,
        value_name = "KEY",
        env = "REISSUER_SIMULATOR_API_KEY",
        hide_env_values = true,
        value_parser = parse_api_key
    )]
    pub api_key: Option<ApiKey>,

    /// The key of a standard user, repeatable: accepted like --api-key, but it may not approve
    /// requests (PUT /request/{id}/status answers 403 access_denied|missing_permission): only
    /// an administrator's or a manager's key may.
    #[arg(long = "user-key", value_name = "KEY", value_parser = parse_api_key)]
    pub user_keys: Vec<ApiKey>,

    /// A rolling quota, N requests per DURATION (for example 100/5s); repeat to enforce several
    /// at once. Requests over it get 429 request_limit_exceeded. Default: unlimited.
    #[arg(long = "rate", value_name = "N/DURATION")]
    pub rates: Vec<Quota>,

    /// Send Retry-After (whole seconds, rounded up) with every 429 and 503.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_after: Option<Duration>,

    /// Order ids that do not exist (404 not_found|order): A-B or a single N; repeatable.
    #[arg(long = "missing-orders", value_name = "A-B", value_parser = parse_order_range)]
    pub missing_orders: Vec<RangeInclusive<u64>>,

    /// Order ids whose reissues are accepted but stay needs_approval until their request is
    /// approved (PUT /request/{id}/status): A-B or N; repeatable.
    #[arg(long = "needs-approval", value_name = "A-B", value_parser = parse_order_range)]
    pub needs_approval: Vec<RangeInclusive<u64>>,

    /// Every reissue sent without skip_approval waits for approval, as on an account whose
    /// settings require it.
    #[arg(long)]
    pub approval_required: bool,

    /// How long a DCV token stays valid (a token-DCV reissue waits until its token is
    /// published with POST /__simulator/dcv {"dns_name": …, "value": …} and check-dcv finds it).
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_duration)]
    pub dcv_token_validity: Duration,

    /// Time from an accepted reissue to its issued certificate.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub issuance_delay: Duration,

    /// Probability (0 to 1) that a reissue gets 500 and is NOT committed.
    #[arg(long = "fail-500", value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub fail_500: f64,

    /// Probability that a reissue IS committed, then answered 500.
    #[arg(long = "fail-500-after-commit", value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub fail_500_after_commit: f64,

    /// Probability that a reissue gets 503 (with --retry-after if given) and is not committed.
    #[arg(long = "fail-503", value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub fail_503: f64,

    /// Probability that a reissue is committed, then its connection is closed with no response.
    #[arg(long = "drop-after-commit", value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub drop_after_commit: f64,

    /// Delay added before every answer (after the work, so a commit happens before the delay).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub latency: Duration,

    /// Plus a uniform random extra delay of up to this much.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub latency_jitter: Duration,

    /// A reissue waits this long at the server before it is processed (key check, quota, fault
    /// draw, commit) — and is processed even if the client has given up meanwhile, like a
    /// CertCentral slower than the client's --timeout.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub commit_delay: Duration,

    /// Plus a uniform random extra delay before processing of up to this much.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub commit_delay_jitter: Duration,

    /// Probability that a GET (order info, reissue list, status changes, download) gets 500.
    #[arg(long = "get-fail-500", value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub get_fail_500: f64,

    /// Seed for every random choice (faults, jitter, DCV tokens, the listed orders), so runs
    /// can be repeated.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// Play an outage: answer every API request 500 (commit nothing, check nothing) for this
    /// long after the server starts serving.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub all_500_for: Duration,

    /// Play a network outage: hold the port but refuse every connection for this long before
    /// serving. The base URL and the port file are written at once.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub refuse_connections_for: Duration,
    /// How many orders the account lists (GET /order/certificate, filters and pages), with ids
    /// from 10000001: varied names, products, signature hashes (SHA-1 among them), expiry,
    /// status, organizations and containers, made from --seed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub orders: u64,

    /// The account id GET /user/me gives for the main key [default: 1234567].
    #[arg(long, value_name = "ID")]
    pub account_id: Option<u64>,

    /// One more accepted key, of account ID, with an access role (administrator, manager,
    /// standard-user, limited-user, finance-manager; default administrator); repeatable.
    #[arg(long = "account", value_name = "KEY=ID[:ROLE]", value_parser = parse_key_account)]
    pub other_keys: Vec<KeyAccount>,

    /// Serve HTTPS, with a server certificate from a CA made at start, and write that CA's
    /// certificate (PEM) to PATH, before the port file: reissuer trusts the server only with
    /// --ca-file PATH (or SSL_CERT_FILE=PATH).
    #[arg(long, value_name = "PATH", conflicts_with = "refuse_connections_for")]
    pub tls_ca_out: Option<PathBuf>,

    /// A DNS name or IP address the server certificate is for, repeatable [default: localhost,
    /// 127.0.0.1 and ::1]. Another name shows how a hostname mismatch is reported.
    #[arg(long = "tls-name", value_name = "NAME", requires = "tls_ca_out")]
    pub tls_names: Vec<String>,

    /// Serve a server certificate that expired yesterday.
    #[arg(long, requires = "tls_ca_out")]
    pub tls_expired: bool,
}

impl SimulateArgs {
    /// The simulator's scenario; every flag maps to one field.
    pub fn scenario(&self) -> Scenario {
        Scenario {
            api_key: self.api_key.as_ref().map(|key| key.expose().to_owned()),
            user_keys: self
                .user_keys
                .iter()
                .map(|key| key.expose().to_owned())
                .collect(),
            quotas: self.rates.clone(),
            retry_after: self.retry_after,
            missing_orders: self.missing_orders.clone(),
            needs_approval_orders: self.needs_approval.clone(),
            approval_required: self.approval_required,
            dcv_token_validity: Some(self.dcv_token_validity),
            issuance_delay: self.issuance_delay,
            commit_delay: self.commit_delay,
            commit_delay_jitter: self.commit_delay_jitter,
            approval_delay: Duration::ZERO,
            faults: Faults {
                error_500: self.fail_500,
                error_500_after_commit: self.fail_500_after_commit,
                error_503: self.fail_503,
                drop_after_commit: self.drop_after_commit,
                latency: self.latency,
                latency_jitter: self.latency_jitter,
                get_error_500: self.get_fail_500,
            },
            seed: self.seed,
            all_500_for: self.all_500_for,
            all_503_for: Duration::ZERO,
            account_id: self.account_id,
            other_keys: self.other_keys.clone(),
            orders: self.orders,
            refused_list_filters: Vec::new(),
            ignored_list_filters: Vec::new(),
            tls: self.tls_ca_out.as_ref().map(|_| ServerTls {
                names: match self.tls_names.is_empty() {
                    true => ServerTls::default().names,
                    false => self.tls_names.clone(),
                },
                expired: self.tls_expired,
            }),
        }
    }
}

/// A flag value `simulate` cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimulateArgError {
    /// Not `A-B` or `N` with `A <= B`.
    #[error("{0:?} is not an order id range A-B (A <= B) or a single id N")]
    OrderRange(String),
    /// Not a number from 0 to 1.
    #[error("{0:?} is not a probability from 0 to 1")]
    Probability(String),
    /// An empty key.
    #[error("the simulator's API key must not be empty")]
    EmptyKey,
    /// Not `KEY=ID` or `KEY=ID:ROLE`.
    #[error(
        "--account takes KEY=ID or KEY=ID:ROLE (ROLE one of administrator, limited-user, finance-manager, manager, standard-user)"
    )]
    KeyAccount,
}

fn parse_order_range(text: &str) -> Result<RangeInclusive<u64>, SimulateArgError> {
    let bad = || SimulateArgError::OrderRange(text.to_owned());
    let (low, high) = text.trim().split_once('-').unwrap_or((text, text));
    let low: u64 = low.trim().parse().map_err(|_| bad())?;
    let high: u64 = high.trim().parse().map_err(|_| bad())?;
    if low > high {
        return Err(bad());
    }
    Ok(low..=high)
}

fn parse_probability(text: &str) -> Result<f64, SimulateArgError> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=1.0).contains(p))
        .ok_or_else(|| SimulateArgError::Probability(text.to_owned()))
}

/// `KEY=ID[:ROLE]`. The message never repeats the text: it holds a key.
fn parse_key_account(text: &str) -> Result<KeyAccount, SimulateArgError> {
    let (key, rest) = text.rsplit_once('=').ok_or(SimulateArgError::KeyAccount)?;
    let (id, role) = rest.split_once(':').unwrap_or((rest, "administrator"));
    let role = Role::ALL
        .into_iter()
        .find(|r| r.slug() == role.trim().to_ascii_lowercase())
        .ok_or(SimulateArgError::KeyAccount)?;
    let account_id = id
        .trim()
        .parse()
        .map_err(|_| SimulateArgError::KeyAccount)?;
    if key.trim().is_empty() {
        return Err(SimulateArgError::KeyAccount);
    }
    Ok(KeyAccount {
        key: key.trim().to_owned(),
        account_id,
        role,
    })
}

fn parse_api_key(text: &str) -> Result<ApiKey, SimulateArgError> {
    ApiKey::new(text).ok_or(SimulateArgError::EmptyKey)
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    serve(args, &mut io::stdout(), wait_for_signal()).await
}

/// Starts the simulator, writes the port file, prints the base URL as the first line of `out`,
/// serves until `until` completes, then shuts down. `run` passes the signals; tests a channel.
pub(crate) async fn serve(
    args: SimulateArgs,
    out: &mut impl Write,
    until: impl Future<Output = io::Result<()>>,
) -> anyhow::Result<()> {
    if !args.refuse_connections_for.is_zero() {
        return serve_late(args, out, until).await;
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let port = listener
        .local_addr()
        .context("cannot read the bound address")?
        .port();
    let handle = simulator::start(listener, args.scenario())
        .await
        .context("cannot start the simulator")?;
    if let (Some(path), Some(pem)) = (&args.tls_ca_out, handle.tls_ca_pem()) {
        write_atomically(path, pem, "CA certificate file")?;
    }
    announce(&args, out, port, &handle.base_url())?;
    let stopped = until.await;
    handle.shutdown().await;
    stopped.context("cannot wait for SIGINT/SIGTERM")
}

/// `--refuse-connections-for`: the port is held, not listening, then served.
async fn serve_late(
    args: SimulateArgs,
    out: &mut impl Write,
    until: impl Future<Output = io::Result<()>>,
) -> anyhow::Result<()> {
    let reserved = simulator::ReservedPort::bind(args.listen)
        .with_context(|| format!("cannot bind {}", args.listen))?;
    announce(&args, out, reserved.port(), &reserved.base_url())?;
    let mut until = std::pin::pin!(until);
    tokio::select! {
        stopped = &mut until => return stopped.context("cannot wait for SIGINT/SIGTERM"),
        () = tokio::time::sleep(args.refuse_connections_for) => {}
    }
    let handle = reserved
        .serve(args.scenario())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let stopped = until.await;
    handle.shutdown().await;
    stopped.context("cannot wait for SIGINT/SIGTERM")
}

/// Writes the port file, then prints the base URL as the first line of `out`.
fn announce(
    args: &SimulateArgs,
    out: &mut impl Write,
    port: u16,
    base_url: &str,
) -> anyhow::Result<()> {
    if let Some(path) = &args.port_file {
        write_atomically(path, &format!("{port}\n"), "port file")?;
    }
    writeln!(out, "{base_url}").context("cannot print the base URL")?;
    out.flush().context("cannot print the base URL")
}

/// Written beside and renamed into place, so a script polling for the file never reads half.
fn write_atomically(path: &Path, text: &str, what: &str) -> anyhow::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, text)
        .with_context(|| format!("cannot write {what} {}", partial.display()))?;
    std::fs::rename(&partial, path)
        .with_context(|| format!("cannot write {what} {}", path.display()))
}

async fn wait_for_signal() -> io::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(flags: &[&str]) -> Result<SimulateArgs, clap::Error> {
        let argv = std::iter::once("simulate").chain(flags.iter().copied());
        Harness::try_parse_from(argv).map(|h| h.args)
    }

    #[test]
    fn tls_flags_reach_the_scenario_and_need_a_file_for_the_ca() {
        assert_eq!(parse(&[]).expect("valid").scenario().tls, None);
        let scenario = parse(&["--tls-ca-out=ca.pem"]).expect("valid").scenario();
        assert_eq!(scenario.tls, Some(ServerTls::default()));
        let scenario = parse(&[
            "--tls-ca-out=ca.pem",
            "--tls-name=cc.example.test",
            "--tls-name=10.0.0.1",
            "--tls-expired",
        ])
        .expect("valid")
        .scenario();
        assert_eq!(
            scenario.tls,
            Some(ServerTls {
                names: vec!["cc.example.test".into(), "10.0.0.1".into()],
                expired: true,
            })
        );
        // Without the CA's certificate nobody could trust the server.
        assert!(parse(&["--tls-name=cc.example.test"]).is_err());
        assert!(parse(&["--tls-expired"]).is_err());
        // The CA is made when serving starts, after the port file of a held port was written.
        assert!(parse(&["--tls-ca-out=ca.pem", "--refuse-connections-for=5s"]).is_err());
    }

    #[test]
    fn every_flag_reaches_the_scenario() {
        let args = parse(&[
            "--listen=127.0.0.1:0",
            "--api-key=flag-key",
            "--user-key=user-flag-key",
            "--rate=100/5s",
            "--rate=1000/5m",
            "--retry-after=2s",
            "--missing-orders=10-20",
            "--missing-orders=99",
            "--needs-approval=30-31",
            "--issuance-delay=250ms",
            "--fail-500=0.1",
            "--fail-500-after-commit=0.2",
            "--fail-503=0.3",
            "--drop-after-commit=0.05",
            "--latency=10ms",
            "--latency-jitter=5ms",
            "--get-fail-500=0.01",
            "--seed=42",
            "--all-500-for=8s",
            "--refuse-connections-for=3s",
            "--orders=2500",
            "--account-id=11",
            "--account=second-key=22",
            "--account=third-key=33:standard-user",
        ])
        .expect("valid flags");
        assert!(
            !format!("{args:?}").contains("flag-key"),
            "Debug redacts the keys"
        );
        let scenario = args.scenario();
        assert!(!format!("{scenario:?}").contains("flag-key"));
        assert_eq!(scenario.api_key.as_deref(), Some("flag-key"));
        assert_eq!(scenario.user_keys, ["user-flag-key"]);
        assert_eq!(scenario.quotas.len(), 2);
        assert_eq!(scenario.quotas[1].window, Duration::from_secs(300));
        assert_eq!(scenario.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(scenario.missing_orders, [10..=20, 99..=99]);
        assert_eq!(scenario.needs_approval_orders, [30..=31]);
        assert_eq!(scenario.issuance_delay, Duration::from_millis(250));
        assert_eq!(
            scenario.faults,
            Faults {
                error_500: 0.1,
                error_500_after_commit: 0.2,
                error_503: 0.3,
                drop_after_commit: 0.05,
                latency: Duration::from_millis(10),
                latency_jitter: Duration::from_millis(5),
                get_error_500: 0.01,
            }
        );
        assert_eq!(scenario.seed, 42);
        assert_eq!(scenario.all_500_for, Duration::from_secs(8));
        assert_eq!(args.refuse_connections_for, Duration::from_secs(3));
        assert_eq!(scenario.orders, 2500);
        assert_eq!(scenario.account_id, Some(11));
        let others: Vec<(&str, u64, Role)> = scenario
            .other_keys
            .iter()
            .map(|k| (k.key.as_str(), k.account_id, k.role))
            .collect();
        assert_eq!(
            others,
            [
                ("second-key", 22, Role::Administrator),
                ("third-key", 33, Role::StandardUser)
            ]
        );
        assert!(!format!("{scenario:?}").contains("third-key"));
    }

    #[test]
    fn defaults_are_a_well_behaved_unlimited_account() {
        let args = parse(&[]).expect("no flags needed");
        assert_eq!(args.listen, "127.0.0.1:0".parse().expect("address"));
        let scenario = args.scenario();
        assert!(scenario.quotas.is_empty() && scenario.missing_orders.is_empty());
        assert_eq!(scenario.faults, Faults::default());
        assert_eq!(scenario.issuance_delay, Duration::ZERO);
    }

    #[test]
    fn bad_values_are_refused() {
        for flags in [
            &["--fail-500=1.5"][..],
            &["--fail-503=-0.1"],
            &["--drop-after-commit=often"],
            &["--missing-orders=20-10"],
            &["--missing-orders=a-b"],
            &["--needs-approval=-"],
            &["--rate=0/5s"],
            &["--latency=fast"],
            &["--api-key= "],
            &["--account=k"],
            &["--account=k=x"],
            &["--account==5"],
            &["--account=k=5:emperor"],
        ] {
            assert!(parse(flags).is_err(), "{flags:?} accepted");
        }
    }

    #[tokio::test]
    async fn serve_prints_the_base_url_first_writes_the_port_and_stops_on_request() {
        let dir = tempfile::tempdir().expect("temp dir");
        let port_file = dir.path().join("port");
        let args = parse(&[
            "--port-file",
            port_file.to_str().expect("UTF-8 path"),
            "--missing-orders=5",
        ])
        .expect("valid flags");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (url_tx, url_rx) = tokio::sync::oneshot::channel::<(String, String)>();
        let server = tokio::spawn(async move {
            let mut out = Vec::new();
            let until = async move {
                let _ = stopped.await;
                Ok(())
            };
            let result = serve(args, &mut ProbeWriter::new(&mut out, url_tx), until).await;
            (result, out)
        });
        let (first_line, port) = url_rx.await.expect("a URL was printed");
        assert_eq!(
            std::fs::read_to_string(&port_file).expect("port file"),
            format!("{port}\n")
        );
        assert_eq!(first_line, format!("http://127.0.0.1:{port}/services/v2"));
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let missing = client
            .get(format!("{first_line}/order/certificate/5"))
            .header("X-DC-DEVKEY", "k")
            .send()
            .await
            .expect("the simulator answers");
        assert_eq!(missing.status(), 404);
        stop.send(()).expect("server waiting");
        let (result, out) = server.await.expect("serve task");
        result.expect("clean shutdown");
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            format!("{first_line}\n")
        );
    }

    #[tokio::test]
    async fn refuse_connections_for_announces_the_port_at_once_and_serves_after_the_outage() {
        let args = parse(&["--refuse-connections-for=600ms"]).expect("valid flags");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (url_tx, url_rx) = tokio::sync::oneshot::channel::<(String, String)>();
        let server = tokio::spawn(async move {
            let mut out = Vec::new();
            let until = async move {
                let _ = stopped.await;
                Ok(())
            };
            serve(args, &mut ProbeWriter::new(&mut out, url_tx), until).await
        });
        let (base_url, _port) = url_rx.await.expect("a URL was printed");
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let get = || {
            client
                .get(format!("{base_url}/order/certificate/5"))
                .header("X-DC-DEVKEY", "k")
                .send()
        };
        let refused = get().await.expect_err("refused during the outage");
        assert!(refused.is_connect(), "{refused:?}");
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(get().await.expect("served after it").status(), 200);
        stop.send(()).expect("server waiting");
        server.await.expect("serve task").expect("clean shutdown");
    }

    /// Collects output and, on the first flush, hands the first line (and the port in it) to
    /// the test while `serve` keeps running.
    struct ProbeWriter<'a> {
        out: &'a mut Vec<u8>,
        report: Option<tokio::sync::oneshot::Sender<(String, String)>>,
    }

    impl<'a> ProbeWriter<'a> {
        fn new(
            out: &'a mut Vec<u8>,
            report: tokio::sync::oneshot::Sender<(String, String)>,
        ) -> Self {
            Self {
                out,
                report: Some(report),
            }
        }
    }

    impl Write for ProbeWriter<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            if let Some(report) = self.report.take() {
                let text = String::from_utf8_lossy(self.out);
                let line = text.lines().next().unwrap_or_default().to_owned();
                let port = line
                    .trim_start_matches("http://127.0.0.1:")
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = report.send((line, port));
            }
            Ok(())
        }
    }
}
