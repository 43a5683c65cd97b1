//! The table of every field a manifest may set: its path in the reissue request body, its type,
//! and the constraints the reissue page states for it alone. Adding a request parameter is one
//! line in [`FIELDS`]; rules that involve several fields live in `rules.rs`.

/// What JSON type a field has in the request body, and so how a CSV cell is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Int,
    Bool,
    /// A JSON array of strings; `;`-separated in CSV.
    StrList,
}

impl Kind {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Int => "an integer",
            Kind::Bool => "a boolean (true or false)",
            Kind::StrList => "a list of strings",
        }
    }
}

/// A constraint on one field's value, named after the reissue page's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// No constraint beyond the type (and no control characters for strings).
    Any,
    /// One of the listed values, matched case-insensitively and sent as listed.
    OneOf(&'static [&'static str]),
    /// An integer in this inclusive range.
    Range(i64, i64),
    /// At most this many characters (Unicode scalar values); for lists, per item.
    MaxChars(usize),
    /// Each item looks like a DNS name, optionally with a leading `*.`.
    DnsName,
    /// Each item looks like an email address.
    Email,
    /// `dd MMM YYYY`, within 397 days of today.
    ExpirationDate,
    /// A lowercase word such as a glossary identifier.
    Identifier,
    /// A PEM CSR or public key; parsed and verified in `csr.rs`.
    Csr,
}

/// Where a field's value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Into the request body at the field's path.
    Body,
    /// The order id: in the URL, never in the body.
    OrderId,
    /// A file whose content becomes `certificate.csr`.
    CsrFile,
}

/// One manifest field.
#[derive(Debug)]
pub(crate) struct Field {
    /// The full parameter path in the request body, e.g. `certificate.server_platform.id`.
    pub(crate) path: &'static str,
    pub(crate) kind: Kind,
    pub(crate) check: Check,
    /// Most items a list may hold.
    pub(crate) max_items: Option<usize>,
    pub(crate) target: Target,
    /// The reissue page's words for the constraint, quoted in error messages.
    pub(crate) rule: &'static str,
}

const fn body(path: &'static str, kind: Kind, check: Check) -> Field {
    Field {
        path,
        kind,
        check,
        max_items: None,
        target: Target::Body,
        rule: "",
    }
}

impl Field {
    const fn rule(self, rule: &'static str) -> Self {
        Self { rule, ..self }
    }

    /// The name used in error messages: the full path, as CertCentral's own errors name it.
    pub(crate) fn name(&self) -> &'static str {
        self.path
    }
}

pub(crate) const SIGNATURE_HASHES: &[&str] = &["sha256", "sha384", "sha512"];
pub(crate) const DCV_METHODS: &[&str] =
    &["email", "dns-txt-token", "dns-cname-token", "http-token"];
pub(crate) const DCV_SCOPES: &[&str] = &["base_domain", "fqdn"];
pub(crate) const CS_PROVISIONING_METHODS: &[&str] = &["ship_token", "client_app", "email"];
pub(crate) const SHIP_METHODS: &[&str] = &["STANDARD", "EXPEDITED"];
/// "Order Secure Email certificate – Common name value": the sources a secure email
/// certificate's common name can come from.
pub(crate) const COMMON_NAME_INDICATORS: &[&str] = &[
    "email_address",
    "given_name_surname",
    "pseudonym",
    "organization_name",
];

/// Every field, in the order of the reissue page's parameter table, then the two manifest-only
/// fields.
pub(crate) static FIELDS: &[Field] = &[
    body("certificate.csr", Kind::Str, Check::Csr),
    body("certificate.common_name", Kind::Str, Check::Any),
    body("certificate.dns_names", Kind::StrList, Check::DnsName),
    body("certificate.emails", Kind::StrList, Check::Email),
    Field {
        max_items: Some(1),
        ..body("certificate.user_principle_name", Kind::StrList, Check::MaxChars(255))
            .rule("Max length: 1 Max characters per item: 255")
    },
    body(
        "certificate.common_name_indicator",
        Kind::Str,
        Check::OneOf(COMMON_NAME_INDICATORS),
    )
    .rule("Order Secure Email certificate – Common name value"),
    body("certificate.individual.first_name", Kind::Str, Check::Any),
    body("certificate.individual.last_name", Kind::Str, Check::Any),
    body("certificate.individual.pseudonym", Kind::Str, Check::Any),
    body("certificate.usage_designation.primary_usage", Kind::Str, Check::Identifier),
    body("certificate.usage_designation.additional_usages", Kind::StrList, Check::Identifier),
    body("certificate.is_rsassa_pss", Kind::Bool, Check::Any),
    // -1 is "OTHER" in CertCentral's platform table; real ids are positive.
    body("certificate.server_platform.id", Kind::Int, Check::Range(-1, i32::MAX as i64))
        .rule("Server platform ID; -1 is OTHER"),
    body("certificate.cert_validity.years", Kind::Int, Check::Range(1, 1))
        .rule("Allowed value: 1"),
    body("certificate.cert_validity.days", Kind::Int, Check::Range(1, 397)).rule("Max: 397"),
    body("certificate.cert_validity.custom_expiration_date", Kind::Str, Check::ExpirationDate)
        .rule("Format: dd MMM YYYY; Range: Must be within 397 days of the date you request the certificate"),
    body("certificate.signature_hash", Kind::Str, Check::OneOf(SIGNATURE_HASHES))
        .rule("Glossary – signature hashes"),
    body("certificate.profile_option", Kind::Str, Check::Identifier)
        .rule("Allowed values: See Glossary – Certificate profile options"),
    body("certificate.ca_cert_id", Kind::Str, Check::Any),
    body("dcv_method", Kind::Str, Check::OneOf(DCV_METHODS)).rule("Glossary – DCV methods"),
    body("comments", Kind::Str, Check::Any),
    body("skip_approval", Kind::Bool, Check::Any),
    body("certificate_dcv_scope", Kind::Str, Check::OneOf(DCV_SCOPES))
        .rule("Allowed values: base_domain, fqdn"),
    body("use_auth_key", Kind::Bool, Check::Any),
    body("cs_provisioning_method", Kind::Str, Check::OneOf(CS_PROVISIONING_METHODS))
        .rule("Allowed values: ship_token, email, client_app"),
    body("ship_info.name", Kind::Str, Check::Any),
    body("ship_info.addr1", Kind::Str, Check::Any),
    body("ship_info.addr2", Kind::Str, Check::Any),
    body("ship_info.city", Kind::Str, Check::Any),
    body("ship_info.state", Kind::Str, Check::Any),
    body("ship_info.zip", Kind::Str, Check::Any),
    body("ship_info.country", Kind::Str, Check::Any),
    body("ship_info.method", Kind::Str, Check::OneOf(SHIP_METHODS))
        .rule("Allowed values: STANDARD, EXPEDITED"),
    body("subject.serial_number", Kind::Str, Check::MaxChars(100)).rule("Character limit: 100"),
    body("subject.pseudonym", Kind::Str, Check::MaxChars(128)).rule("Character limit: 128"),
    body("subject.job_title", Kind::Str, Check::MaxChars(128)).rule("Character limit: 128"),
    body("subject.include_pseudonym", Kind::Bool, Check::Any),
    body("subject.include_email", Kind::Bool, Check::Any),
    body("subject.include_given_name_surname", Kind::Bool, Check::Any),
    body("store_reissue_as_duplicate", Kind::Bool, Check::Any),
    Field {
        target: Target::OrderId,
        ..body("order_id", Kind::Int, Check::Range(1, i64::MAX))
    },
    Field {
        target: Target::CsrFile,
        ..body("csr_file", Kind::Str, Check::Any)
    },
];

