//! One request from arrival to answer: key check, quotas, routing, body validation, faults, and
//! its line in the ledger.
//!
//! Everything that touches the account happens in one critical section per request, so the
//! quotas, the fault draws and the commit see one consistent order. CSR checks and certificate
//! signing, the only expensive steps, run outside it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::accounts::{self, Caller};
use super::ca::ChainFormat;
use super::csr::{CsrCache, ParsedKey};
use super::rotation::RequestQuery;
use super::state::{Download, LeafJob, Refusal, Shared, State, duration_us};
use super::{Faults, Scenario};

/// Where the API lives, as in CertCentral's base URL.
pub(crate) const BASE_PATH: &str = "/services/v2";
/// The ledger as JSON: no key, no quota, not itself recorded.
pub(crate) const LEDGER_PATH: &str = "/__simulator/ledger";
/// `POST {"dns_name": …, "value": …}` publishes a DCV token, standing in for the customer's DNS
/// or web automation: no key, no quota, not recorded.
pub(crate) const PUBLISH_DCV_PATH: &str = "/__simulator/dcv";
/// Far above any real reissue body; a client sending more has a bug worth a 400.
const MAX_BODY_BYTES: usize = 1 << 20;
/// `status-changes` looks back at most this far, like CertCentral.
const MAX_STATUS_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);
/// DCV methods of CertCentral's glossary.
const DCV_METHODS: &[&str] = &[
    "email",
    "dns-txt-token",
    "dns-cname-token",
    "http-token",
    "http-token-static",
];
/// The DCV methods whose 201 answer carries a `dcv_random_value`.
const TOKEN_DCV_METHODS: &[&str] = &["dns-txt-token", "dns-cname-token", "http-token"];

/// One entry of an `errors` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    code: String,
    message: String,
}

impl ApiError {
    pub(crate) fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    fn required(path: &str) -> Self {
        Self::new(
            format!("required_param:{path}"),
            format!("{path} is a required parameter."),
        )
    }

    /// CertCentral's codes for wrong values are not documented; this `invalid_param:<path>`
    /// mirrors the documented `required_param:<path>`.
    pub(crate) fn invalid(path: &str, what: &str) -> Self {
        Self::new(format!("invalid_param:{path}"), format!("{path} {what}."))
    }

    fn bad_request_format() -> Self {
        Self::new(
            "bad_request_format",
            "The request body is not a valid JSON object.",
        )
    }
}

/// A reissue body that passed validation, with what the account needs from it.
pub(crate) struct ValidReissue {
    pub body: Value,
    pub csr: Option<String>,
    pub key: Option<Arc<ParsedKey>>,
    pub common_name: Option<String>,
    pub dns_names: Option<Vec<String>>,
    /// Lowercase.
    pub signature_hash: String,
    pub server_platform_id: Option<i64>,
    pub skip_approval: bool,
    pub wants_dcv_token: bool,
    /// The token DCV method, when the body asks for one.
    pub token_method: Option<String>,
    pub comments: Option<String>,
    pub valid_days: Option<u32>,
}

