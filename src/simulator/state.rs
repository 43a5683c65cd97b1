//! The simulated account behind one mutex: quotas, orders, committed reissues, certificate ids,
//! the seeded RNG and the ledger.
//!
//! Nothing here runs on a timer. Issuance is a function of the clock (`accepted + delay`), worked
//! out whenever someone looks, so 20,000 pending reissues cost no tasks and no wake-ups.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::ca::{Ca, LeafSpec};
use super::catalog::Catalog;
use super::csr::{CsrCache, ParsedKey};
use super::rotation::{self, ApprovalGate, CheckOutcome, DcvGate, RequestQuery};
use super::routes::ValidReissue;
use super::{AcceptedReissue, Approval, Faults, Ledger, RequestRecord, Scenario};

/// Certificates of reissues with no `cert_validity.days` run this long (the public TLS maximum).
const DEFAULT_VALID_DAYS: u32 = 397;
/// Simulated orders were placed this long before the simulator started ...
const ORDER_AGE_DAYS: i64 = 30;
/// ... and run for a year from then.
const ORDER_TERM_DAYS: i64 = 365;
const FIRST_REQUEST_ID: u64 = 1_000_001;
const FIRST_CERTIFICATE_ID: u64 = 5_000_001;

/// What every connection task shares.
pub(crate) struct Shared {
    pub scenario: Scenario,
    pub clock: Clock,
    pub ca: Ca,
    pub csrs: CsrCache,
    /// The orders the account lists; fixed at start.
    pub catalog: Catalog,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(scenario: Scenario) -> Result<Self, rcgen::Error> {
        let state = State::new(&scenario);
        let clock = Clock::new();
        let catalog = Catalog::generate(scenario.orders, scenario.seed, clock.date_time(0));
        Ok(Self {
            clock,
            ca: Ca::generate()?,
            csrs: CsrCache::default(),
            catalog,
            state: Mutex::new(state),
            scenario,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("simulator state lock poisoned: a handler panicked while holding it")
    }

    /// For `Drop` impls, which must not panic.
    pub(crate) fn lock_unless_poisoned(&self) -> Option<MutexGuard<'_, State>> {
        self.state.lock().ok()
    }

    pub(crate) fn is_missing(&self, order_id: u64) -> bool {
        self.scenario
            .missing_orders
            .iter()
            .any(|r| r.contains(&order_id))
    }

    pub(crate) fn needs_approval(&self, order_id: u64) -> bool {
        self.scenario
            .needs_approval_orders
            .iter()
            .any(|r| r.contains(&order_id))
    }

    fn delay_us(&self) -> u64 {
        duration_us(self.scenario.issuance_delay)
    }

    fn token_validity_us(&self) -> u64 {
        duration_us(
            self.scenario
                .dcv_token_validity
                .unwrap_or(rotation::DEFAULT_TOKEN_VALIDITY),
        )
    }

    /// The certificate the order holds before its first reissue: a listed order's own, or the
    /// made-up one every other order id has.
    fn initial_fields(&self, order_id: u64) -> CertificateFields {
        self.catalog.get(order_id).map_or_else(
            || CertificateFields::initial(order_id),
            |o| o.fields.clone(),
        )
    }

    /// When the order's first certificate starts and ends.
    fn initial_validity(&self, order_id: u64) -> (OffsetDateTime, OffsetDateTime) {
        self.catalog.get(order_id).map_or_else(
            || (order_placed(&self.clock), order_valid_till(&self.clock)),
            |o| (o.valid_from, o.valid_till),
        )
    }
}

/// Monotonic time since start, and the wall-clock time it corresponds to. On tokio's clock, so
/// a paused-clock runtime (the benchmark's virtual-time campaign) drives the quotas too.
pub(crate) struct Clock {
    start: tokio::time::Instant,
    start_unix_ms: u64,
}

impl Clock {
    fn new() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            start: tokio::time::Instant::now(),
            start_unix_ms: u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub(crate) fn now_us(&self) -> u64 {
        duration_us(self.start.elapsed())
    }

    /// Unix milliseconds of a simulator instant; derived from the monotonic clock so that dates
    /// never run backwards.
    pub(crate) fn unix_ms(&self, us: u64) -> u64 {
        self.start_unix_ms.saturating_add(us / 1000)
    }

