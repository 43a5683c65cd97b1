//! The CertCentral client: one method per endpoint, and the one place where an answer (or its
//! absence) is classified. Knows no SQL and no retry policy.

mod tls;
mod wire;

use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{Method, StatusCode};

pub use tls::{Refusal, Trust, TrustError, UntrustedServer};
pub use wire::{
    AccountInfo, DcvCheck, DcvToken, ListedCertificate, ListedOrder, ListedProduct, NameValidation,
    Named, OrderInfo, OrderPage, PageInfo, ReissueEntry, RequestInfo, RequestPage, ServiceError,
    StatusChange, UserMe,
};

use crate::secret::ApiKey;

/// The longest `Retry-After` honoured; a larger value is treated as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// What the runner does about an error. The runner matches on this alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The request never left: CertCentral (or the way to it) is down. The whole runner pauses
    /// for the outage and sends it again; no attempt is charged.
    Unreachable,
    /// Throttled (429/503): every worker waits (for `Retry-After` when given); not charged.
    Pause(Option<Duration>),
    /// It may have arrived: find out before sending again.
    Reconcile,
    /// A definite rejection.
    Fail,
    /// The key is wrong or lacks permission: stop everything.
    StopCredentials,
    /// The server's certificate is not trusted: stop everything. The request never left (the
    /// TLS handshake failed before it), and waiting will not make the certificate trusted.
    StopUntrusted,
}

/// What an error says about CertCentral as a whole, apart from the order it concerned: how the
/// runner tells an outage from one order's trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// CertCentral answered (a 4xx, a 429/503 throttle, an unreadable 2xx): it is there.
    Answered,
    /// A 5xx, or no answer after the request left: this order's trouble, or everyone's.
    Failed,
    /// The request never left: the connection was refused or failed, the name did not
    /// resolve, or the TLS handshake failed.
    Unreachable,
}

/// A request that did not end in a 2xx answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// CertCentral answered with an error status.
    #[error("HTTP {status}{}", describe(errors))]
    Status {
        status: u16,
        errors: Vec<ServiceError>,
        retry_after: Option<Duration>,
    },
    /// The connection could not be made (refused, reset or timed out while connecting, DNS,
    /// proxy tunnel, TLS handshake); the request never left.
    #[error("cannot connect to CertCentral")]
    NotSent(#[source] reqwest::Error),
    /// The server's certificate was refused during the TLS handshake; the request never left.
    #[error("{0}")]
    Untrusted(Box<UntrustedServer>),
    /// The request may have been received, but no answer came.
    #[error("{}", if *timed_out { "no answer before the timeout" } else { "connection lost before the answer" })]
    NoAnswer {
        timed_out: bool,
        #[source]
        source: reqwest::Error,
    },
    /// A 2xx answer to a GET that could not be read.
    #[error("unreadable answer from CertCentral")]
    Decode(#[source] serde_json::Error),
    /// The client itself could not be built.
    #[error("cannot set up the HTTP client")]
    Setup(#[source] reqwest::Error),
}

fn describe(errors: &[ServiceError]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.code, e.message))
        .collect();
    format!(" ({})", parts.join("; "))
}

impl ApiError {
    /// How the runner treats this error for a reissue POST.
    pub fn disposition(&self) -> Disposition {
        match self {
            ApiError::Status {
                status,
                retry_after,
                ..
            } => match *status {
                401 | 403 => Disposition::StopCredentials,
                429 | 503 => Disposition::Pause(*retry_after),
                // The server may have committed the reissue before failing.
                500..=599 => Disposition::Reconcile,
                _ => Disposition::Fail,
            },
            ApiError::NotSent(_) => Disposition::Unreachable,
            ApiError::Untrusted(_) => Disposition::StopUntrusted,
            ApiError::NoAnswer { .. } | ApiError::Decode(_) => Disposition::Reconcile,
            ApiError::Setup(_) => Disposition::Fail,
        }
    }