/// Validates a reissue body like CertCentral: every problem found is reported at once.
pub(crate) fn validate(bytes: &[u8], csrs: &CsrCache) -> Result<ValidReissue, Vec<ApiError>> {
    let body: Value =
        serde_json::from_slice(bytes).map_err(|_| vec![ApiError::bad_request_format()])?;
    let Some(root) = body.as_object() else {
        return Err(vec![ApiError::bad_request_format()]);
    };
    let certificate = match present(root, "certificate") {
        None => return Err(vec![ApiError::required("certificate")]),
        Some(Value::Object(certificate)) => certificate,
        Some(_) => return Err(vec![ApiError::invalid("certificate", "must be an object")]),
    };
    let mut errors = Vec::new();

    let signature_hash = match present(certificate, "signature_hash") {
        None => {
            errors.push(ApiError::required("certificate.signature_hash"));
            None
        }
        Some(Value::String(hash))
            if ["sha256", "sha384", "sha512"]
                .iter()
                .any(|allowed| hash.eq_ignore_ascii_case(allowed)) =>
        {
            Some(hash.to_ascii_lowercase())
        }
        Some(_) => {
            errors.push(ApiError::invalid(
                "certificate.signature_hash",
                "must be one of sha256, sha384, sha512",
            ));
            None
        }
    };

    let (csr, key) = match present(certificate, "csr") {
        None => (None, None),
        Some(Value::String(text)) => match csrs.parse(text) {
            Ok(key) => (Some(text.clone()), Some(key)),
            Err(why) => {
                errors.push(ApiError::new(
                    "csr_invalid_cannot_parse",
                    format!("The CSR could not be parsed: {why}."),
                ));
                (None, None)
            }
        },
        Some(_) => {
            errors.push(ApiError::new(
                "csr_invalid_cannot_parse",
                "The CSR could not be parsed: it is not a string.",
            ));
            (None, None)
        }
    };

    let common_name = optional_string(certificate, "common_name", "certificate.", &mut errors);
    let dns_names = match present(certificate, "dns_names") {
        None => None,
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect(),
        ),
        Some(_) => {
            errors.push(ApiError::invalid(
                "certificate.dns_names",
                "must be a list of strings",
            ));
            None
        }
    };
    let server_platform_id = match present(certificate, "server_platform") {
        None => None,
        Some(platform) => {
            let id = platform.get("id").and_then(Value::as_i64);
            if id.is_none() {
                errors.push(ApiError::invalid(
                    "certificate.server_platform.id",
                    "must be an integer",
                ));
            }
            id
        }
    };
    let valid_days = match present(certificate, "cert_validity") {
        None => None,
        Some(validity) => match validity.get("days") {
            None | Some(Value::Null) => None,
            Some(days) => {
                let days = days
                    .as_u64()
                    .filter(|d| (1..=397).contains(d))
                    .and_then(|d| u32::try_from(d).ok());
                if days.is_none() {
                    errors.push(ApiError::invalid(
                        "certificate.cert_validity.days",
                        "must be an integer from 1 to 397",
                    ));
                }
                days
            }
        },
    };

    let skip_approval = match present(root, "skip_approval") {
        None => false,
        Some(Value::Bool(skip)) => *skip,
        Some(_) => {
            errors.push(ApiError::invalid("skip_approval", "must be true or false"));
            false
        }
    };
    let dcv_method = optional_string(root, "dcv_method", "", &mut errors);
    if let Some(method) = &dcv_method
        && !DCV_METHODS.contains(&method.as_str())
    {
        errors.push(ApiError::invalid(
            "dcv_method",
            &format!("must be one of {}", DCV_METHODS.join(", ")),
        ));
    }
    let comments = optional_string(root, "comments", "", &mut errors);

    match signature_hash {
        Some(signature_hash) if errors.is_empty() => Ok(ValidReissue {
            wants_dcv_token: dcv_method
                .as_deref()
                .is_some_and(|m| TOKEN_DCV_METHODS.contains(&m)),
            token_method: dcv_method.filter(|m| TOKEN_DCV_METHODS.contains(&m.as_str())),
            csr,
            key,
            common_name,
            dns_names,
            signature_hash,
            server_platform_id,
            skip_approval,
            comments,
            valid_days,
            body,
        }),
        _ => Err(errors),
    }
}

/// A field that is there and not `null` (clients may send `null` for "not set").
fn present<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}

fn optional_string(
    object: &Map<String, Value>,
    key: &str,
    prefix: &str,
    errors: &mut Vec<ApiError>,
) -> Option<String> {
    match present(object, key) {
        None => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => {
            errors.push(ApiError::invalid(
                &format!("{prefix}{key}"),
                "must be a string",
            ));
            None
        }
    }
}

/// The endpoints, by method and path below [`BASE_PATH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Reissue {
        order_id: u64,
    },
    ReissueList {
        order_id: u64,
    },
    OrderInfo {
        order_id: u64,
    },
    StatusChanges,
    /// `GET /order/certificate`: the account's orders, filtered and paged.
    ListOrders,
    /// `GET /user/me`: who the key belongs to.
    UserMe,
    /// `GET /account`: the key's account.
    Account,
    Download {
        certificate_id: u64,
        format: ChainFormat,
    },
    CheckDcv {
        order_id: u64,
    },
    DcvRandomValue {
        order_id: u64,
    },
    RequestList,
    RequestInfo {
        request_id: u64,
    },
    RequestStatus {
        request_id: u64,
    },
    /// A request route whose id is not a number: no such request.
    UnknownRequest,
    /// An order route whose id is not a number: no such order.
    UnknownOrder,
    /// A download whose id is not a number: no such certificate.
    UnknownCertificate,
    Unknown,
}

