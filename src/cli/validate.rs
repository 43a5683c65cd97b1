//! `validate` and `run --dry-run`: build every payload, send nothing, write nothing.
//!
//! An invalid manifest prints every error on stderr and nothing on stdout, so the printed
//! payloads are all-or-nothing: they are held back until the last row is checked (in memory up
//! to a limit, beyond it by reading the manifest a second time).

use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::Path;

use crate::exit::Exit;
use crate::manifest::{self, LoadOptions, ManifestError, Purpose, Row};
use crate::payload;

use super::{ManifestArgs, RunArgs, ValidateArgs, resolve_base_url};

/// Printed payloads held in memory while the rest of the manifest is checked; past this the
/// manifest is read twice instead, so memory stays flat for 100,000-row manifests.
const HELD_OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

/// The manifest options of a `run` or `validate` command line.
pub(crate) fn load_options(args: &ManifestArgs) -> LoadOptions {
    LoadOptions {
        defaults: args.defaults.clone(),
        allow_cn_mismatch: args.allow_cn_mismatch,
        // UTC, not local time: the same manifest validates the same way on every host.
        today: time::OffsetDateTime::now_utc().date(),
        fill_from_order: false,
        purpose: Purpose::Reissue,
    }
}

/// `validate MANIFEST [--print]`.
pub(crate) fn validate(args: &ValidateArgs) -> anyhow::Result<Exit> {
    let opts = load_options(&args.manifest);
    let base_url = if args.print {
        Some(resolve_base_url(args.base_url.as_deref(), args.region)?)
    } else {
        None
    };
    print_all_or_nothing(&args.manifest.manifest, &opts, base_url.as_deref())
}

/// `run MANIFEST --dry-run [--skip-invalid]`.
pub(crate) fn dry_run(args: &RunArgs) -> anyhow::Result<Exit> {
    let opts = load_options(&args.manifest);
    let base_url = resolve_base_url(
        args.send.connection.base_url.as_deref(),
        args.send.connection.region,
    )?;
    if args.skip_invalid {
        print_skipping_invalid(&args.manifest.manifest, &opts, &base_url)
    } else {
        print_all_or_nothing(&args.manifest.manifest, &opts, Some(&base_url))
    }
}

/// Counts of what was wrong, for the closing line on stderr.
#[derive(Default)]
struct Tally {
    orders: u64,
    invalid_orders: u64,
    errors: u64,
}

impl Tally {
    fn record_invalid(
        &mut self,
        errors: &mut impl Write,
        row: &manifest::InvalidRow,
    ) -> io::Result<()> {
        self.invalid_orders += 1;
        for error in &row.errors {
            self.errors += 1;
            writeln!(errors, "{error}")?;
        }
        Ok(())
    }
}

/// Prints one line per order only if every order is valid; otherwise every error, exit 2.
/// Without a base URL, prints a one-line summary instead of the payloads.
fn print_all_or_nothing(
    path: &Path,
    opts: &LoadOptions,
    base_url: Option<&str>,
) -> anyhow::Result<Exit> {
    let stderr = io::stderr();
    let mut errors = BufWriter::new(stderr.lock());
    let mut tally = Tally::default();
    let mut held: Option<Vec<u8>> = base_url.map(|_| Vec::new());
    let mut io_error = None;
    let scanned = manifest::scan(path, opts, |row| {
        tally.orders += 1;
        let written = match (&row, base_url) {
            (Row::Invalid(invalid), _) => {
                held = None;
                tally.record_invalid(&mut errors, invalid)
            }
            (Row::Valid(order), Some(base_url)) if tally.invalid_orders == 0 => {
                if let Some(buffer) = &mut held {
                    buffer.extend_from_slice(payload::dry_run_line(base_url, order).as_bytes());
                    buffer.push(b'\n');
                    if buffer.len() > HELD_OUTPUT_LIMIT {
                        held = None;
                    }
                }
                Ok(())
            }
            (Row::Valid(_), _) => Ok(()),
        };
        stop_on_error(written, &mut io_error)
    });
    if let Some(e) = io_error {
        return Err(e.into());
    }
    let file = path.display();
    let summary = match scanned {
        Ok(summary) => summary,
        Err(e) => return report_manifest_error(&mut errors, path, &e),
    };
    if tally.invalid_orders > 0 {
        writeln!(
            errors,
            "{file}: {} in {} of {} orders; nothing was sent",
            plural(tally.errors, "error"),
            tally.invalid_orders,
            tally.orders
        )?;
        errors.flush()?;
        return Ok(Exit::Usage);
    }
    errors.flush()?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match (base_url, held) {
        (None, _) => writeln!(out, "{file}: {} valid", plural(summary.valid, "order"))?,
        (Some(_), Some(buffer)) => out.write_all(&buffer)?,
        (Some(base_url), None) => reprint(path, opts, base_url, &mut out)?,
    }
    out.flush()?;
    Ok(Exit::Ok)
}