    /// What this error says about CertCentral as a whole (for any request, GET or POST).
    pub fn reach(&self) -> Reach {
        match self {
            ApiError::Status {
                status,
                retry_after,
                ..
            } => match *status {
                // A 503 that names no time to come back is as likely a gateway in front of a
                // CertCentral that is down as a throttle: it must not hide an outage.
                503 if retry_after.is_none() => Reach::Failed,
                429 | 503 => Reach::Answered,
                500..=599 => Reach::Failed,
                _ => Reach::Answered,
            },
            // The handshake failed, so nothing reached CertCentral; but it is not an outage
            // (the disposition stops everything), and the runner keeps it from its breaker.
            ApiError::NotSent(_) | ApiError::Untrusted(_) => Reach::Unreachable,
            ApiError::NoAnswer { .. } => Reach::Failed,
            ApiError::Decode(_) | ApiError::Setup(_) => Reach::Answered,
        }
    }

    /// The error in a few words, for a log line: the status, or the innermost cause of a
    /// transport failure ("Connection refused (os error 111)").
    pub fn brief(&self) -> String {
        match self {
            ApiError::Status { status, .. } => format!("HTTP {status}"),
            ApiError::NotSent(source) | ApiError::NoAnswer { source, .. } => {
                let mut cause: &dyn std::error::Error = source;
                while let Some(inner) = cause.source() {
                    cause = inner;
                }
                if std::ptr::addr_eq(cause, source as &dyn std::error::Error) {
                    self.to_string()
                } else {
                    format!("{self}: {cause}")
                }
            }
            other => other.to_string(),
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error codes, joined with `;` as the report shows them.
    pub fn codes(&self) -> Option<String> {
        match self {
            ApiError::Status { errors, .. } if !errors.is_empty() => Some(
                errors
                    .iter()
                    .map(|e| e.code.as_str())
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
            _ => None,
        }
    }

    /// The error messages joined with `; `, or a description of the transport failure.
    pub fn messages(&self) -> String {
        match self {
            ApiError::Status { errors, .. } if !errors.is_empty() => errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            other => error_chain(other),
        }
    }
}

/// An error and its causes on one line. reqwest's errors name the URL, never headers, so the
/// key cannot appear here.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A reissue CertCentral accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reissued {
    pub status: u16,
    pub request_id: Option<u64>,
    pub certificate_id: Option<u64>,
    pub dcv_random_value: Option<String>,
}

/// How the client reaches CertCentral: whom it trusts, and whether proxies apply.
#[derive(Debug, Clone)]
pub struct Network {
    /// The CA certificates server certificates are checked against.
    pub trust: Trust,
    /// Connect directly, ignoring `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`: for the built-in
    /// simulator on loopback, which no proxy should see.
    pub direct: bool,
}

/// A client for one account.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
}

impl Client {
    pub fn new(
        base_url: &str,
        key: &ApiKey,
        timeout: Duration,
        connections: usize,
        network: &Network,
    ) -> Result<Self, ApiError> {
        let mut key_header = HeaderValue::from_str(key.expose()).map_err(|_| ApiError::Status {
            status: 0,
            errors: vec![ServiceError {
                code: "invalid_api_key".into(),
                message: "the API key contains characters not allowed in a header".into(),
            }],
            retry_after: None,
        })?;
        // Keeps the value out of Debug output and out of HTTP/2 header compression tables.
        key_header.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("X-DC-DEVKEY", key_header);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("reissuer/", env!("CARGO_PKG_VERSION"))),
        );
        // Proxies come from HTTPS_PROXY/HTTP_PROXY/ALL_PROXY and NO_PROXY (reqwest's default).
        let mut builder = reqwest::Client::builder();
        if network.direct {
            builder = builder.no_proxy();
        }
        let http = builder
            .use_preconfigured_tls(network.trust.client_config())
            .default_headers(headers)
            .timeout(timeout)
            // Shorter than the whole request's timeout, so that a connection that cannot be
            // made is reported as such (nothing sent) rather than as a request timeout.
            .connect_timeout((timeout / 2).min(Duration::from_secs(10)))
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ApiError::Setup)?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST /order/certificate/{order_id}/reissue` with a body already serialized.
    pub async fn reissue(&self, order_id: i64, body: String) -> Result<Reissued, ApiError> {
        let url = format!("{}/order/certificate/{order_id}/reissue", self.base_url);
        let (status, bytes) = self.send(Method::POST, &url, Some(body)).await?;
        // A 2xx means accepted, even if its body cannot be read: never send it again.
        let parsed: wire::ReissueResponse = serde_json::from_slice(&bytes).unwrap_or_default();
        Ok(Reissued {
            status,
            request_id: parsed.requests.iter().find_map(|r| r.id),
            certificate_id: parsed.certificate_id,
            dcv_random_value: parsed.dcv_random_value,
        })
    }

    /// `GET /order/certificate/{order_id}`.
    pub async fn order_info(&self, order_id: i64) -> Result<OrderInfo, ApiError> {
        let url = format!("{}/order/certificate/{order_id}", self.base_url);
        self.get_json(&url).await
    }

    /// `GET /order/certificate/{order_id}/reissue`.
    pub async fn reissue_list(&self, order_id: i64) -> Result<Vec<ReissueEntry>, ApiError> {
        let url = format!("{}/order/certificate/{order_id}/reissue", self.base_url);
        let list: wire::ReissueList = self.get_json(&url).await?;
        Ok(list.certificates)
    }

    /// `GET /order/certificate/status-changes?minutes=N`: orders whose status changed lately.
    pub async fn status_changes(&self, minutes: u64) -> Result<Vec<StatusChange>, ApiError> {
        let url = format!(
            "{}/order/certificate/status-changes?minutes={minutes}",
            self.base_url
        );
        let list: wire::StatusChanges = self.get_json(&url).await?;
        Ok(list.orders)
    }

    /// `GET /user/me`: who the key belongs to (account, user, roles).
    pub async fn user_me(&self) -> Result<UserMe, ApiError> {
        let url = format!("{}/user/me", self.base_url);
        self.get_json(&url).await
    }

    /// `GET /account`: the key's account (its id and CertCentral type).
    pub async fn account(&self) -> Result<AccountInfo, ApiError> {
        let url = format!("{}/account", self.base_url);
        self.get_json(&url).await
    }

    /// `GET /order/certificate?…`: one page of the account's orders; `query` is the list of
    /// parameters (`filters[status]`, `offset`, `limit`, …) as name and value, encoded here.
    pub async fn list_orders(&self, query: &[(String, String)]) -> Result<OrderPage, ApiError> {
        let mut url = format!("{}/order/certificate", self.base_url);
        if !query.is_empty() {
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
            url.push('?');
            url.push_str(&encoded);
        }
        self.get_json(&url).await
    }

    /// `GET /certificate/{id}/download/format/pem_all`: leaf, intermediates and root as PEM.
    pub async fn download_pem(&self, certificate_id: u64) -> Result<String, ApiError> {
        let url = format!(
            "{}/certificate/{certificate_id}/download/format/pem_all",
            self.base_url
        );
        let (_, bytes) = self.send(Method::GET, &url, None).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `PUT /order/certificate/{order_id}/check-dcv`: asks CertCentral to check every domain.
    pub async fn check_dcv(&self, order_id: i64) -> Result<DcvCheck, ApiError> {
        let url = format!("{}/order/certificate/{order_id}/check-dcv", self.base_url);
        let (_, bytes) = self.send(Method::PUT, &url, None).await?;
        // A 200 whose body cannot be read still says the check ran; its details are lost.
        Ok(serde_json::from_slice(&bytes).unwrap_or_default())
    }

    /// `PUT /order/certificate/{order_id}/dcv-random-value`: the current token, or a new one
    /// when it has run out.
    pub async fn dcv_random_value(&self, order_id: i64) -> Result<DcvToken, ApiError> {
        let url = format!(
            "{}/order/certificate/{order_id}/dcv-random-value",
            self.base_url
        );
        let (_, bytes) = self.send(Method::PUT, &url, None).await?;
        serde_json::from_slice(&bytes).map_err(ApiError::Decode)
    }

    /// `GET /request?filters[status]=pending`, one page.
    pub async fn pending_requests(&self, offset: u64, limit: u64) -> Result<RequestPage, ApiError> {
        let url = format!(
            "{}/request?filters%5Bstatus%5D=pending&offset={offset}&limit={limit}",
            self.base_url
        );
        self.get_json(&url).await
    }

    /// `GET /request/{request_id}`.
    pub async fn request_info(&self, request_id: i64) -> Result<RequestInfo, ApiError> {
        let url = format!("{}/request/{request_id}", self.base_url);
        self.get_json(&url).await
    }

    /// `PUT /request/{request_id}/status` with `approved` and the comment.
    pub async fn approve_request(
        &self,
        request_id: i64,
        comment: Option<&str>,
    ) -> Result<(), ApiError> {
        let url = format!("{}/request/{request_id}/status", self.base_url);
        let mut body = serde_json::json!({"status": "approved"});
        if let Some(comment) = comment {
            body["processor_comment"] = comment.into();
        }
        self.send(Method::PUT, &url, Some(body.to_string())).await?;
        Ok(())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, ApiError> {
        let (_, bytes) = self.send(Method::GET, url, None).await?;
        serde_json::from_slice(&bytes).map_err(ApiError::Decode)
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<String>,
    ) -> Result<(u16, bytes::Bytes), ApiError> {
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            Ok((status.as_u16(), bytes))
        } else {
            Err(ApiError::Status {
                status: status.as_u16(),
                errors: wire::parse_errors(&bytes),
                retry_after: retry_after.filter(|_| {
                    status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::SERVICE_UNAVAILABLE
                }),
            })
        }
    }
}

/// Sorts a transport failure by whether the request can have reached CertCentral.
///
/// Only reqwest's `is_connect()` proves that nothing left: it marks errors of the connector
/// (hyper-util's `Connect` kind), which runs name resolution, the TCP connect, a proxy's CONNECT
/// tunnel and the TLS handshake, all before a byte of the request is written. (A request that
/// hyper found unsent on a reused connection is retried by hyper-util on a new one, so a failure
/// that surfaces here comes from that new connection's connector.) Every other failure — a reset,
/// a close or a timeout once the connection stood — may have come after the request was
/// written, so it is `NoAnswer` and the runner reconciles before sending again.
///
/// A server certificate that is not trusted also fails in the connector, but it is no outage to
/// wait out: it must be told apart before the `is_connect()` test, as its own error, so that it
/// never reaches the runner as `NotSent`.
fn transport_error(err: reqwest::Error) -> ApiError {
    // Checked first: a refused certificate is also a connect error, but no retry can fix it.
    if let Some(untrusted) = tls::untrusted_server(&err) {
        return ApiError::Untrusted(Box::new(untrusted));
    }
    if err.is_connect() {
        ApiError::NotSent(err)
    } else {
        ApiError::NoAnswer {
            timed_out: err.is_timeout(),
            source: err.without_url(),
        }
    }
}

/// `Retry-After` as seconds or an HTTP date, capped.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> ApiError {
        ApiError::Status {
            status,
            errors: Vec::new(),
            retry_after: Some(Duration::from_secs(3)),
        }
    }

    #[test]
    fn every_status_has_one_disposition() {
        use Disposition::*;
        let table: &[(u16, Disposition)] = &[
            (400, Fail),
            (401, StopCredentials),
            (403, StopCredentials),
            (404, Fail),
            (409, Fail),
            (422, Fail),
            (429, Pause(Some(Duration::from_secs(3)))),
            (500, Reconcile),
            (502, Reconcile),
            (503, Pause(Some(Duration::from_secs(3)))),
            (504, Reconcile),
        ];
        for (code, expected) in table {
            assert_eq!(status(*code).disposition(), *expected, "HTTP {code}");
        }
    }

    #[test]
    fn only_5xx_failures_other_than_503_say_something_may_be_wrong_with_all_of_certcentral() {
        for code in [400, 401, 403, 404, 409, 422, 429, 503] {
            assert_eq!(status(code).reach(), Reach::Answered, "HTTP {code}");
        }
        for code in [500, 502, 504] {
            assert_eq!(status(code).reach(), Reach::Failed, "HTTP {code}");
        }
    }

    fn client_for(base_url: &str) -> Client {
        let key = ApiKey::new("k").expect("a key");
        let network = Network {
            trust: Trust::load(None).expect("the system store loads"),
            direct: true,
        };
        Client::new(base_url, &key, Duration::from_secs(5), 1, &network).expect("a client")
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent_and_means_unreachable() {
        let reserved = crate::simulator::ReservedPort::loopback().expect("a port");
        let err = client_for(&reserved.base_url())
            .reissue(1, "{}".into())
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, ApiError::NotSent(_)), "{err:?}");
        assert_eq!(err.disposition(), Disposition::Unreachable);
        assert_eq!(err.reach(), Reach::Unreachable);
        assert!(err.brief().contains("refused"), "{}", err.brief());
    }

    #[tokio::test]
    async fn a_failed_tls_handshake_is_not_sent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let port = listener.local_addr().expect("address").port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accepts");
            // Not a TLS server: answers the ClientHello with plain text.
            let _ =
                tokio::io::AsyncWriteExt::write_all(&mut stream, b"HTTP/1.1 400 Bad\r\n\r\n").await;
        });
        let err = client_for(&format!("https://127.0.0.1:{port}/services/v2"))
            .reissue(1, "{}".into())
            .await
            .expect_err("no TLS there");
        assert!(matches!(err, ApiError::NotSent(_)), "{err:?}");
        assert_eq!(err.reach(), Reach::Unreachable);
        server.abort();
    }

    #[tokio::test]
    async fn a_connection_closed_after_the_request_was_written_may_have_arrived() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let port = listener.local_addr().expect("address").port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accepts");
            let mut request = vec![0u8; 4096];
            // Read the request, then hang up without an answer.
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut request).await;
        });
        let err = client_for(&format!("http://127.0.0.1:{port}/services/v2"))
            .reissue(1, "{}".into())
            .await
            .expect_err("no answer");
        assert!(
            matches!(
                err,
                ApiError::NoAnswer {
                    timed_out: false,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.disposition(), Disposition::Reconcile);
        assert_eq!(err.reach(), Reach::Failed);
        server.await.expect("server task");
    }

    #[test]
    fn an_untrusted_server_certificate_stops_everything() {
        let err = ApiError::Untrusted(Box::new(UntrustedServer {
            host: "www.digicert.com".into(),
            refusal: Refusal::UnknownIssuer,
            reason: "invalid peer certificate: UnknownIssuer".into(),
            subject: None,
            issuer: Some("CN=Example Corp Inspection CA".into()),
            chain_issuer: None,
            not_after: None,
            trusted: Vec::new(),
        }));
        assert_eq!(err.disposition(), Disposition::StopUntrusted);
        assert!(err.messages().contains("CN=Example Corp Inspection CA"));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("999999"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn error_text_lists_every_code_and_message() {
        let err = ApiError::Status {
            status: 400,
            errors: vec![
                ServiceError {
                    code: "required_param:certificate.signature_hash".into(),
                    message: "signature_hash is required".into(),
                },
                ServiceError {
                    code: "csr_invalid_cannot_parse".into(),
                    message: "bad csr".into(),
                },
            ],
            retry_after: None,
        };
        assert_eq!(
            err.codes().as_deref(),
            Some("required_param:certificate.signature_hash;csr_invalid_cannot_parse")
        );
        assert_eq!(err.messages(), "signature_hash is required; bad csr");
        assert!(err.to_string().starts_with("HTTP 400 (required_param"));
    }

    proptest::proptest! {
        #[test]
        fn any_retry_after_value_is_read_or_ignored_never_above_the_cap(text in "[ -~]{0,40}") {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.insert(RETRY_AFTER, value);
            }
            if let Some(wait) = retry_after(&headers) {
                proptest::prop_assert!(wait <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn any_error_body_is_read_without_panicking(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = wire::parse_errors(&body);
        }
    }
}