impl Route {
    fn parse(method: &Method, path: &str) -> Self {
        let Some(rest) = path.strip_prefix(BASE_PATH) else {
            return Self::Unknown;
        };
        let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let order = |id: &str, route: fn(u64) -> Self| id.parse().map_or(Self::UnknownOrder, route);
        match (method, segments.as_slice()) {
            (&Method::GET, ["order", "certificate"]) => Self::ListOrders,
            (&Method::GET, ["user", "me"]) => Self::UserMe,
            (&Method::GET, ["account"]) => Self::Account,
            (&Method::GET, ["order", "certificate", "status-changes"]) => Self::StatusChanges,
            (&Method::POST, ["order", "certificate", id, "reissue"]) => {
                order(id, |order_id| Self::Reissue { order_id })
            }
            (&Method::GET, ["order", "certificate", id, "reissue"]) => {
                order(id, |order_id| Self::ReissueList { order_id })
            }
            (&Method::GET, ["order", "certificate", id]) => {
                order(id, |order_id| Self::OrderInfo { order_id })
            }
            (&Method::PUT, ["order", "certificate", id, "check-dcv"]) => {
                order(id, |order_id| Self::CheckDcv { order_id })
            }
            (&Method::PUT, ["order", "certificate", id, "dcv-random-value"]) => {
                order(id, |order_id| Self::DcvRandomValue { order_id })
            }
            (&Method::GET, ["request"]) => Self::RequestList,
            (&Method::GET, ["request", id]) => id
                .parse()
                .map_or(Self::UnknownRequest, |request_id| Self::RequestInfo {
                    request_id,
                }),
            (&Method::PUT, ["request", id, "status"]) => id
                .parse()
                .map_or(Self::UnknownRequest, |request_id| Self::RequestStatus {
                    request_id,
                }),
            (&Method::GET, ["certificate", id, "download", "format", format]) => {
                match (id.parse(), ChainFormat::from_name(format)) {
                    (_, None) => Self::Unknown,
                    (Err(_), Some(_)) => Self::UnknownCertificate,
                    (Ok(certificate_id), Some(format)) => Self::Download {
                        certificate_id,
                        format,
                    },
                }
            }
            _ => Self::Unknown,
        }
    }

    /// The reads that `Faults::get_error_500` applies to.
    fn is_get(self) -> bool {
        matches!(
            self,
            Self::ReissueList { .. }
                | Self::OrderInfo { .. }
                | Self::StatusChanges
                | Self::ListOrders
                | Self::Download { .. }
        )
    }
}

/// A request body, read (and for a reissue, checked) before the lock is taken.
enum ReadBody {
    Nothing,
    Reissue(Result<ValidReissue, Vec<ApiError>>),
    /// `PUT /request/{id}/status`: the JSON body, `None` when it is not JSON.
    Status(Option<Value>),
}

/// What the critical section decided.
enum Outcome {
    Answer(Response<Body>),
    /// Close the connection with no response (the reissue is already committed).
    Drop,
    /// Sign this leaf outside the lock, then answer with its chain.
    Sign(LeafJob, ChainFormat),
}

/// The ledger line of one request. If the answer never leaves (the connection was dropped by a
/// fault, or the client went away during injected latency) it is recorded with status 0.
struct Exchange {
    shared: Arc<Shared>,
    received_us: u64,
    /// Method, path and query.
    line: Option<(String, String, String)>,
}

