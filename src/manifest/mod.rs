//! Manifest files (CSV, TOML) into validated orders: each row becomes the full reissue request
//! body, or the list of everything wrong with it as `FILE:LINE: field: what is wrong`.
//!
//! [`scan`] streams: a CSV is read a chunk at a time and each chunk is validated in parallel
//! (rayon) while the next is read, so memory stays flat however long the manifest is. Rows reach
//! the sink in file order. Whole-file problems (an unreadable file, a bad header, a TOML syntax
//! error, a bad `--set`) are a [`ManifestError`] instead.
//!
//! What cannot be checked here: rules that depend on the order's product (which CertCentral
//! knows and the manifest does not), such as whether `common_name`, `emails`, `csr`,
//! `usage_designation` or `common_name_indicator` are required, or which `server_platform.id`,
//! `profile_option`, `ca_cert_id` and `usage_designation` values the product allows.

use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub mod csr;
mod csv;
mod fields;
mod rules;
mod toml;
mod value;

use fields::{FIELDS, FieldId, Target};
use value::{Raw, Typed};

/// How a manifest is read.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Raw `--set PATH=VALUE` defaults, applied to every order that does not set PATH.
    pub defaults: Vec<String>,
    /// Accept a `common_name` that is neither the CSR's CN nor one of its DNS names.
    pub allow_cn_mismatch: bool,
    /// The date `custom_expiration_date` is measured from.
    pub today: time::Date,
    /// Fields the live order supplies (`--fill-from-order`) may be missing here; they are
    /// checked once filled.
    pub fill_from_order: bool,
}

/// One valid order: where it came from and the exact request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub order_id: u64,
    /// The manifest line of the row (CSV) or of the order's `[[orders]]` header (TOML).
    pub line: u64,
    /// The full reissue request body.
    pub body: serde_json::Value,
}

/// One thing wrong with one field of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub file: String,
    pub line: u64,
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.field, self.message
        )
    }
}

/// A row that cannot be sent, with everything wrong with it (sorted by line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRow {
    /// The order id, when it could be read.
    pub order_id: Option<u64>,
    pub line: u64,
    pub errors: Vec<FieldError>,
}

/// A manifest row after validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Valid(Order),
    Invalid(InvalidRow),
}

/// How many rows a scan passed to its sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanSummary {
    pub valid: u64,
    pub invalid: u64,
}

/// A problem with the manifest as a whole; no row is usable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file cannot be opened or read.
    #[error("cannot read manifest {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Neither `.csv` nor `.toml`.
    #[error("manifest {path} must be a .csv or a .toml file")]
    Extension { path: PathBuf },
    /// The TOML does not parse.
    #[error("{file}:{line}: toml: {message}")]
    Syntax {
        file: String,
        line: u64,
        message: String,
    },
    /// Problems with a place in the file that affect every row: CSV header columns, the TOML
    /// layout, `[defaults]`. All of them, one per line.
    #[error("{}", join_lines(.0))]
    Fields(Vec<FieldError>),
    /// A `--set PATH=VALUE` that names no field or whose value is invalid.
    #[error("--set {arg}: {message}")]
    Set { arg: String, message: String },
}

