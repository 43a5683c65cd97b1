//! CertCentral on loopback: the test equipment behind `demo`, the tests and the benchmark.
//!
//! A real HTTP server (HTTP/1.1 and h2c, or HTTPS with a throwaway CA) that speaks the shapes of
//! `reference/certcentral-notes.md` for the endpoints a bulk reissue runner uses: reissue, order
//! info, the order's reissue list, status changes and certificate download. It enforces rolling
//! quotas, checks the API key, and injects faults (errors before and after the reissue is
//! committed, a connection dropped with no response, latency) from a seeded RNG. Every request
//! and every committed reissue lands in a [`Ledger`], which is what tests assert on: "each order
//! was reissued exactly once" is `ledger.accepted_per_order()`.
//!
//! Requests are parsed as `serde_json::Value` here, never with the client's types, so a client
//! bug cannot hide behind a matching simulator bug.
//!
//! Outages: [`Scenario::all_500_for`] answers 500 to everything for a while, and a
//! [`ReservedPort`] holds a loopback port on which connections are refused until the simulator
//! starts serving on it.
//!
//! The key says who is calling: `GET /user/me` and `GET /account` answer with the account a key
//! belongs to ([`Scenario::account_id`] for the main key, [`Scenario::other_keys`] for more), so
//! tests can use "the same account" and "another account" on one server.
//!
//! The account holds [`Scenario::orders`] listed orders (`GET /order/certificate`, with
//! `filters[...]`, `sort`, `offset` and `limit`; a filter it does not know is a 400, as a strict
//! server would answer), made from the seed: varied names, products, signature hashes, expiry,
//! status, organizations and containers (see `catalog.rs`). Every key sees the same orders.
//!
//! Simulated orders: every order id exists unless a [`Scenario::missing_orders`] range names it.
//! Before any reissue an order holds an issued certificate with CN `order-<id>.example.com` and
//! SANs `order-<id>.example.com`, `www.order-<id>.example.com`. Orders whose id is a multiple of 7
//! run on nginx (`server_platform` 45) with `sha384`; all others on apache (2) with `sha256`, so
//! code that fills a reissue from the order's own values sees more than one answer. A listed
//! order answers order info with its own names, hash, product and expiry instead.
//!
//!
//! Between a reissue and its certificate (see `rotation.rs`): a reissue with a token DCV method
//! stays `reissue_pending` until its token is published (`POST /__simulator/dcv`, standing in
//! for DNS automation) and `check-dcv` finds it; a reissue that needs approval waits until
//! `PUT /request/{id}/status` approves it.

mod accounts;
mod ca;
mod catalog;
mod csr;
#[cfg(test)]
mod list_tests;
mod rotation;
#[cfg(test)]
mod rotation_tests;
mod routes;
mod server;
mod state;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use catalog::FIRST_LISTED_ORDER;
pub use server::{ReservedPort, SimulatorHandle, start, start_on_loopback};
pub use tls::TLS_CA_NAME;

/// The account id `/user/me` gives for the main key when [`Scenario::account_id`] is not set.
pub const DEFAULT_ACCOUNT_ID: u64 = 1_234_567;