impl Exchange {
    fn record(&mut self, state: &mut State, status: u16) {
        if let Some((method, path, query)) = self.line.take() {
            tracing::debug!(%method, %path, status, "simulator answered");
            state.record(self.received_us, method, path, query, status);
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if self.line.is_some() {
            // Never panic in drop: if a handler panicked with the lock held, skip the record.
            let shared = Arc::clone(&self.shared);
            if let Some(mut state) = shared.lock_unless_poisoned() {
                self.record(&mut state, 0);
            }
        }
    }
}

/// Serves one request. Infallible: every failure is an HTTP answer (or a deliberate drop).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    drop_connection: CancellationToken,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, incoming) = request.into_parts();
    if parts.uri.path() == LEDGER_PATH {
        return Ok(ledger(&shared, &parts.method));
    }
    if parts.uri.path() == PUBLISH_DCV_PATH && parts.method == Method::POST {
        let bytes = axum::body::to_bytes(Body::new(incoming), MAX_BODY_BYTES).await;
        return Ok(publish_dcv(&shared, bytes.ok().as_deref()));
    }
    if shared.clock.now_us() < duration_us(shared.scenario.all_500_for) {
        return Ok(outage(&shared, parts, incoming, StatusCode::INTERNAL_SERVER_ERROR).await);
    }
    if shared.clock.now_us() < duration_us(shared.scenario.all_503_for) {
        return Ok(outage(&shared, parts, incoming, StatusCode::SERVICE_UNAVAILABLE).await);
    }
    let route = Route::parse(&parts.method, parts.uri.path());
    let key_check = check_key(&shared.scenario, &parts.headers);
    // The body is read and checked before taking the lock: CSR verification is the expensive
    // part of a reissue and two cores should share it.
    let read = match route {
        Route::Reissue { .. } if key_check.is_ok() => {
            let bytes = axum::body::to_bytes(Body::new(incoming), MAX_BODY_BYTES).await;
            ReadBody::Reissue(match bytes {
                Ok(bytes) => validate(&bytes, &shared.csrs),
                Err(_) => Err(vec![ApiError::bad_request_format()]),
            })
        }
        Route::RequestStatus { .. } if key_check.is_ok() => {
            let bytes = axum::body::to_bytes(Body::new(incoming), MAX_BODY_BYTES).await;
            ReadBody::Status(
                bytes
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok()),
            )
        }
        _ => ReadBody::Nothing,
    };

    let mut exchange = Exchange {
        shared: Arc::clone(&shared),
        received_us: 0,
        line: Some((
            parts.method.to_string(),
            parts.uri.path().to_owned(),
            parts.uri.query().unwrap_or_default().to_owned(),
        )),
    };
    let query = parts.uri.query().map(str::to_owned);
    let commit_delay = match route {
        Route::Reissue { .. } => shared.lock().jittered(
            shared.scenario.commit_delay,
            shared.scenario.commit_delay_jitter,
        ),
        Route::RequestStatus { .. } => shared.scenario.approval_delay,
        _ => Duration::ZERO,
    };
    let (mut exchange, outcome, latency) = if commit_delay.is_zero() {
        let (outcome, latency) = process(
            &shared,
            &mut exchange,
            key_check,
            route,
            query.as_deref(),
            read,
            true,
        );
        (exchange, outcome, latency)
    } else {
        // A task of its own: the work goes on when the client leaves and drops this handler.
        let shared = Arc::clone(&shared);
        let processed = tokio::spawn(async move {
            tokio::time::sleep(commit_delay).await;
            let (outcome, latency) = process(
                &shared,
                &mut exchange,
                key_check,
                route,
                query.as_deref(),
                read,
                false,
            );
            (exchange, outcome, latency)
        });
        match processed.await {
            Ok(processed) => processed,
            Err(_) => return Ok(internal_error()),
        }
    };

    let response = match outcome {
        Outcome::Answer(response) => response,
        Outcome::Drop => {
            exchange.record(&mut shared.lock(), 0);
            drop_connection.cancel();
            // The connection task drops this future together with the connection.
            let never: Infallible = std::future::pending().await;
            match never {}
        }
        Outcome::Sign(job, format) => match job.sign(&shared.ca) {
            Ok(leaf) => {
                let leaf = shared.lock().store_leaf(job.certificate_id, leaf);
                pem_response(shared.ca.chain(&leaf, format))
            }
            Err(why) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                vec![ApiError::new(
                    "simulator_cannot_issue",
                    format!("The simulator cannot issue this certificate: {why}."),
                )],
            ),
        },
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if exchange.line.is_some() {
        exchange.record(&mut shared.lock(), response.status().as_u16());
    }
    Ok(response)
}

/// [`Scenario::all_500_for`], [`Scenario::all_503_for`]: `status` from in front of the account
/// (no `Retry-After`), recorded, nothing committed.
async fn outage(
    shared: &Shared,
    parts: axum::http::request::Parts,
    incoming: Incoming,
    status: StatusCode,
) -> Response<Body> {
    // Read the body first, so a client still writing it sees the answer, not a reset.
    let _ = axum::body::to_bytes(Body::new(incoming), MAX_BODY_BYTES).await;
    let response = error_response(
        status,
        vec![ApiError::new(
            "internal_error",
            "CertCentral is down (an outage played by the simulator).",
        )],
    );
    let mut state = shared.lock();
    let now_us = shared.clock.now_us();
    state.record(
        now_us,
        parts.method.to_string(),
        parts.uri.path().to_owned(),
        parts.uri.query().unwrap_or_default().to_owned(),
        response.status().as_u16(),
    );
    response
}

