//! Domain control and approvals in the simulated account: what stands between an accepted
//! reissue and its certificate.
//!
//! **DCV.** A reissue sent with a token method (`dns-txt-token`, `dns-cname-token`,
//! `http-token`) gets a random value and stays `reissue_pending` until every one of its names is
//! validated: the token must be published for the name — `POST /__simulator/dcv` (or
//! [`super::SimulatorHandle::publish_dcv_token`]) stands in for the customer's DNS or web
//! automation — and `PUT /order/certificate/{id}/check-dcv` must find it there. A name validated
//! once stays validated. A token runs out after [`super::Scenario::dcv_token_validity`] (30 days
//! unless set, like CertCentral's); `PUT …/dcv-random-value` answers the current token while it
//! is valid and a new one after.
//!
//! **Approvals.** A reissue of an order in [`super::Scenario::needs_approval_orders`], or one
//! sent without `skip_approval` when [`super::Scenario::approval_required`] is set, waits as a
//! `pending` request until `PUT /request/{id}/status` approves it; only an administrator's or a
//! manager's key may (others get 403 `access_denied|missing_permission`).
//!
//! Error codes: `invalid_dns_txt` and `file_random_value_not_found` are documented; the codes
//! for an expired token (`expired_random_value`), a check on an order without a token
//! (`invalid_dcv_method`) and a request that is not pending (`invalid_request_status`) are not,
//! so they are this simulator's guesses, and the client must not depend on them.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

/// How long a DCV token is valid when the scenario does not say.
pub(crate) const DEFAULT_TOKEN_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// A reissue's domain control by token.
#[derive(Clone, Debug)]
pub(crate) struct DcvGate {
    pub method: String,
    pub token: String,
    pub token_expires_us: u64,
    /// When the last name was validated; `None` while any name waits.
    pub validated_us: Option<u64>,
    /// Names (as [`name_key`]) validated so far.
    pub validated: BTreeSet<String>,
}

/// A reissue's approval.
#[derive(Clone, Debug, Default)]
pub(crate) struct ApprovalGate {
    /// Issuance waits for an approval.
    pub required: bool,
    /// The reissue was sent with `skip_approval`.
    pub skipped: bool,
    pub approved_us: Option<u64>,
}

impl ApprovalGate {
    /// Issuance waits for this approval.
    pub(crate) fn waiting(&self) -> bool {
        self.required && self.approved_us.is_none()
    }

    /// The request's status. A request that needs no approval and was sent without
    /// `skip_approval` reads `pending` until its certificate is issued (the simulator's older
    /// model, which tests rely on) and may be approved meanwhile.
    pub(crate) fn request_status(&self, issued: bool) -> &'static str {
        let approved = self.approved_us.is_some() || (!self.required && (self.skipped || issued));
        if approved { "approved" } else { "pending" }
    }
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckOutcome {
    /// Every name is validated (now or before): 200 with each name's status.
    Valid(Vec<String>),
    /// Some name has no published token: 400 with the method's "not found" code.
    NotFound { code: &'static str, message: String },
    /// The token ran out before every name was validated.
    Expired,
}

/// The name a token is published for: a wildcard's base domain, in lowercase.
pub(crate) fn name_key(name: &str) -> String {
    name.trim_start_matches("*.").to_ascii_lowercase()
}

impl DcvGate {
    /// Checks every name against the published tokens (`published(name_key)` holds the values
    /// published for it). Names found are validated for good; the gate opens when all are.
    pub(crate) fn check(
        &mut self,
        names: &[String],
        published: impl Fn(&str) -> bool,
        now_us: u64,
    ) -> CheckOutcome {
        if self.validated_us.is_some() {
            return CheckOutcome::Valid(names.to_vec());
        }
        if now_us >= self.token_expires_us {
            return CheckOutcome::Expired;
        }
        for name in names {
            let key = name_key(name);
            if published(&key) {
                self.validated.insert(key);
            }
        }
        if names.iter().all(|n| self.validated.contains(&name_key(n))) {
            self.validated_us = Some(now_us);
            return CheckOutcome::Valid(names.to_vec());
        }
        let (code, message) = match self.method.as_str() {
            "http-token" => (
                "file_random_value_not_found",
                "Could not find the random value file for one or more domains.",
            ),
            _ => (
                "invalid_dns_txt",
                "Could not find a valid TXT record for one or more domains.",
            ),
        };
        CheckOutcome::NotFound {
            code,
            message: message.to_owned(),
        }
    }

    /// The per-name list of a 200 answer.
    pub(crate) fn validations(&self, names: &[String]) -> Value {
        let list: Vec<Value> = names
            .iter()
            .map(|name| {
                let status = if self.validated.contains(&name_key(name)) {
                    "approved"
                } else {
                    "pending"
                };
                json!({"dns_name": name, "status": status})
            })
            .collect();
        Value::Array(list)
    }
}

/// The names of a certificate that DCV covers: the common name and the DNS names, each once.
pub(crate) fn names(common_name: &str, dns_names: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    std::iter::once(common_name)
        .chain(dns_names.iter().map(String::as_str))
        .filter(|name| !name.is_empty() && seen.insert(name_key(name)))
        .map(str::to_owned)
        .collect()
}

/// `filters[status]`, `offset` and `limit` of `GET /request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestQuery {
    pub status: Option<String>,
    pub offset: usize,
    pub limit: usize,
}

