//! One order from its raw values to a request body: each field converted and checked alone
//! (`value.rs`), defaults filled in, then the rules the reissue page states across fields, the
//! CSR read and verified, and the body assembled. Every problem is collected, none stops the rest.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::csr::{CsrCache, CsrInfo, KeyStrength};
use super::defaults::Layers;
use super::error::FieldError;
use super::fields::{self, FIELDS, Target};
use super::options::Purpose;
use super::raw::{RawOrder, Slot};
use super::row::{InvalidRow, Order, Row};
use super::value::{self, Typed};

/// Everything the per-row checks share; read-only, so rows are checked in parallel.
pub(crate) struct Context {
    pub(crate) file: String,
    /// The manifest's directory: `csr_file` paths are relative to it.
    pub(crate) dir: PathBuf,
    pub(crate) allow_cn_mismatch: bool,
    pub(crate) fill_from_order: bool,
    pub(crate) purpose: Purpose,
    pub(crate) today: time::Date,
    pub(crate) defaults: Layers,
    pub(crate) csrs: CsrCache,
}

impl Context {
    pub(crate) fn error(&self, line: u64, field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            file: self.file.clone(),
            line,
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// An order's values by field, each with the line it was written on.
struct Values {
    slots: Vec<Slot>,
    /// The order's own line, for errors about what is missing.
    line: u64,
}

impl Values {
    fn get(&self, path: &str) -> Option<&Typed> {
        self.slots[fields::id(path)].as_ref().map(|(v, _)| v)
    }

    fn has(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    fn str(&self, path: &str) -> Option<&str> {
        self.get(path).and_then(Typed::as_str)
    }

    /// The line a field was written on, or the order's line when it came from `--set`.
    fn line(&self, path: &str) -> u64 {
        match &self.slots[fields::id(path)] {
            Some((_, line)) if *line > 0 => *line,
            _ => self.line,
        }
    }

    fn any_under(&self, prefix: &str) -> Option<&'static str> {
        FIELDS
            .iter()
            .zip(&self.slots)
            .find(|(f, slot)| slot.is_some() && f.path.starts_with(prefix))
            .map(|(f, _)| f.path)
    }
}

/// Checks one order completely.
pub(crate) fn check_order(raw: RawOrder, ctx: &Context) -> Row {
    if raw.unreadable {
        return Row::Invalid(InvalidRow {
            order_id: None,
            line: raw.line,
            errors: raw.errors,
        });
    }
    let mut errors = raw.errors;
    let mut values = Values {
        slots: vec![None; FIELDS.len()],
        line: raw.line,
    };
    for (id, raw_value, line) in raw.values {
        let field = &FIELDS[id];
        if let Some((_, first)) = &values.slots[id] {
            errors.push(ctx.error(
                line,
                field.name(),
                format!("set twice in one order (also on line {first})"),
            ));
            continue;
        }
        match value::convert(field, raw_value, ctx.today) {
            Ok(typed) => values.slots[id] = Some((typed, line)),
            Err(message) => {
                errors.push(ctx.error(line, field.name(), message));
                // Counts as set, so a bad value is not also reported as missing.
                values.slots[id] = Some((Typed::Bool(false), line));
            }
        }
    }
    ctx.defaults.fill(&mut values.slots);

    let order_id = match values.get("order_id") {
        Some(Typed::Int(id)) => u64::try_from(*id).ok(),
        _ => None,
    };
    if !values.has("order_id") {
        errors.push(ctx.error(raw.line, "order_id", "required"));
    }
    let csr = match ctx.purpose {
        Purpose::Reissue => {
            check_cross_field(&values, ctx, &mut errors);
            let csr = resolve_csr(&values, ctx, &mut errors);
            if let Some(csr) = &csr {
                check_csr_against_fields(&values, csr, ctx, &mut errors);
            }
            csr
        }
        // The reissue's own rules wait for the manifest keygen writes; the CSR is replaced.
        Purpose::NewKey => None,
    };

    match (order_id, errors.is_empty()) {
        (Some(order_id), true) => Row::Valid(Order {
            order_id,
            line: raw.line,
            body: build_body(&values, csr.as_deref()),
        }),
        _ => {
            errors.sort_by_key(|e| e.line);
            Row::Invalid(InvalidRow {
                order_id,
                line: raw.line,
                errors,
            })
        }
    }
}

fn check_cross_field(values: &Values, ctx: &Context, errors: &mut Vec<FieldError>) {
    let mut missing = |path: &str, why: &str| {
        errors.push(ctx.error(values.line, path, format!("required {why}")));
    };
    // "signature_hash | required" in the parameter table.
    if !values.has("certificate.signature_hash") && !ctx.fill_from_order {
        missing(
            "certificate.signature_hash",
            "(the reissue page: certificate.signature_hash is required; e.g. --set signature_hash=sha256)",
        );
    }
    // ship_info's name, addr1, city, state, zip, country and method are "required" within it.
    if let Some(first) = values.any_under("ship_info.") {
        for part in ["name", "addr1", "city", "state", "zip", "country", "method"] {
            let path = format!("ship_info.{part}");
            if !values.has(&path) {
                missing(&path, &format!("when ship_info is given ({first} is set)"));
            }
        }
    }
    // individual: "Required ... if common_name_indicator is given_name_surname / pseudonym".
    match values.str("certificate.common_name_indicator") {
        Some("given_name_surname") => {
            for path in [
                "certificate.individual.first_name",
                "certificate.individual.last_name",
            ] {
                if !values.has(path) {
                    missing(path, "when common_name_indicator is given_name_surname");
                }
            }
        }
        Some("pseudonym") if !values.has("certificate.individual.pseudonym") => {
            missing(
                "certificate.individual.pseudonym",
                "when common_name_indicator is pseudonym",
            );
        }
        // "if the common name ... will be an email address, DigiCert uses the first email".
        Some("email_address") if !values.has("certificate.emails") => {
            missing(
                "certificate.emails",
                "when common_name_indicator is email_address",
            );
        }
        _ => {}
    }
    if values.has("certificate.common_name_indicator") && values.has("certificate.common_name") {
        errors.push(ctx.error(
            values.line("certificate.common_name"),
            "certificate.common_name",
            "common_name_indicator chooses the common name; omit common_name",
        ));
    }
    check_subject(values, ctx, errors);
    check_code_signing(values, ctx, errors);
}

/// The subject.include_* switches copy values from elsewhere in the request, which must exist.
fn check_subject(values: &Values, ctx: &Context, errors: &mut Vec<FieldError>) {
    let mut needs = |switch: &str, paths: &[&str], what: &str| {
        if values.get(switch).is_some_and(Typed::is_true) {
            for path in paths {
                if !values.has(path) {
                    errors.push(ctx.error(
                        values.line(switch),
                        switch,
                        format!("is true but {path} is not set ({what})"),
                    ));
                }
            }
        }
    };
    needs(
        "subject.include_pseudonym",
        &["certificate.individual.pseudonym"],
        "it includes the pseudonym from the individual object",
    );
    needs(
        "subject.include_given_name_surname",
        &[
            "certificate.individual.first_name",
            "certificate.individual.last_name",
        ],
        "it includes the names from the individual object",
    );
    needs(
        "subject.include_email",
        &["certificate.emails"],
        "it includes the first address of the emails array",
    );
    // "If you are already submitting the pseudonym value in the certificate.individual object,
    // use subject.include_pseudonym instead."
    if values.has("subject.pseudonym") && values.has("certificate.individual.pseudonym") {
        errors.push(ctx.error(
            values.line("subject.pseudonym"),
            "subject.pseudonym",
            "certificate.individual.pseudonym is also set; use subject.include_pseudonym = true instead",
        ));
    }
}

/// cs_provisioning_method and ship_info exist only for Code Signing reissues, from which the
/// page says to omit common_name.
fn check_code_signing(values: &Values, ctx: &Context, errors: &mut Vec<FieldError>) {
    let method = values.str("cs_provisioning_method");
    let signal = match (method, values.any_under("ship_info.")) {
        (Some(_), _) => "cs_provisioning_method",
        (None, Some(_)) => "ship_info",
        (None, None) => return,
    };
    if values.has("certificate.common_name") {
        errors.push(ctx.error(
            values.line("certificate.common_name"),
            "certificate.common_name",
            format!("omit common_name from Code Signing reissues ({signal} is set)"),
        ));
    }
    if let (Some(method), Some(first)) = (method, values.any_under("ship_info."))
        && method != "ship_token"
    {
        errors.push(ctx.error(
            values.line(first),
            first,
            format!("ship_info is only used with cs_provisioning_method ship_token, not {method}"),
        ));
    }
    // "email: ... A CSR is required when using this provisioning method", and the HSM path
    // needs at least RSA 3072 or ECC P-256.
    if method == Some("email") && !values.has("certificate.csr") && !values.has("csr_file") {
        errors.push(ctx.error(
            values.line("cs_provisioning_method"),
            "cs_provisioning_method",
            "email needs a CSR (set csr or csr_file)",
        ));
    }
}

/// Reads (for `csr_file`) and parses the CSR; `None` when there is none or it is unusable.
fn resolve_csr(
    values: &Values,
    ctx: &Context,
    errors: &mut Vec<FieldError>,
) -> Option<Arc<CsrInfo>> {
    let inline = values.str("certificate.csr");
    let file = values.str("csr_file");
    let (text, field, line) = match (inline, file) {
        (Some(_), Some(_)) => {
            errors.push(ctx.error(
                values.line("csr_file"),
                "csr_file",
                format!(
                    "conflicts with certificate.csr (line {}); give one of them",
                    values.line("certificate.csr")
                ),
            ));
            return None;
        }
        (Some(text), None) => (
            text.to_owned(),
            "certificate.csr",
            values.line("certificate.csr"),
        ),
        (None, Some(name)) => {
            let path = ctx.dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => (text, "csr_file", values.line("csr_file")),
                Err(e) => {
                    errors.push(ctx.error(
                        values.line("csr_file"),
                        "csr_file",
                        format!("cannot read {}: {e}", path.display()),
                    ));
                    return None;
                }
            }
        }
        (None, None) => return None,
    };
    match ctx.csrs.parse(&text) {
        Ok(info) => Some(info),
        Err(e) => {
            let message = match field {
                "csr_file" => format!("{}: {e}", ctx.dir.join(file.unwrap_or_default()).display()),
                _ => e.to_string(),
            };
            errors.push(ctx.error(line, field, message));
            None
        }
    }
}

fn check_csr_against_fields(
    values: &Values,
    csr: &CsrInfo,
    ctx: &Context,
    errors: &mut Vec<FieldError>,
) {
    let csr_field = if values.has("csr_file") {
        "csr_file"
    } else {
        "certificate.csr"
    };
    if values.str("cs_provisioning_method") == Some("email") {
        let strong = match csr.key_strength() {
            KeyStrength::Rsa(bits) => bits >= 3072,
            KeyStrength::Ec(bits) => bits >= 256,
            KeyStrength::Other => false,
        };
        if csr.is_public_key {
            errors.push(ctx.error(
                values.line(csr_field),
                csr_field,
                "cs_provisioning_method email needs a CSR, not a bare public key",
            ));
        } else if !strong {
            errors.push(ctx.error(
                values.line(csr_field),
                csr_field,
                "cs_provisioning_method email needs a key of at least RSA 3072 or ECC P-256",
            ));
        }
    }
    if ctx.allow_cn_mismatch || csr.is_public_key {
        return;
    }
    let Some(common_name) = values.str("certificate.common_name") else {
        return;
    };
    let matches = csr
        .common_name
        .iter()
        .chain(&csr.dns_names)
        .any(|name| name.eq_ignore_ascii_case(common_name));
    if !matches {
        let mut names: Vec<&str> = Vec::new();
        for name in csr.common_name.iter().chain(&csr.dns_names) {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name);
            }
        }
        errors.push(ctx.error(
            values.line("certificate.common_name"),
            "certificate.common_name",
            format!(
                "{common_name:?} is neither the CSR's common name nor one of its DNS names ({}); \
                 pass --allow-cn-mismatch to send it anyway",
                if names.is_empty() {
                    "it has none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        ));
    }
}

/// The request body: every set field at its path, the CSR as one-line PEM.
fn build_body(values: &Values, csr: Option<&CsrInfo>) -> Value {
    let mut body = Map::new();
    for (field, slot) in FIELDS.iter().zip(&values.slots) {
        let Some((typed, _)) = slot else { continue };
        if field.target != Target::Body {
            continue;
        }
        let value = match (field.path, csr) {
            ("certificate.csr", Some(csr)) => Value::from(csr.one_line_pem.as_str()),
            _ => typed.to_json(),
        };
        insert(&mut body, field.path, value);
    }
    if let (Some(csr), None) = (csr, values.get("certificate.csr")) {
        insert(
            &mut body,
            "certificate.csr",
            Value::from(csr.one_line_pem.as_str()),
        );
    }
    Value::Object(body)
}

fn insert(object: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            object.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let child = object
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(child) = child {
                insert(child, rest, value);
            }
        }
    }
}