/// The critical section of one request: the decision under the lock, the ledger's time for it,
/// and how long to hold its answer back. `answer_now`: with no latency, the answer is recorded
/// as sent at once (not when the client may already have gone).
fn process(
    shared: &Shared,
    exchange: &mut Exchange,
    key_check: Result<Caller, KeyRefusal>,
    route: Route,
    query: Option<&str>,
    read: ReadBody,
    answer_now: bool,
) -> (Outcome, Duration) {
    let mut state = shared.lock();
    let now_us = shared.clock.now_us();
    exchange.received_us = now_us;
    let latency = state.latency();
    let outcome = decide(shared, &mut state, now_us, key_check, route, query, read);
    // Fast path: with no latency to inject, the answer is as good as sent.
    if let Outcome::Answer(response) = &outcome
        && latency.is_zero()
        && answer_now
    {
        exchange.record(&mut state, response.status().as_u16());
    }
    (outcome, latency)
}

/// The decision, under the lock: admission, then the route.
fn decide(
    shared: &Shared,
    state: &mut State,
    now_us: u64,
    key_check: Result<Caller, KeyRefusal>,
    route: Route,
    query: Option<&str>,
    read: ReadBody,
) -> Outcome {
    let caller = match key_check {
        Ok(caller) => caller,
        Err(refused) => return Outcome::Answer(refused.response()),
    };
    if state.key_revoked {
        return Outcome::Answer(KeyRefusal::Wrong.response());
    }
    if !state.admit(now_us) {
        return Outcome::Answer(busy(
            &shared.scenario,
            StatusCode::TOO_MANY_REQUESTS,
            "request_limit_exceeded",
            "Service unavailable, please limit request volume",
        ));
    }
    if route.is_get() && state.draw() < state.faults.get_error_500 {
        return Outcome::Answer(internal_error());
    }
    let missing_order = ApiError::new("not_found|order", "The order could not be found.");
    match route {
        Route::Unknown => Outcome::Answer(error_response(
            StatusCode::NOT_FOUND,
            vec![ApiError::new(
                "not_found|route",
                "The route does not exist.",
            )],
        )),
        Route::UnknownOrder => {
            Outcome::Answer(error_response(StatusCode::NOT_FOUND, vec![missing_order]))
        }
        Route::UnknownCertificate => Outcome::Answer(certificate_not_found()),
        Route::UnknownRequest => Outcome::Answer(refused(&Refusal {
            status: 404,
            code: "not_found|request".into(),
            message: "The request could not be found.".into(),
        })),
        Route::UserMe => {
            Outcome::Answer(json_response(StatusCode::OK, &accounts::user_me(&caller)))
        }
        Route::Account => {
            Outcome::Answer(json_response(StatusCode::OK, &accounts::account(&caller)))
        }
        Route::ListOrders => match super::catalog::list(shared, state, query, now_us) {
            Ok(page) => Outcome::Answer(json_response(StatusCode::OK, &page)),
            Err(error) => Outcome::Answer(error_response(StatusCode::BAD_REQUEST, vec![error])),
        },
        Route::OrderInfo { order_id }
        | Route::ReissueList { order_id }
        | Route::CheckDcv { order_id }
        | Route::DcvRandomValue { order_id }
            if shared.is_missing(order_id) =>
        {
            Outcome::Answer(error_response(StatusCode::NOT_FOUND, vec![missing_order]))
        }
        Route::OrderInfo { order_id } => Outcome::Answer(json_response(
            StatusCode::OK,
            &state.order_info(shared, order_id, now_us),
        )),
        Route::ReissueList { order_id } => Outcome::Answer(json_response(
            StatusCode::OK,
            &state.reissue_list(shared, order_id, now_us),
        )),
        Route::CheckDcv { order_id } => {
            answer_or_refusal(state.check_dcv(shared, order_id, now_us), StatusCode::OK)
        }
        Route::DcvRandomValue { order_id } => answer_or_refusal(
            state.dcv_random_value(shared, order_id, now_us),
            StatusCode::OK,
        ),
        Route::RequestList => match RequestQuery::parse(query) {
            Ok(query) => Outcome::Answer(json_response(
                StatusCode::OK,
                &state.request_list(shared, &query, now_us),
            )),
            Err((code, message)) => Outcome::Answer(error_response(
                StatusCode::BAD_REQUEST,
                vec![ApiError::new(code, message)],
            )),
        },
        Route::RequestInfo { request_id } => answer_or_refusal(
            state.request_info(shared, request_id, now_us),
            StatusCode::OK,
        ),
        Route::RequestStatus { request_id } => {
            let ReadBody::Status(Some(body)) = &read else {
                return Outcome::Answer(error_response(
                    StatusCode::BAD_REQUEST,
                    vec![ApiError::bad_request_format()],
                ));
            };
            if !caller.role.may_approve() {
                return Outcome::Answer(refused(&Refusal {
                    status: 403,
                    code: "access_denied|missing_permission".into(),
                    message: "Only an administrator or a manager may approve a request.".into(),
                }));
            }
            match state.set_request_status(shared, request_id, body, now_us) {
                Ok(()) => Outcome::Answer(no_content()),
                Err(refusal) => Outcome::Answer(refused(&refusal)),
            }
        }
        Route::StatusChanges => match status_period(query) {
            Ok(period) => Outcome::Answer(json_response(
                StatusCode::OK,
                &state.status_changes(shared, duration_us(period), now_us),
            )),
            Err(error) => Outcome::Answer(error_response(StatusCode::BAD_REQUEST, vec![error])),
        },
        Route::Download {
            certificate_id,
            format,
        } => match state.download(shared, certificate_id, now_us) {
            Download::Ready(leaf) => Outcome::Answer(pem_response(shared.ca.chain(&leaf, format))),
            Download::Sign(job) => Outcome::Sign(job, format),
            Download::NotFound => Outcome::Answer(certificate_not_found()),
        },
        Route::Reissue { order_id } => {
            if shared.is_missing(order_id) {
                return Outcome::Answer(error_response(StatusCode::NOT_FOUND, vec![missing_order]));
            }
            match read {
                ReadBody::Reissue(Ok(reissue)) => {
                    reissue_with_faults(shared, state, order_id, reissue, now_us)
                }
                ReadBody::Reissue(Err(errors)) => {
                    Outcome::Answer(error_response(StatusCode::BAD_REQUEST, errors))
                }
                // Only when the key check failed, which returned above.
                _ => Outcome::Answer(error_response(
                    StatusCode::BAD_REQUEST,
                    vec![ApiError::bad_request_format()],
                )),
            }
        }
    }
}