    pub(crate) fn date_time(&self, us: u64) -> OffsetDateTime {
        unix_ms_to_date_time(self.unix_ms(us))
    }
}

pub(crate) fn duration_us(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// One rolling quota: the admission instants of the last `limit` requests inside `window`.
struct Window {
    limit: usize,
    window_us: u64,
    admitted: VecDeque<u64>,
}

/// Where a certificate id comes from.
#[derive(Clone, Copy)]
enum CertificateRef {
    /// The certificate an order held before any reissue.
    Initial { order_id: u64 },
    /// The certificate of `reissues[index]`.
    Reissue { index: usize },
}

struct Order {
    initial_certificate_id: u64,
    initial_request_id: u64,
    /// Indices into `State::reissues`, oldest first.
    reissues: Vec<usize>,
}

/// A committed reissue, as far as issuance needs it (its twin in the ledger has the body).
struct Reissue {
    certificate_id: u64,
    accepted_us: u64,
    approval: ApprovalGate,
    /// Token DCV; `None` for other methods, which the simulator treats as done.
    dcv: Option<DcvGate>,
    fields: CertificateFields,
    key: Option<Arc<ParsedKey>>,
    valid_days: u32,
    comments: String,
}

/// The fields a certificate shows in order info and the reissue list.
#[derive(Debug, Clone)]
pub(crate) struct CertificateFields {
    pub common_name: String,
    pub dns_names: Vec<String>,
    /// Lowercase.
    pub signature_hash: String,
    pub server_platform_id: i64,
    pub key_size: u32,
}

impl CertificateFields {
    /// The certificate every order holds before its first reissue (see the module header).
    fn initial(order_id: u64) -> Self {
        let common_name = format!("order-{order_id}.example.com");
        let nginx = order_id.is_multiple_of(7);
        Self {
            dns_names: vec![common_name.clone(), format!("www.{common_name}")],
            common_name,
            signature_hash: if nginx { "sha384" } else { "sha256" }.to_owned(),
            server_platform_id: if nginx { 45 } else { 2 },
            key_size: 2048,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReissueStatus {
    Pending,
    Issued { at_us: u64 },
    NeedsApproval,
}

/// What an order shows now: its status and the certificate it holds.
pub(crate) struct Current {
    pub status: &'static str,
    pub certificate_id: u64,
    pub initial_certificate_id: u64,
    pub serial_number: String,
    pub fields: CertificateFields,
    /// The CSR of the reissue that made the certificate.
    pub csr: Option<String>,
    pub valid_till: OffsetDateTime,
}

/// What a reissue commit answered with.
pub(crate) struct Committed {
    pub request_id: u64,
    pub certificate_id: Option<u64>,
    pub dcv_random_value: Option<String>,
}

/// A certificate download, as far as the state can answer it under the lock.
pub(crate) enum Download {
    Ready(Arc<str>),
    /// Not made yet: sign it outside the lock, then [`State::store_leaf`].
    Sign(LeafJob),
    /// Unknown, or not issued yet.
    NotFound,
}

/// Everything needed to sign one leaf without holding the lock.
pub(crate) struct LeafJob {
    pub certificate_id: u64,
    key: Option<Arc<ParsedKey>>,
    common_name: String,
    dns_names: Vec<String>,
    serial: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl LeafJob {
    pub(crate) fn sign(&self, ca: &Ca) -> Result<String, super::ca::CaError> {
        ca.issue(&LeafSpec {
            key: self.key.as_deref(),
            common_name: &self.common_name,
            dns_names: &self.dns_names,
            serial: &self.serial,
            not_before: self.not_before,
            not_after: self.not_after,
        })
    }
}

pub(crate) struct State {
    pub faults: Faults,
    /// Every API request processed from now on is refused with 403.
    pub key_revoked: bool,
    pub ledger: Ledger,
    rng: StdRng,
    seed: u64,
    windows: Vec<Window>,
    /// Parallel to `ledger.accepted`.
    reissues: Vec<Reissue>,
    orders: HashMap<u64, Order>,
    certificates: HashMap<u64, CertificateRef>,
    pems: HashMap<u64, Arc<str>>,
    next_request_id: u64,
    next_certificate_id: u64,
    /// Reissue request id → index into `reissues`.
    requests: HashMap<u64, usize>,
    /// DCV tokens published, by [`rotation::name_key`].
    published: HashMap<String, BTreeSet<String>>,
}

impl State {
    fn new(scenario: &Scenario) -> Self {
        Self {
            faults: scenario.faults.clone(),
            key_revoked: false,
            ledger: Ledger::default(),
            rng: StdRng::seed_from_u64(scenario.seed),
            seed: scenario.seed,
            windows: scenario
                .quotas
                .iter()
                .map(|q| Window {
                    limit: usize::try_from(q.limit).unwrap_or(usize::MAX),
                    window_us: duration_us(q.window),
                    admitted: VecDeque::new(),
                })
                .collect(),
            reissues: Vec::new(),
            orders: HashMap::new(),
            certificates: HashMap::new(),
            pems: HashMap::new(),
            next_request_id: FIRST_REQUEST_ID,
            next_certificate_id: FIRST_CERTIFICATE_ID,
            requests: HashMap::new(),
            published: HashMap::new(),
        }
    }

    /// Admits a request at `now_us` if every quota has room, counting it in all of them; a
    /// refused request counts in none.
    pub(crate) fn admit(&mut self, now_us: u64) -> bool {
        for window in &mut self.windows {
            while window
                .admitted
                .front()
                .is_some_and(|&t| now_us.saturating_sub(t) >= window.window_us)
            {
                window.admitted.pop_front();
            }
            if window.admitted.len() >= window.limit {
                return false;
            }
        }
        for window in &mut self.windows {
            window.admitted.push_back(now_us);
        }
        true
    }

    pub(crate) fn record(
        &mut self,
        received_us: u64,
        method: String,
        path: String,
        query: String,
        status: u16,
    ) {
        self.ledger.requests.push(RequestRecord {
            received_us,
            method,
            path,
            query,
            status,
        });
    }

    /// A uniform draw in `0.0..1.0` for fault decisions.
    pub(crate) fn draw(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    /// How long to hold this answer back: latency plus uniform jitter.
    pub(crate) fn latency(&mut self) -> Duration {
        self.jittered(self.faults.latency, self.faults.latency_jitter)
    }

    /// `base` plus a uniform random `0..=jitter`.
    pub(crate) fn jittered(&mut self, base: Duration, jitter: Duration) -> Duration {
        let jitter = duration_us(jitter);
        let extra = if jitter == 0 {
            0
        } else {
            self.rng.random_range(0..=jitter)
        };
        base + Duration::from_micros(extra)
    }

    fn dcv_token(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..32)
            .map(|_| char::from(ALPHABET[self.rng.random_range(0..ALPHABET.len())]))
            .collect()
    }

    fn order(&mut self, order_id: u64) -> &mut Order {
        let Self {
            orders,
            certificates,
            next_request_id,
            next_certificate_id,
            ..
        } = self;
        orders.entry(order_id).or_insert_with(|| {
            let certificate_id = take_id(next_certificate_id);
            certificates.insert(certificate_id, CertificateRef::Initial { order_id });
            Order {
                initial_certificate_id: certificate_id,
                initial_request_id: take_id(next_request_id),
                reissues: Vec::new(),
            }
        })
    }

    /// Commits a reissue: ledger entry, new request id, certificate id, DCV token.
    pub(crate) fn commit(
        &mut self,
        shared: &Shared,
        order_id: u64,
        reissue: ValidReissue,
        now_us: u64,
    ) -> Committed {
        let previous = self.latest_fields(shared, order_id);
        let index = self.reissues.len();
        self.order(order_id).reissues.push(index);
        let request_id = take_id(&mut self.next_request_id);
        let certificate_id = take_id(&mut self.next_certificate_id);
        self.certificates
            .insert(certificate_id, CertificateRef::Reissue { index });
        let dcv_random_value = reissue.wants_dcv_token.then(|| self.dcv_token());
        let dcv = reissue
            .token_method
            .clone()
            .zip(dcv_random_value.clone())
            .map(|(method, token)| DcvGate {
                method,
                token,
                token_expires_us: now_us.saturating_add(shared.token_validity_us()),
                validated_us: None,
                validated: BTreeSet::new(),
            });
        self.requests.insert(request_id, index);

        let csr_key = reissue.key.as_deref();
        let common_name = reissue
            .common_name
            .clone()
            .or_else(|| csr_key.and_then(|k| k.common_name.clone()))
            .unwrap_or_else(|| previous.common_name.clone());
        let dns_names = reissue
            .dns_names
            .clone()
            .or_else(|| {
                csr_key
                    .filter(|k| !k.dns_names.is_empty())
                    .map(|k| k.dns_names.clone())
            })
            .unwrap_or_else(|| {
                if reissue.common_name.is_some() || csr_key.is_some() {
                    vec![common_name.clone()]
                } else {
                    previous.dns_names.clone()
                }
            });
        let fields = CertificateFields {
            common_name,
            dns_names,
            signature_hash: reissue.signature_hash.clone(),
            server_platform_id: reissue
                .server_platform_id
                .unwrap_or(previous.server_platform_id),
            key_size: csr_key.map_or(previous.key_size, |k| k.key_size),
        };
        self.reissues.push(Reissue {
            certificate_id,
            accepted_us: now_us,
            approval: ApprovalGate {
                required: shared.needs_approval(order_id)
                    || (shared.scenario.approval_required && !reissue.skip_approval),
                skipped: reissue.skip_approval,
                approved_us: None,
            },
            dcv,
            fields,
            key: reissue.key,
            valid_days: reissue.valid_days.unwrap_or(DEFAULT_VALID_DAYS),
            comments: reissue.comments.unwrap_or_default(),
        });
        let returned_certificate_id = reissue.skip_approval.then_some(certificate_id);
        self.ledger.accepted.push(AcceptedReissue {
            order_id,
            request_id,
            certificate_id: returned_certificate_id,
            csr: reissue.csr,
            body: reissue.body,
            accepted_at_ms: shared.clock.unix_ms(now_us),
            dcv_random_value: dcv_random_value.clone(),
        });
        Committed {
            request_id,
            certificate_id: returned_certificate_id,
            dcv_random_value,
        }
    }

    /// The fields of the order's newest reissue, or of its initial certificate.
    fn latest_fields(&self, shared: &Shared, order_id: u64) -> CertificateFields {
        self.orders
            .get(&order_id)
            .and_then(|o| o.reissues.last())
            .map_or_else(
                || shared.initial_fields(order_id),
                |&i| self.reissues[i].fields.clone(),
            )
    }

    fn status(&self, shared: &Shared, reissue: &Reissue, now_us: u64) -> ReissueStatus {
        if reissue.approval.waiting() {
            return ReissueStatus::NeedsApproval;
        }
        let Some(ready_us) = ready_us(reissue) else {
            return ReissueStatus::Pending;
        };
        let at_us = ready_us.saturating_add(shared.delay_us());
        if now_us >= at_us {
            ReissueStatus::Issued { at_us }
        } else {
            ReissueStatus::Pending
        }
    }

    /// The order's status and the certificate it holds now: the newest issued reissue's, or
    /// the one it started with.
    pub(crate) fn current(&mut self, shared: &Shared, order_id: u64, now_us: u64) -> Current {
        self.order(order_id);
        let order = &self.orders[&order_id];
        let newest = order.reissues.last().map(|&i| &self.reissues[i]);
        let today = shared.clock.date_time(now_us).date();
        let status = match newest {
            None => shared
                .catalog
                .get(order_id)
                .map_or("issued", |listed| listed.status_on(today)),
            Some(reissue) => order_status(self.status(shared, reissue, now_us)),
        };
        let issued = order.reissues.iter().rev().find_map(|&i| {
            match self.status(shared, &self.reissues[i], now_us) {
                ReissueStatus::Issued { at_us } => Some((i, at_us)),
                _ => None,
            }
        });
        let (certificate_id, fields, csr, valid_till) = match issued {
            Some((i, issued_us)) => {
                let reissue = &self.reissues[i];
                (
                    reissue.certificate_id,
                    reissue.fields.clone(),
                    self.ledger.accepted[i].csr.clone(),
                    reissue_not_after(&shared.clock, reissue, issued_us),
                )
            }
            None => (
                order.initial_certificate_id,
                shared.initial_fields(order_id),
                None,
                shared.initial_validity(order_id).1,
            ),
        };
        Current {
            status,
            certificate_id,
            initial_certificate_id: order.initial_certificate_id,
            serial_number: hex::encode_upper(serial(self.seed, certificate_id)),
            fields,
            csr,
            valid_till,
        }
    }

    /// `GET /order/certificate/{order_id}`.
    pub(crate) fn order_info(&mut self, shared: &Shared, order_id: u64, now_us: u64) -> Value {
        let current = self.current(shared, order_id, now_us);
        let status = current.status;
        let certificate = self
            .certificate_json(
                current.certificate_id,
                &current.fields,
                current.csr.as_deref(),
            )
            .with("valid_till", date(current.valid_till));
        let order = &self.orders[&order_id];
        let mut requests: Vec<Value> = order
            .reissues
            .iter()
            .rev()
            .map(|&i| {
                let reissue = &self.reissues[i];
                let request_status = self.request_status(shared, reissue, now_us);
                json!({
                    "id": self.ledger.accepted[i].request_id,
                    "date": date_time(shared.clock.date_time(reissue.accepted_us)),
                    "type": "reissue",
                    "status": request_status,
                    "comments": reissue.comments,
                })
            })
            .collect();
        let placed = shared
            .catalog
            .get(order_id)
            .map_or_else(|| order_placed(&shared.clock), |listed| listed.date_created);
        requests.push(json!({
            "id": order.initial_request_id,
            "date": date_time(placed),
            "type": "new_request",
            "status": "approved",
            "comments": "",
        }));
        let mut info = json!({
            "id": order_id,
            "status": status,
            "certificate": certificate,
            "product": {"name_id": "ssl_plus", "name": "SSL Plus", "type": "ssl_certificate"},
            "requests": requests,
            "order_valid_till": date(order_valid_till(&shared.clock)),
            "cs_provisioning_method": "none",
            "allow_duplicates": false,
        });
        if let Some(listed) = shared.catalog.get(order_id) {
            info = info
                .with(
                    "product",
                    json!({"name_id": listed.product.0, "name": listed.product.1,
                           "type": "ssl_certificate"}),
                )
                .with(
                    "organization",
                    json!({"id": listed.organization.0, "name": listed.organization.1}),
                )
                .with(
                    "container",
                    json!({"id": listed.container.0, "name": listed.container.1}),
                )
                .with("date_created", date_time(listed.date_created))
                .with(
                    "order_valid_till",
                    date(listed.valid_till.max(order_valid_till(&shared.clock))),
                );
        }
        info
    }

    fn certificate_json(
        &self,
        certificate_id: u64,
        fields: &CertificateFields,
        csr: Option<&str>,
    ) -> Value {
        let mut value = json!({
            "id": certificate_id,
            "common_name": fields.common_name,
            "dns_names": fields.dns_names,
            "signature_hash": fields.signature_hash,
            "server_platform": {
                "id": fields.server_platform_id,
                "name": platform_name(fields.server_platform_id),
            },
            "serial_number": hex::encode_upper(serial(self.seed, certificate_id)),
            "thumbprint": hex::encode_upper(thumbprint(self.seed, certificate_id)),
            "key_size": fields.key_size,
            "ca_cert": {"id": "SIMULATOR-ICA", "name": "reissuer simulator issuing CA"},
        });
        if let Some(csr) = csr {
            value = value.with("csr", csr);
        }
        value
    }

    /// `GET /order/certificate/{order_id}/reissue`: oldest first.
    pub(crate) fn reissue_list(&mut self, shared: &Shared, order_id: u64, now_us: u64) -> Value {
        self.order(order_id);
        let order = &self.orders[&order_id];
        let certificates: Vec<Value> = order
            .reissues
            .iter()
            .map(|&i| {
                let reissue = &self.reissues[i];
                let accepted = &self.ledger.accepted[i];
                let status = self.status(shared, reissue, now_us);
                let issued_us = match status {
                    ReissueStatus::Issued { at_us } => at_us,
                    _ => reissue.accepted_us.saturating_add(shared.delay_us()),
                };
                let mut entry = json!({
                    "id": reissue.certificate_id,
                    "thumbprint": hex::encode_upper(thumbprint(self.seed, reissue.certificate_id)),
                    "serial_number": hex::encode_upper(serial(self.seed, reissue.certificate_id)),
                    "common_name": reissue.fields.common_name,
                    "dns_names": reissue.fields.dns_names,
                    "status": if matches!(status, ReissueStatus::Issued { .. }) { "issued" } else { "pending" },
                    "date_created": date_time(shared.clock.date_time(reissue.accepted_us)),
                    "valid_till": date(reissue_not_after(&shared.clock, reissue, issued_us)),
                    "key_size": reissue.fields.key_size,
                    "archived": 0,
                });
                if let ReissueStatus::Issued { at_us } = status {
                    entry = entry.with("date_issued", date_time(shared.clock.date_time(at_us)));
                }
                if let Some(csr) = &accepted.csr {
                    entry = entry.with("csr", csr.as_str());
                }
                entry
            })
            .collect();
        json!({ "certificates": certificates })
    }

    /// `GET /order/certificate/status-changes`: orders whose status changed in the last
    /// `period_us`, by order id.
    pub(crate) fn status_changes(&self, shared: &Shared, period_us: u64, now_us: u64) -> Value {
        let since_us = now_us.saturating_sub(period_us);
        let mut changes: Vec<(u64, u64, &str)> = self
            .orders
            .iter()
            .filter_map(|(&order_id, order)| {
                let reissue = &self.reissues[*order.reissues.last()?];
                let (changed_us, status) = match self.status(shared, reissue, now_us) {
                    ReissueStatus::Issued { at_us } => (at_us, "issued"),
                    ReissueStatus::Pending => (
                        reissue
                            .accepted_us
                            .max(reissue.approval.approved_us.unwrap_or(0)),
                        "reissue_pending",
                    ),
                    ReissueStatus::NeedsApproval => (reissue.accepted_us, "needs_approval"),
                };
                // A change exactly `period` ago is still inside the period.
                (changed_us >= since_us).then_some((order_id, reissue.certificate_id, status))
            })
            .collect();
        changes.sort_unstable();
        let orders: Vec<Value> = changes
            .into_iter()
            .map(|(order_id, certificate_id, status)| {
                json!({"order_id": order_id, "certificate_id": certificate_id, "status": status})
            })
            .collect();
        json!({ "orders": orders })
    }

    /// Looks up a certificate for download; only issued certificates can be downloaded.
    pub(crate) fn download(&self, shared: &Shared, certificate_id: u64, now_us: u64) -> Download {
        if let Some(pem) = self.pems.get(&certificate_id) {
            return Download::Ready(Arc::clone(pem));
        }
        let serial = serial(self.seed, certificate_id);
        match self.certificates.get(&certificate_id) {
            None => Download::NotFound,
            Some(&CertificateRef::Initial { order_id }) => {
                let fields = shared.initial_fields(order_id);
                let (not_before, not_after) = shared.initial_validity(order_id);
                Download::Sign(LeafJob {
                    certificate_id,
                    key: None,
                    common_name: fields.common_name,
                    dns_names: fields.dns_names,
                    serial,
                    not_before,
                    not_after,
                })
            }
            Some(&CertificateRef::Reissue { index }) => {
                let reissue = &self.reissues[index];
                let ReissueStatus::Issued { at_us } = self.status(shared, reissue, now_us) else {
                    return Download::NotFound;
                };
                Download::Sign(LeafJob {
                    certificate_id,
                    key: reissue.key.clone(),
                    common_name: reissue.fields.common_name.clone(),
                    dns_names: reissue.fields.dns_names.clone(),
                    serial,
                    not_before: shared.clock.date_time(at_us),
                    not_after: reissue_not_after(&shared.clock, reissue, at_us),
                })
            }
        }
    }

    /// Keeps a signed leaf; if another request signed the same one meanwhile, the first wins so
    /// every download of a certificate returns the same bytes.
    pub(crate) fn store_leaf(&mut self, certificate_id: u64, pem: String) -> Arc<str> {
        Arc::clone(
            self.pems
                .entry(certificate_id)
                .or_insert_with(|| Arc::from(pem)),
        )
    }
}

/// DCV and approvals (rotation.rs has the rules; here is where they meet the account).
impl State {
    /// The newest reissue of an order, by index.
    fn newest_reissue(&mut self, order_id: u64) -> Option<usize> {
        self.order(order_id).reissues.last().copied()
    }

    /// `PUT /order/certificate/{order_id}/check-dcv`: checks the newest reissue's names.
    pub(crate) fn check_dcv(
        &mut self,
        shared: &Shared,
        order_id: u64,
        now_us: u64,
    ) -> Result<Value, Refusal> {
        let index = self
            .newest_reissue(order_id)
            .ok_or_else(Refusal::no_token)?;
        let Self {
            reissues,
            published,
            ..
        } = self;
        let reissue = &mut reissues[index];
        let names = rotation::names(&reissue.fields.common_name, &reissue.fields.dns_names);
        let gate = reissue.dcv.as_mut().ok_or_else(Refusal::no_token)?;
        let token = gate.token.clone();
        let is_published = |key: &str| published.get(key).is_some_and(|v| v.contains(&token));
        match gate.check(&names, is_published, now_us) {
            CheckOutcome::Valid(names) => {
                let validations = gate.validations(&names);
                let reissue = &self.reissues[index];
                let status = self.status(shared, reissue, now_us);
                let mut answer = json!({
                    "order_status": order_status(status),
                    "dcv_status": "valid",
                    "dns_name_validations": validations,
                });
                if matches!(status, ReissueStatus::Issued { .. }) {
                    answer = answer.with("certificate_id", reissue.certificate_id);
                }
                Ok(answer)
            }
            CheckOutcome::NotFound { code, message } => Err(Refusal::bad_request(code, &message)),
            CheckOutcome::Expired => Err(Refusal::bad_request(
                "expired_random_value",
                "The random value has expired; generate a new one.",
            )),
        }
    }

    /// `PUT /order/certificate/{order_id}/dcv-random-value`: the current token while it is
    /// valid, else a new one (which names must then be published with).
    pub(crate) fn dcv_random_value(
        &mut self,
        shared: &Shared,
        order_id: u64,
        now_us: u64,
    ) -> Result<Value, Refusal> {
        let index = self
            .newest_reissue(order_id)
            .ok_or_else(Refusal::no_token)?;
        let run_out = self.reissues[index]
            .dcv
            .as_ref()
            .is_some_and(|gate| now_us >= gate.token_expires_us && gate.validated_us.is_none());
        let fresh = run_out.then(|| self.dcv_token());
        let Some(gate) = self.reissues[index].dcv.as_mut() else {
            return Err(Refusal::no_token());
        };
        if let Some(fresh) = fresh {
            gate.token = fresh;
            gate.token_expires_us = now_us.saturating_add(shared.token_validity_us());
        }
        let expires = shared.clock.date_time(gate.token_expires_us);
        let expiration_date = format!("{}Z", date_time(expires).trim_end_matches("+00:00"));
        Ok(json!({"dcv_random_value": gate.token, "expiration_date": expiration_date}))
    }

    /// The customer's automation published `value` for `dns_name`.
    pub(crate) fn publish_dcv_token(&mut self, dns_name: &str, value: &str) {
        self.published
            .entry(rotation::name_key(dns_name))
            .or_default()
            .insert(value.to_owned());
    }

    /// Every token not yet used up runs out now (a test's shortcut through 30 days).
    pub(crate) fn expire_dcv_tokens(&mut self, now_us: u64) {
        for gate in self.reissues.iter_mut().filter_map(|r| r.dcv.as_mut()) {
            if gate.validated_us.is_none() {
                gate.token_expires_us = gate.token_expires_us.min(now_us);
            }
        }
    }

    /// The current DCV token of the order's newest reissue.
    pub(crate) fn dcv_token_of(&self, order_id: u64) -> Option<String> {
        let index = *self.orders.get(&order_id)?.reissues.last()?;
        self.reissues[index].dcv.as_ref().map(|g| g.token.clone())
    }

    /// One reissue request as `GET /request` and `GET /request/{id}` show it.
    fn request_status(&self, shared: &Shared, reissue: &Reissue, now_us: u64) -> &'static str {
        let issued = matches!(
            self.status(shared, reissue, now_us),
            ReissueStatus::Issued { .. }
        );
        reissue.approval.request_status(issued)
    }

    fn request_json(&self, shared: &Shared, request_id: u64, index: usize, now_us: u64) -> Value {
        let reissue = &self.reissues[index];
        let accepted = &self.ledger.accepted[index];
        let date_processed = reissue
            .approval
            .approved_us
            .map(|us| date_time(shared.clock.date_time(us)));
        json!({
            "id": request_id,
            "date": date_time(shared.clock.date_time(reissue.accepted_us)),
            "type": "reissue",
            "status": self.request_status(shared, reissue, now_us),
            "date_processed": date_processed,
            "order": {
                "id": accepted.order_id,
                "certificate": {"common_name": reissue.fields.common_name},
            },
        })
    }

    /// `GET /request/{request_id}`.
    pub(crate) fn request_info(
        &self,
        shared: &Shared,
        request_id: u64,
        now_us: u64,
    ) -> Result<Value, Refusal> {
        let index = *self
            .requests
            .get(&request_id)
            .ok_or_else(Refusal::no_request)?;
        Ok(self.request_json(shared, request_id, index, now_us))
    }

    /// `GET /request`: reissue requests by id, filtered by status, one page.
    pub(crate) fn request_list(&self, shared: &Shared, query: &RequestQuery, now_us: u64) -> Value {
        let mut ids: Vec<(u64, usize)> = self
            .requests
            .iter()
            .filter(|(_, index)| {
                query.status.as_deref().is_none_or(|wanted| {
                    self.request_status(shared, &self.reissues[**index], now_us) == wanted
                })
            })
            .map(|(id, index)| (*id, *index))
            .collect();
        ids.sort_unstable();
        let total = ids.len();
        let requests: Vec<Value> = ids
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .map(|(id, index)| self.request_json(shared, id, index, now_us))
            .collect();
        json!({
            "requests": requests,
            "page": {"total": total, "limit": query.limit, "offset": query.offset},
        })
    }

    /// `PUT /request/{request_id}/status`: approves a pending request (the only change the
    /// simulator models).
    pub(crate) fn set_request_status(
        &mut self,
        shared: &Shared,
        request_id: u64,
        body: &Value,
        now_us: u64,
    ) -> Result<(), Refusal> {
        let index = *self
            .requests
            .get(&request_id)
            .ok_or_else(Refusal::no_request)?;
        if body.get("status").and_then(Value::as_str) != Some("approved") {
            return Err(Refusal::bad_request(
                "invalid_param:status",
                "status must be approved (the simulator models no other change).",
            ));
        }
        if self.request_status(shared, &self.reissues[index], now_us) != "pending" {
            return Err(Refusal::bad_request(
                "invalid_request_status",
                "The request is not pending.",
            ));
        }
        self.reissues[index].approval.approved_us = Some(now_us);
        self.ledger.approvals.push(Approval {
            request_id,
            order_id: self.ledger.accepted[index].order_id,
            processor_comment: body
                .get("processor_comment")
                .and_then(Value::as_str)
                .map(str::to_owned),
            approved_at_ms: shared.clock.unix_ms(now_us),
        });
        Ok(())
    }
}

/// An order's status for a reissue in this state.
fn order_status(status: ReissueStatus) -> &'static str {
    match status {
        ReissueStatus::Issued { .. } => "issued",
        ReissueStatus::Pending => "reissue_pending",
        ReissueStatus::NeedsApproval => "needs_approval",
    }
}

/// An error answer from the account's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Refusal {
    fn bad_request(code: &str, message: &str) -> Self {
        Self {
            status: 400,
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    fn no_token() -> Self {
        Self::bad_request(
            "invalid_dcv_method",
            "The order has no pending reissue with a token DCV method.",
        )
    }

    fn no_request() -> Self {
        Self {
            status: 404,
            code: "not_found|request".to_owned(),
            message: "The request could not be found.".to_owned(),
        }
    }
}

/// When the reissue had passed every gate (accepted, approved, domains validated); `None`
/// while its DCV waits.
fn ready_us(reissue: &Reissue) -> Option<u64> {
    let validated = match &reissue.dcv {
        None => 0,
        Some(gate) => gate.validated_us?,
    };
    Some(
        reissue
            .accepted_us
            .max(reissue.approval.approved_us.unwrap_or(0))
            .max(validated),
    )
}

fn take_id(next: &mut u64) -> u64 {
    let id = *next;
    *next += 1;
    id
}

/// A reissued certificate runs `valid_days` from issuance, but never past the order.
fn reissue_not_after(clock: &Clock, reissue: &Reissue, issued_us: u64) -> OffsetDateTime {
    let wanted = clock.date_time(issued_us) + time::Duration::days(i64::from(reissue.valid_days));
    wanted.min(order_valid_till(clock))
}

fn order_placed(clock: &Clock) -> OffsetDateTime {
    clock.date_time(0) - time::Duration::days(ORDER_AGE_DAYS)
}

fn order_valid_till(clock: &Clock) -> OffsetDateTime {
    order_placed(clock) + time::Duration::days(ORDER_TERM_DAYS)
}

/// Platform names for the ids CertCentral's examples use; others get a neutral name.
fn platform_name(id: i64) -> String {
    match id {
        -1 => "OTHER".to_owned(),
        2 => "apache".to_owned(),
        45 => "nginx".to_owned(),
        _ => format!("platform {id}"),
    }
}

/// A certificate's serial: 16 bytes, positive, from the seed and the id, so two runs with one
/// seed agree, and the leaf made later carries the serial that order info already showed.
fn serial(seed: u64, certificate_id: u64) -> Vec<u8> {
    let mut bytes = derived_bytes(seed, certificate_id, 1, 16);
    bytes[0] = (bytes[0] & 0x7f) | 0x10;
    bytes
}

/// A stand-in for the SHA-1 thumbprint: 20 bytes from the seed and the id. It is not the digest
/// of the downloaded certificate, which does not exist until first downloaded.
fn thumbprint(seed: u64, certificate_id: u64) -> Vec<u8> {
    derived_bytes(seed, certificate_id, 2, 20)
}

fn derived_bytes(seed: u64, certificate_id: u64, purpose: u64, len: usize) -> Vec<u8> {
    let mut state = seed ^ certificate_id.rotate_left(17) ^ purpose.rotate_left(41);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix64(&mut state).to_be_bytes());
    }
    out.truncate(len);
    out
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unix_ms_to_date_time(ms: u64) -> OffsetDateTime {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `2026-11-23T10:33:26+00:00`: second precision and an explicit offset, like the docs.
pub(crate) fn date_time(at: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// `2026-11-23`.
pub(crate) fn date(at: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    )
}

/// Adds a key to a JSON object.
trait With {
    fn with(self, key: &str, value: impl Into<Value>) -> Self;
}

impl With for Value {
    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(map) = &mut self {
            map.insert(key.to_owned(), value.into());
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_have_second_precision_and_an_explicit_offset() {
        let at = unix_ms_to_date_time(1_795_429_206_789);
        assert_eq!(date_time(at), "2026-11-23T10:20:06+00:00");
        assert_eq!(date(at), "2026-11-23");
    }

    #[test]
    fn serials_are_positive_and_stable_per_seed() {
        assert_eq!(serial(7, 5_000_001), serial(7, 5_000_001));
        assert_ne!(serial(7, 5_000_001), serial(8, 5_000_001));
        assert_ne!(serial(7, 5_000_001), serial(7, 5_000_002));
        assert!(serial(7, 1)[0] & 0x80 == 0);
        assert_eq!(thumbprint(7, 1).len(), 20);
    }

    #[test]
    fn a_window_admits_exactly_its_limit_and_frees_up_after_it() {
        let scenario = Scenario {
            quotas: vec!["3/1s".parse().expect("valid quota")],
            ..Scenario::default()
        };
        let mut state = State::new(&scenario);
        assert!(state.admit(0));
        assert!(state.admit(10));
        assert!(state.admit(999_999));
        assert!(!state.admit(999_999), "a fourth inside one second");
        assert!(state.admit(1_000_000), "the first left the window");
        assert!(!state.admit(1_000_009));
        assert!(state.admit(1_000_010));
    }

    #[test]
    fn a_refused_request_counts_in_no_window() {
        let scenario = Scenario {
            quotas: vec![
                "1/1s".parse().expect("valid quota"),
                "2/10s".parse().expect("valid quota"),
            ],
            ..Scenario::default()
        };
        let mut state = State::new(&scenario);
        assert!(state.admit(0));
        for t in 1..100 {
            assert!(!state.admit(t * 1000));
        }
        assert!(
            state.admit(1_000_000),
            "refusals did not use up the 10 s quota"
        );
        assert!(!state.admit(2_000_000), "the 10 s quota is full");
    }
}
