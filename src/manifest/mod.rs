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
//!
//! This file is only the pipeline: read (`csv.rs`, `toml.rs`) → check each order (`rules.rs`,
//! in parallel) → mark repeated order ids (in file order) → the caller's sink. What callers see
//! is in `row.rs`, `error.rs` and `options.rs`; what readers hand the rules is in `raw.rs`. No
//! module below imports from here.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

pub mod csr;
mod csv;
mod defaults;
mod error;
mod fields;
mod inputs;
mod options;
mod raw;
mod row;
mod rules;
mod text;
mod toml;
mod value;

pub use error::{FieldError, ManifestError};
pub use inputs::input_digest;
pub use options::{LoadOptions, Purpose};
pub use row::{InvalidRow, Order, Row, ScanSummary};

use defaults::Layers;
use raw::{Defaults, RawOrder};
use rules::Context;

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
    scan_with(path, opts, &Arc::default(), sink)
}

/// [`scan`], verifying no CSR that `verified` says was verified before, and telling it which
/// were verified for the first time.
pub fn scan_with(
    path: &Path,
    opts: &LoadOptions,
    verified: &Arc<csr::VerifiedCsrs>,
    sink: impl FnMut(Row) -> ControlFlow<()>,
) -> Result<ScanSummary, ManifestError> {
    let set = defaults::from_set(&opts.defaults, opts.today)?;
    let file = path.display().to_string();
    match Format::of(path)? {
        Format::Csv => {
            let rows = csv::CsvRows::open(path, &file)?;
            let ctx = context(
                path,
                file,
                opts,
                Layers {
                    file: no_defaults(),
                    set,
                },
                verified,
            );
            check_in_order(rows, &ctx, sink)
        }
        Format::Toml => {
            let manifest = toml::read(path, &file, opts.today)?;
            let layers = Layers {
                file: manifest.defaults,
                set,
            };
            let ctx = context(path, file, opts, layers, verified);
            check_in_order(manifest.orders.into_iter().map(Ok), &ctx, sink)
        }
    }
}

/// Which reader a manifest needs, from its extension.
enum Format {
    Csv,
    Toml,
}

impl Format {
    fn of(path: &Path) -> Result<Self, ManifestError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("csv") => Ok(Format::Csv),
            Some("toml") => Ok(Format::Toml),
            _ => Err(ManifestError::Extension {
                path: path.to_path_buf(),
            }),
        }
    }
}

fn no_defaults() -> Defaults {
    vec![None; fields::FIELDS.len()]
}

/// What every row's check shares: `csr_file` paths are relative to the manifest's directory.
fn context(
    path: &Path,
    file: String,
    opts: &LoadOptions,
    defaults: Layers,
    verified: &Arc<csr::VerifiedCsrs>,
) -> Context {
    Context {
        file,
        dir: manifest_dir(path),
        allow_cn_mismatch: opts.allow_cn_mismatch,
        fill_from_order: opts.fill_from_order,
        purpose: opts.purpose,
        today: opts.today,
        defaults,
        csrs: csr::CsrCache::new(CSR_CACHE_ENTRIES, verified.clone()),
    }
}

/// The directory `csr_file` paths are relative to.
fn manifest_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Validates rows a chunk at a time, reading the next chunk while the current one is checked,
/// then marks duplicate order ids (which needs file order) and hands rows to the sink.
fn check_in_order(
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