/// One draw decides the fate of a valid reissue; see [`Faults`] for how the odds add up.
fn reissue_with_faults(
    shared: &Shared,
    state: &mut State,
    order_id: u64,
    reissue: ValidReissue,
    now_us: u64,
) -> Outcome {
    let draw = state.draw();
    let Faults {
        error_500,
        error_503,
        error_500_after_commit,
        drop_after_commit,
        ..
    } = state.faults;
    if draw < error_500 {
        return Outcome::Answer(internal_error());
    }
    if draw < error_500 + error_503 {
        return Outcome::Answer(busy(
            &shared.scenario,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "The service is temporarily unavailable.",
        ));
    }
    let committed = state.commit(shared, order_id, reissue, now_us);
    let after_commit = draw - error_500 - error_503;
    if after_commit < error_500_after_commit {
        return Outcome::Answer(internal_error());
    }
    if after_commit < error_500_after_commit + drop_after_commit {
        return Outcome::Drop;
    }
    let mut answer = json!({"id": order_id, "requests": [{"id": committed.request_id}]});
    if let Some(map) = answer.as_object_mut() {
        if let Some(certificate_id) = committed.certificate_id {
            map.insert("certificate_id".to_owned(), certificate_id.into());
        }
        if let Some(token) = committed.dcv_random_value {
            map.insert("dcv_random_value".to_owned(), token.into());
        }
    }
    Outcome::Answer(json_response(StatusCode::CREATED, &answer))
}

/// Why a request's key was refused. The key itself appears nowhere, not even here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyRefusal {
    Missing,
    Empty,
    Wrong,
}