/// The second pass for manifests too large to hold: every row was valid a moment ago.
fn reprint(
    path: &Path,
    opts: &LoadOptions,
    base_url: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut io_error = None;
    let mut changed = false;
    manifest::scan(path, opts, |row| match row {
        Row::Valid(order) => {
            let line = payload::dry_run_line(base_url, &order);
            stop_on_error(writeln!(out, "{line}"), &mut io_error)
        }
        Row::Invalid(_) => {
            changed = true;
            ControlFlow::Break(())
        }
    })?;
    if let Some(e) = io_error {
        return Err(e.into());
    }
    anyhow::ensure!(
        !changed,
        "{} changed while it was being read; the output above is incomplete",
        path.display()
    );
    Ok(())
}

/// `--skip-invalid`: the valid orders' lines on stdout, the invalid rows' errors on stderr.
fn print_skipping_invalid(path: &Path, opts: &LoadOptions, base_url: &str) -> anyhow::Result<Exit> {
    let stderr = io::stderr();
    let mut errors = BufWriter::new(stderr.lock());
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut tally = Tally::default();
    let mut io_error = None;
    let scanned = manifest::scan(path, opts, |row| {
        tally.orders += 1;
        let written = match &row {
            Row::Valid(order) => writeln!(out, "{}", payload::dry_run_line(base_url, order)),
            Row::Invalid(invalid) => tally.record_invalid(&mut errors, invalid),
        };
        stop_on_error(written, &mut io_error)
    });
    if let Some(e) = io_error {
        return Err(e.into());
    }
    if let Err(e) = scanned {
        return report_manifest_error(&mut errors, path, &e);
    }
    out.flush()?;
    if tally.invalid_orders == 0 {
        return Ok(Exit::Ok);
    }
    writeln!(
        errors,
        "{}: {} of {} orders invalid and skipped ({})",
        path.display(),
        tally.invalid_orders,
        tally.orders,
        plural(tally.errors, "error")
    )?;
    errors.flush()?;
    Ok(Exit::SomeFailed)
}

fn stop_on_error(result: io::Result<()>, slot: &mut Option<io::Error>) -> ControlFlow<()> {
    match result {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            *slot = Some(e);
            ControlFlow::Break(())
        }
    }
}

/// Prints a whole-file problem (every line of it) and picks the usage exit code.
fn report_manifest_error(
    errors: &mut impl Write,
    path: &Path,
    error: &ManifestError,
) -> anyhow::Result<Exit> {
    let lines = error.lines();
    let count = lines.len();
    for line in lines {
        write!(errors, "{line}")?;
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            write!(errors, ": {cause}")?;
            source = cause.source();
        }
        writeln!(errors)?;
    }
    if let ManifestError::Fields(_) = error {
        writeln!(
            errors,
            "{}: {}; nothing was sent",
            path.display(),
            plural(count as u64, "error")
        )?;
    }
    errors.flush()?;
    Ok(Exit::Usage)
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