/// How the simulated CertCentral account behaves.
#[derive(Clone, Default)]
pub struct Scenario {
    /// The only `X-DC-DEVKEY` accepted (besides `user_keys`); `None` accepts any non-empty key.
    /// Its user is an administrator.
    pub api_key: Option<String>,
    /// Keys of standard users: accepted for everything but approving a request, which only an
    /// administrator or a manager may do (403 `access_denied|missing_permission`).
    pub user_keys: Vec<String>,
    /// Rolling windows, all enforced at once; empty means unlimited.
    pub quotas: Vec<crate::config::Quota>,
    /// `Retry-After` sent with 429 and 503 (whole seconds, rounded up); `None` sends none.
    pub retry_after: Option<Duration>,
    /// Order ids that answer 404 `not_found|order`.
    pub missing_orders: Vec<RangeInclusive<u64>>,
    /// Orders whose reissues are accepted but stay `needs_approval` until their request is
    /// approved (`PUT /request/{id}/status`).
    pub needs_approval_orders: Vec<RangeInclusive<u64>>,
    /// Every reissue sent without `skip_approval` waits for approval, as on an account whose
    /// settings require it.
    pub approval_required: bool,
    /// How long a DCV token is valid; 30 days when `None`.
    pub dcv_token_validity: Option<Duration>,
    /// From an accepted reissue to its issuance; zero issues at once.
    pub issuance_delay: Duration,
    /// Faults at start; [`SimulatorHandle::set_faults`] changes them while running.
    pub faults: Faults,
    /// A reissue POST waits this long after it arrived before it is processed (key check,
    /// quotas, fault draw, commit), and is processed even if its client has gone meanwhile: a
    /// CertCentral slower than the client's timeout. Its ledger time is when it was processed.
    pub commit_delay: Duration,
    /// Plus a uniform random `0..=commit_delay_jitter`.
    pub commit_delay_jitter: Duration,
    /// The same for an approval (`PUT /request/{id}/status`): processed this long after it
    /// arrived, even if its client has gone meanwhile.
    pub approval_delay: Duration,
    /// Seeds every random choice: faults, jitter, DCV tokens, serial numbers, listed orders.
    pub seed: u64,
    /// An outage behind the load balancer: for this long after the simulator starts, every API
    /// request is answered 500 before its key, quotas or body are looked at, and nothing is
    /// committed. Zero (the default) means none.
    pub all_500_for: Duration,
    /// The same, answered 503 without `Retry-After` (after `all_500_for`, if both are set): a
    /// CertCentral that only says it is unavailable.
    pub all_503_for: Duration,
    /// Serve HTTPS instead of plain HTTP.
    pub tls: Option<ServerTls>,
    /// The account of the main key (`api_key`, or any key when that is `None`);
    /// [`DEFAULT_ACCOUNT_ID`] when not set.
    pub account_id: Option<u64>,
    /// More keys, each of its own account and role; accepted besides `api_key`.
    pub other_keys: Vec<KeyAccount>,
    /// How many orders the account lists (`GET /order/certificate`), with ids from
    /// [`FIRST_LISTED_ORDER`]; zero lists none.
    pub orders: u64,
    /// Documented list filters this server does not support: it answers them with a 400, like
    /// a filter it does not know.
    pub refused_list_filters: Vec<String>,
    /// Documented list filters this server accepts but does not apply (it lists as if they were
    /// not given).
    pub ignored_list_filters: Vec<String>,
}

/// A key and whose it is.
#[derive(Clone)]
pub struct KeyAccount {
    pub key: String,
    pub account_id: u64,
    pub role: Role,
}

// By hand, so that the key never reaches a log line through `{:?}`.
impl fmt::Debug for KeyAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAccount")
            .field("key", &"<redacted>")
            .field("account_id", &self.account_id)
            .field("role", &self.role)
            .finish()
    }
}

/// The access roles of `/user/me`, with CertCentral's ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    #[default]
    Administrator,
    LimitedUser,
    FinanceManager,
    Manager,
    StandardUser,
}

impl Role {
    /// Administrators and managers may approve requests; the other roles get a 403.
    pub fn may_approve(self) -> bool {
        matches!(self, Role::Administrator | Role::Manager)
    }

    pub const ALL: [Role; 5] = [
        Role::Administrator,
        Role::LimitedUser,
        Role::FinanceManager,
        Role::Manager,
        Role::StandardUser,
    ];

    /// CertCentral's role id.
    pub fn id(self) -> u64 {
        match self {
            Role::Administrator => 1,
            Role::LimitedUser => 2,
            Role::FinanceManager => 3,
            Role::Manager => 4,
            Role::StandardUser => 5,
        }
    }

    /// CertCentral's role name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Administrator => "Administrator",
            Role::LimitedUser => "Limited User",
            Role::FinanceManager => "Finance Manager",
            Role::Manager => "Manager",
            Role::StandardUser => "Standard User",
        }
    }

    /// The role's name in lower case with dashes (`standard-user`), as `simulate` takes it.
    pub fn slug(self) -> String {
        self.name().to_ascii_lowercase().replace(' ', "-")
    }
}

/// HTTPS with a server certificate signed by a CA made at start, which no trust store knows;
/// [`SimulatorHandle::tls_ca_pem`] gives its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// The DNS names and IP addresses the server certificate is for.
    pub names: Vec<String>,
    /// Serve a certificate whose validity ended yesterday.
    pub expired: bool,
}