impl KeyRefusal {
    /// 401 without a key, 403 with a wrong one.
    fn response(self) -> Response<Body> {
        let (status, message) = match self {
            Self::Missing => (
                StatusCode::UNAUTHORIZED,
                "The X-DC-DEVKEY header is missing.",
            ),
            Self::Empty => (StatusCode::UNAUTHORIZED, "The X-DC-DEVKEY header is empty."),
            Self::Wrong => (StatusCode::FORBIDDEN, "The API key is not valid."),
        };
        error_response(
            status,
            vec![ApiError::new(
                "access_denied|access_denied_invalid_key",
                message,
            )],
        )
    }
}

/// The caller a key names, or why it is refused.
fn check_key(scenario: &Scenario, headers: &HeaderMap) -> Result<Caller, KeyRefusal> {
    match headers.get("x-dc-devkey") {
        None => Err(KeyRefusal::Missing),
        Some(sent) if sent.is_empty() => Err(KeyRefusal::Empty),
        Some(sent) => accounts::caller(scenario, sent.as_bytes()).ok_or(KeyRefusal::Wrong),
    }
}

/// `minutes=N` or `seconds=N`, at most seven days.
fn status_period(query: Option<&str>) -> Result<Duration, ApiError> {
    let mut period = None;
    for pair in query.unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let unit = match name {
            "minutes" => 60,
            "seconds" => 1,
            _ => continue,
        };
        let count: u64 = value
            .parse()
            .map_err(|_| ApiError::invalid(name, "must be a whole number"))?;
        let length = Duration::from_secs(count.saturating_mul(unit));
        if length > MAX_STATUS_PERIOD {
            return Err(ApiError::invalid(name, "must be at most 7 days"));
        }
        period = Some(length);
    }
    period.ok_or_else(|| ApiError::required("minutes"))
}

/// `POST /__simulator/dcv`: publishes a token for a name.
fn publish_dcv(shared: &Shared, body: Option<&[u8]>) -> Response<Body> {
    let parsed = body.and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok());
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    };
    match (field("dns_name"), field("value")) {
        (Some(dns_name), Some(value)) => {
            shared.lock().publish_dcv_token(&dns_name, &value);
            no_content()
        }
        _ => error_response(
            StatusCode::BAD_REQUEST,
            vec![ApiError::new(
                "bad_request_format",
                "The body must be {\"dns_name\": \"…\", \"value\": \"…\"}.",
            )],
        ),
    }
}

fn answer_or_refusal(result: Result<Value, Refusal>, status: StatusCode) -> Outcome {
    match result {
        Ok(value) => Outcome::Answer(json_response(status, &value)),
        Err(refusal) => Outcome::Answer(refused(&refusal)),
    }
}

fn refused(refusal: &Refusal) -> Response<Body> {
    error_response(
        StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST),
        vec![ApiError::new(refusal.code.clone(), refusal.message.clone())],
    )
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn ledger(shared: &Shared, method: &Method) -> Response<Body> {
    if method != Method::GET {
        return error_response(
            StatusCode::NOT_FOUND,
            vec![ApiError::new(
                "not_found|route",
                "The route does not exist.",
            )],
        );
    }
    // Serialized under the lock rather than cloned: tens of thousands of entries are cheaper to
    // write once than to copy and then write.
    let body = serde_json::to_vec(&shared.lock().ledger);
    match body {
        Ok(body) => with_content_type(Response::new(Body::from(body)), "application/json"),
        Err(_) => internal_error(),
    }
}

fn busy(scenario: &Scenario, status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let mut response = error_response(status, vec![ApiError::new(code, message)]);
    if let Some(after) = scenario.retry_after {
        let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn internal_error() -> Response<Body> {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        vec![ApiError::new(
            "internal_error",
            "An internal error occurred (injected by the simulator).",
        )],
    )
}

fn certificate_not_found() -> Response<Body> {
    error_response(
        StatusCode::NOT_FOUND,
        vec![ApiError::new(
            "not_found|certificate",
            "The certificate could not be found or is not issued yet.",
        )],
    )
}

fn error_response(status: StatusCode, errors: Vec<ApiError>) -> Response<Body> {
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|e| json!({"code": e.code, "message": e.message}))
        .collect();
    json_response(status, &json!({ "errors": errors }))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    with_content_type(response, "application/json")
}