/// The page size when none is asked for, and the most a page holds.
pub(crate) const REQUEST_PAGE: usize = 1000;

impl RequestQuery {
    /// Reads the query string (percent-encoded brackets or not); unknown keys are ignored.
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, (String, String)> {
        let mut parsed = Self {
            status: None,
            offset: 0,
            limit: REQUEST_PAGE,
        };
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let number = |name: &str| {
                value.parse::<usize>().map_err(|_| {
                    (
                        format!("invalid_param:{name}"),
                        format!("{name} must be a whole number."),
                    )
                })
            };
            match key.as_ref() {
                "filters[status]" => parsed.status = Some(value.into_owned()),
                "offset" => parsed.offset = number("offset")?,
                "limit" => parsed.limit = number("limit")?.clamp(1, REQUEST_PAGE),
                _ => {}
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(method: &str) -> DcvGate {
        DcvGate {
            method: method.into(),
            token: "t".into(),
            token_expires_us: 1_000,
            validated_us: None,
            validated: BTreeSet::new(),
        }
    }

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_check_validates_published_names_and_opens_when_all_are() {
        let mut gate = gate("dns-txt-token");
        let all = list(&["a.example", "www.a.example"]);
        let first = gate.check(&all, |name| name == "a.example", 10);
        assert!(matches!(
            first,
            CheckOutcome::NotFound {
                code: "invalid_dns_txt",
                ..
            }
        ));
        assert_eq!(gate.validated_us, None);
        // The first name stays validated though its record is gone.
        let second = gate.check(&all, |name| name == "www.a.example", 20);
        assert_eq!(second, CheckOutcome::Valid(all.clone()));
        assert_eq!(gate.validated_us, Some(20));
        assert_eq!(
            gate.validations(&all),
            json!([{"dns_name": "a.example", "status": "approved"},
                   {"dns_name": "www.a.example", "status": "approved"}])
        );
    }

    #[test]
    fn an_expired_token_validates_nothing_and_http_tokens_have_their_own_code() {
        let mut dns = gate("dns-txt-token");
        assert_eq!(
            dns.check(&list(&["a"]), |_| true, 1_000),
            CheckOutcome::Expired
        );
        assert!(dns.validated.is_empty());
        let mut http = gate("http-token");
        assert!(matches!(
            http.check(&list(&["a"]), |_| false, 5),
            CheckOutcome::NotFound {
                code: "file_random_value_not_found",
                ..
            }
        ));
    }

    #[test]
    fn wildcards_are_validated_on_their_base_domain_and_names_are_listed_once() {
        assert_eq!(name_key("*.Shop.example"), "shop.example");
        assert_eq!(
            names(
                "*.shop.example",
                &list(&["*.shop.example", "shop.example", "x.example"])
            ),
            list(&["*.shop.example", "x.example"])
        );
    }

    #[test]
    fn request_queries_read_encoded_brackets_and_cap_the_page() {
        let query = RequestQuery::parse(Some("filters%5Bstatus%5D=pending&offset=5&limit=99999"))
            .expect("parses");
        assert_eq!(
            query,
            RequestQuery {
                status: Some("pending".into()),
                offset: 5,
                limit: REQUEST_PAGE
            }
        );
        assert!(RequestQuery::parse(Some("offset=x")).is_err());
        assert_eq!(RequestQuery::parse(None).map(|q| q.status), Ok(None));
    }
}