impl Default for ServerTls {
    /// Valid for `localhost`, `127.0.0.1` and `::1`.
    fn default() -> Self {
        Self {
            names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            expired: false,
        }
    }
}

// Written by hand so that the key never reaches a log line through `{:?}`.
impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field(
                "user_keys",
                &format_args!("<{} redacted>", self.user_keys.len()),
            )
            .field("quotas", &self.quotas)
            .field("retry_after", &self.retry_after)
            .field("missing_orders", &self.missing_orders)
            .field("needs_approval_orders", &self.needs_approval_orders)
            .field("approval_required", &self.approval_required)
            .field("dcv_token_validity", &self.dcv_token_validity)
            .field("issuance_delay", &self.issuance_delay)
            .field("faults", &self.faults)
            .field("commit_delay", &self.commit_delay)
            .field("commit_delay_jitter", &self.commit_delay_jitter)
            .field("approval_delay", &self.approval_delay)
            .field("seed", &self.seed)
            .field("all_500_for", &self.all_500_for)
            .field("all_503_for", &self.all_503_for)
            .field("account_id", &self.account_id)
            .field("other_keys", &self.other_keys)
            .field("orders", &self.orders)
            .field("refused_list_filters", &self.refused_list_filters)
            .field("ignored_list_filters", &self.ignored_list_filters)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Injected faults. Probabilities are in `0.0..=1.0`; all zero by default.
///
/// One random draw decides a reissue's fate, so the probabilities of `error_500`, `error_503`,
/// `error_500_after_commit` and `drop_after_commit` add up (in that order); whatever exceeds 1.0
/// in total is never reached.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// A reissue POST gets 500 and is not committed.
    pub error_500: f64,
    /// A reissue POST is committed to the ledger, then answered 500.
    pub error_500_after_commit: f64,
    /// A reissue POST gets 503 (with `Retry-After` when configured) and is not committed.
    pub error_503: f64,
    /// A reissue POST is committed, then its TCP connection is closed with no response.
    pub drop_after_commit: f64,
    /// Added before answering every request (the work, and any commit, happens first).
    pub latency: Duration,
    /// Plus a uniform random `0..=latency_jitter`.
    pub latency_jitter: Duration,
    /// An API GET (order info, reissue list, status changes, order list, download) gets 500.
    pub get_error_500: f64,
}

/// What the simulator saw and did; [`SimulatorHandle::ledger`] and `GET /__simulator/ledger`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    /// Every reissue the server committed, in commit order.
    pub accepted: Vec<AcceptedReissue>,
    /// Every HTTP request received on any endpoint except the ledger's own, in completion order.
    pub requests: Vec<RequestRecord>,
    /// Every request approval the server committed, in commit order.
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

/// One approved request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Approval {
    pub request_id: u64,
    pub order_id: u64,
    /// The `processor_comment` of the approval, as received.
    pub processor_comment: Option<String>,
    /// Unix time in milliseconds.
    pub approved_at_ms: u64,
}

/// One committed reissue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AcceptedReissue {
    pub order_id: u64,
    pub request_id: u64,
    /// The `certificate_id` the 201 answer carried (only with `skip_approval`).
    pub certificate_id: Option<u64>,
    /// The `certificate.csr` exactly as received.
    pub csr: Option<String>,
    /// The whole request body as received.
    pub body: serde_json::Value,
    /// Unix time in milliseconds.
    pub accepted_at_ms: u64,
    /// The DCV token the 201 answer carried (token DCV methods only).
    pub dcv_random_value: Option<String>,
}

/// One HTTP request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Microseconds since the simulator started; for admitted API calls, the admission instant
    /// the quotas were checked at.
    pub received_us: u64,
    pub method: String,
    /// The URI path, without the query string.
    pub path: String,
    /// The query string as received (empty when there was none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// The status sent, or 0 if no response was sent (connection dropped by a fault, or by the
    /// client while the answer was delayed).
    pub status: u16,
}

impl Ledger {
    /// Committed reissues per order id.
    pub fn accepted_per_order(&self) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for reissue in &self.accepted {
            *counts.entry(reissue.order_id).or_insert(0) += 1;
        }
        counts
    }

    /// How many requests got `status` (0: dropped with no response).
    pub fn count_status(&self, status: u16) -> usize {
        self.requests.iter().filter(|r| r.status == status).count()
    }
}