fn join_lines(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ManifestError {
    /// The individual `FILE:LINE: field: message` lines this error stands for.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ManifestError::Fields(errors) => errors.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// One order as read from the file, before any checking.
#[derive(Debug, Default)]
pub(crate) struct RawOrder {
    /// The row's line (CSV) or the `[[orders]]` line (TOML).
    pub(crate) line: u64,
    /// Each value with the line it was written on.
    pub(crate) values: Vec<(FieldId, Raw, u64)>,
    /// Problems found while reading (an unknown TOML key, a cell that is not UTF-8).
    pub(crate) errors: Vec<FieldError>,
    /// The row could not be split into fields at all (a CSV row of the wrong length): its
    /// errors say why, and no field rule is checked.
    pub(crate) unreadable: bool,
}

/// A default value for one field, already checked, and the line it came from (0 for `--set`).
pub(crate) type Defaults = Vec<Option<(Typed, u64)>>;

/// Everything the per-row checks share; read-only, so rows are checked in parallel.
pub(crate) struct Context {
    pub(crate) file: String,
    pub(crate) dir: PathBuf,
    pub(crate) allow_cn_mismatch: bool,
    pub(crate) fill_from_order: bool,
    pub(crate) today: time::Date,
    pub(crate) defaults: Defaults,
    pub(crate) csrs: csr::CsrCache,
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

/// Rows validated together; large enough to keep both cores busy, small enough to stay flat.
const CHUNK_ROWS: usize = 2048;
/// Distinct CSRs remembered; a repeated CSR is verified once.
const CSR_CACHE_ENTRIES: usize = 4096;

/// Streams the manifest: rows come to `sink` in file order, each already validated. Memory stays
/// bounded (CSV is read incrementally and validated in chunks in parallel with rayon); the sink
/// returns `ControlFlow::Break(())` to stop early.
pub fn scan(
    path: &Path,
    opts: &LoadOptions,
    sink: impl FnMut(Row) -> ControlFlow<()>,
) -> Result<ScanSummary, ManifestError> {
    let file = path.display().to_string();
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let set_defaults = parse_set(&opts.defaults, opts.today)?;
    let mut ctx = Context {
        file,
        dir,
        allow_cn_mismatch: opts.allow_cn_mismatch,
        fill_from_order: opts.fill_from_order,
        today: opts.today,
        defaults: set_defaults,
        csrs: csr::CsrCache::new(CSR_CACHE_ENTRIES),
    };
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => {
            let rows = csv::CsvRows::open(path, &ctx.file)?;
            pipeline(rows, &ctx, sink)
        }
        Some("toml") => {
            let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let manifest = toml::parse(&text, &ctx.file, ctx.today)?;
            // Precedence: order value > [defaults] > --set.
            for (id, default) in manifest.defaults.into_iter().enumerate() {
                if default.is_some() {
                    ctx.defaults[id] = default;
                }
            }
            pipeline(manifest.orders.into_iter().map(Ok), &ctx, sink)
        }
        _ => Err(ManifestError::Extension {
            path: path.to_path_buf(),
        }),
    }
}

/// Checks `--set PATH=VALUE` arguments into defaults.
fn parse_set(args: &[String], today: time::Date) -> Result<Defaults, ManifestError> {
    let mut defaults: Defaults = vec![None; FIELDS.len()];
    for arg in args {
        let fail = |message: String| ManifestError::Set {
            arg: arg.clone(),
            message,
        };
        let (name, text) = arg
            .split_once('=')
            .ok_or_else(|| fail("expected PATH=VALUE".to_owned()))?;
        let id = fields::lookup(name.trim()).ok_or_else(|| fail(unknown_field(name.trim())))?;
        if FIELDS[id].target == Target::OrderId {
            return Err(fail("order_id cannot have a default".to_owned()));
        }
        let typed = value::convert(&FIELDS[id], Raw::Text(text.trim().to_owned()), today)
            .map_err(|message| fail(format!("{}: {message}", FIELDS[id].name())))?;
        defaults[id] = Some((typed, 0));
    }
    Ok(defaults)
}

/// The message for a name that is not in the field table, with a suggestion when one is close.
pub(crate) fn unknown_field(name: &str) -> String {
    match fields::suggest(name) {
        Some(close) => format!("unknown field (did you mean {close}?)"),
        None => "unknown field (see the reissue page's request parameters)".to_owned(),
    }
}

/// Validates rows a chunk at a time, reading the next chunk while the current one is checked,
/// then marks duplicate order ids (which needs file order) and hands rows to the sink.
fn pipeline(
    mut rows: impl Iterator<Item = Result<RawOrder, ManifestError>> + Send,
    ctx: &Context,
    mut sink: impl FnMut(Row) -> ControlFlow<()>,
) -> Result<ScanSummary, ManifestError> {
    let mut summary = ScanSummary::default();
    let mut first_line: HashMap<u64, u64> = HashMap::new();
    let mut current = read_chunk(&mut rows)?;
    while !current.is_empty() {
        let (checked, next) = rayon::join(
            || {
                current
                    .into_par_iter()
                    .map(|raw| rules::check_order(raw, ctx))
                    .collect::<Vec<Row>>()
            },
            || read_chunk(&mut rows),
        );
        for row in checked {
            let row = mark_duplicate(row, &mut first_line, ctx);
            match &row {
                Row::Valid(_) => summary.valid += 1,
                Row::Invalid(_) => summary.invalid += 1,
            }
            if sink(row).is_break() {
                return Ok(summary);
            }
        }
        current = next?;
    }
    Ok(summary)
}

fn read_chunk(
    rows: &mut impl Iterator<Item = Result<RawOrder, ManifestError>>,
) -> Result<Vec<RawOrder>, ManifestError> {
    rows.by_ref().take(CHUNK_ROWS).collect()
}

/// The later of two rows with the same order id is invalid; the first keeps its place.
fn mark_duplicate(row: Row, first_line: &mut HashMap<u64, u64>, ctx: &Context) -> Row {
    let (order_id, line) = match &row {
        Row::Valid(order) => (Some(order.order_id), order.line),
        Row::Invalid(invalid) => (invalid.order_id, invalid.line),
    };
    let Some(order_id) = order_id else {
        return row;
    };
    let first = *first_line.entry(order_id).or_insert(line);
    if first == line {
        return row;
    }
    let error = ctx.error(
        line,
        "order_id",
        format!("duplicate order_id {order_id}; first on line {first}"),
    );
    match row {
        Row::Valid(order) => Row::Invalid(InvalidRow {
            order_id: Some(order.order_id),
            line: order.line,
            errors: vec![error],
        }),
        Row::Invalid(mut invalid) => {
            invalid.errors.push(error);
            invalid.errors.sort_by_key(|e| e.line);
            Row::Invalid(invalid)
        }
    }
}

#[cfg(test)]
mod tests;