fn pem_response(pem: String) -> Response<Body> {
    with_content_type(Response::new(Body::from(pem)), "application/x-pem-file")
}

fn with_content_type(mut response: Response<Body>, content_type: &'static str) -> Response<Body> {
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_by_method_and_path() {
        let route = |m: Method, p: &str| Route::parse(&m, p);
        assert_eq!(
            route(Method::POST, "/services/v2/order/certificate/12/reissue"),
            Route::Reissue { order_id: 12 }
        );
        assert_eq!(
            route(Method::GET, "/services/v2/order/certificate/12/reissue"),
            Route::ReissueList { order_id: 12 }
        );
        assert_eq!(
            route(Method::GET, "/services/v2/order/certificate/12"),
            Route::OrderInfo { order_id: 12 }
        );
        assert_eq!(
            route(Method::GET, "/services/v2/order/certificate/status-changes"),
            Route::StatusChanges
        );
        assert_eq!(
            route(
                Method::GET,
                "/services/v2/certificate/9/download/format/pem_all"
            ),
            Route::Download {
                certificate_id: 9,
                format: ChainFormat::All
            }
        );
        assert_eq!(
            route(Method::GET, "/services/v2/order/certificate/abc"),
            Route::UnknownOrder
        );
        assert_eq!(
            route(
                Method::GET,
                "/services/v2/certificate/9/download/format/p7b"
            ),
            Route::Unknown
        );
        assert_eq!(
            route(Method::PUT, "/services/v2/order/certificate/12/reissue"),
            Route::Unknown
        );
        assert_eq!(route(Method::GET, "/order/certificate/12"), Route::Unknown);
        assert_eq!(
            route(Method::GET, "/services/v2/order/certificate"),
            Route::ListOrders
        );
        assert_eq!(route(Method::GET, "/services/v2/user/me"), Route::UserMe);
        assert_eq!(route(Method::GET, "/services/v2/account"), Route::Account);
        assert_eq!(route(Method::POST, "/services/v2/user/me"), Route::Unknown);
    }

    #[test]
    fn status_period_takes_minutes_or_seconds_up_to_a_week() {
        assert_eq!(
            status_period(Some("minutes=5")),
            Ok(Duration::from_secs(300))
        );
        assert_eq!(status_period(Some("seconds=7")), Ok(Duration::from_secs(7)));
        assert!(status_period(None).is_err());
        assert!(status_period(Some("minutes=x")).is_err());
        assert!(status_period(Some("minutes=10081")).is_err());
        assert!(status_period(Some("minutes=10080")).is_ok());
    }

    #[test]
    fn validation_reports_every_problem_at_once() {
        let cache = CsrCache::default();
        let body = br#"{"certificate":{"csr":"-----BEGIN CERTIFICATE REQUEST-----AAAA-----END CERTIFICATE REQUEST-----","dns_names":"x"},"skip_approval":"yes","dcv_method":"carrier-pigeon"}"#;
        let Err(errors) = validate(body, &cache) else {
            panic!("accepted an invalid body");
        };
        let codes: Vec<&str> = errors.iter().map(|e| e.code.as_str()).collect();
        assert_eq!(
            codes,
            [
                "required_param:certificate.signature_hash",
                "csr_invalid_cannot_parse",
                "invalid_param:certificate.dns_names",
                "invalid_param:skip_approval",
                "invalid_param:dcv_method",
            ]
        );
    }

    #[test]
    fn validation_accepts_any_case_of_the_hash_and_null_as_absent() {
        let cache = CsrCache::default();
        let body = br#"{"certificate":{"signature_hash":"SHA384","csr":null,"common_name":null},"comments":null}"#;
        let reissue = validate(body, &cache).expect("valid body");
        assert_eq!(reissue.signature_hash, "sha384");
        assert!(reissue.csr.is_none() && reissue.common_name.is_none());
    }

    #[test]
    fn unparsable_or_non_object_bodies_are_bad_request_format() {
        let cache = CsrCache::default();
        for body in [&b"{"[..], b"[]", b"null", b"\"x\""] {
            let Err(errors) = validate(body, &cache) else {
                panic!("accepted {body:?}");
            };
            assert_eq!(errors, [ApiError::bad_request_format()]);
        }
        let Err(errors) = validate(b"{}", &cache) else {
            panic!("accepted an empty object");
        };
        assert_eq!(errors, [ApiError::required("certificate")]);
    }
}