/// Index into [`FIELDS`]: small, `Copy`, and cheap to compare.
pub(crate) type FieldId = usize;

const CERTIFICATE_PREFIX: &str = "certificate.";

/// Finds a field by the name a manifest uses: the full path, or a `certificate.*` path without
/// its prefix.
pub(crate) fn lookup(name: &str) -> Option<FieldId> {
    let exact = FIELDS.iter().position(|f| f.path == name);
    exact.or_else(|| {
        FIELDS.iter().position(|f| {
            f.target == Target::Body && f.path.strip_prefix(CERTIFICATE_PREFIX) == Some(name)
        })
    })
}

/// Whether `prefix` names an object that holds fields (`certificate`, `ship_info`,
/// `server_platform` …), so a TOML table of that name is walked rather than rejected.
pub(crate) fn is_object(prefix: &str) -> bool {
    let full = format!("{prefix}.");
    let short = format!("{CERTIFICATE_PREFIX}{prefix}.");
    FIELDS.iter().any(|f| {
        f.target == Target::Body && (f.path.starts_with(&full) || f.path.starts_with(&short))
    })
}

/// The field with this exact path; for the rules, which name fields by path.
pub(crate) fn id(path: &str) -> FieldId {
    FIELDS
        .iter()
        .position(|f| f.path == path)
        .expect("rules name only paths from the field table (a unit test checks each)")
}

/// The closest known name to an unknown one, for "did you mean" hints.
pub(crate) fn suggest(name: &str) -> Option<&'static str> {
    FIELDS
        .iter()
        .flat_map(|f| {
            let short = f.path.strip_prefix(CERTIFICATE_PREFIX);
            std::iter::once(f.path).chain(short)
        })
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(d, candidate)| *d <= 2.max(candidate.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// The message for a name that is not in the field table, with a suggestion when one is close.
pub(crate) fn unknown_field(name: &str) -> String {
    match suggest(name) {
        Some(close) => format!("unknown field (did you mean {close}?)"),
        None => "unknown field (see the reissue page's request parameters)".to_owned(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_certificate_field_is_found_with_and_without_prefix() {
        for (i, field) in FIELDS.iter().enumerate() {
            assert_eq!(lookup(field.path), Some(i), "{}", field.path);
            if let Some(short) = field.path.strip_prefix(CERTIFICATE_PREFIX) {
                assert_eq!(lookup(short), Some(i), "{short}");
            }
        }
    }

    #[test]
    fn short_names_never_collide() {
        let mut names: Vec<&str> = FIELDS
            .iter()
            .map(|f| f.path.strip_prefix(CERTIFICATE_PREFIX).unwrap_or(f.path))
            .collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn unknown_names_are_not_found() {
        for name in [
            "certificate",
            "dns_name",
            "certificate.dcv_method",
            "server_platform",
            "",
        ] {
            assert_eq!(lookup(name), None, "{name}");
        }
        assert_eq!(lookup("certificate.order_id"), None);
    }

    #[test]
    fn objects_are_recognised_with_and_without_prefix() {
        for prefix in [
            "certificate",
            "server_platform",
            "certificate.server_platform",
            "ship_info",
            "subject",
            "individual",
            "certificate.cert_validity",
        ] {
            assert!(is_object(prefix), "{prefix}");
        }
        for prefix in [
            "order_id",
            "certificate.ship_info",
            "signature_hash",
            "nothing",
        ] {
            assert!(!is_object(prefix), "{prefix}");
        }
    }

    #[test]
    fn misspelt_names_get_a_suggestion() {
        assert_eq!(suggest("dns_name"), Some("dns_names"));
        assert_eq!(suggest("signature_hsah"), Some("signature_hash"));
        assert_eq!(suggest("zzzzzzzzzzzzzzzz"), None);
    }
}
