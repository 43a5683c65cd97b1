//! Everything a manifest's validation reads, as one digest: equal digests validate to the same
//! rows. `run` remembers it for a plan whose every row was valid, so a rerun of unchanged
//! inputs can be planned from that run without reading a CSR or building a payload again.
//!
//! The pass is cheap on purpose: the readers split the file into raw values, but no field rule
//! runs, no CSR is parsed and no payload is built. A CSV header without a `csr_file` column is
//! not read past. Whatever cannot be read or does not parse gives no digest: the normal path
//! then reports it.

use std::collections::BTreeSet;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::csv::CsvRows;
use super::fields::{self, Check, FIELDS, FieldId};
use super::raw::RawOrder;
use super::value::{self, Typed};
use super::{Format, LoadOptions, Purpose, defaults, manifest_dir, toml};

/// The digest of the manifest at `path` read with `opts`: the program's build (its version and
/// a digest of its sources), the options that shape payloads and validation, the manifest's
/// bytes, each file it references (by name and bytes) and, when some value is a date checked
/// against today, today's date. `None` when
/// a digest cannot stand for the result: `--fill-from-order` (the live orders shape the
/// payloads), a purpose other than a reissue, or anything unreadable.
pub fn input_digest(path: &Path, opts: &LoadOptions) -> Option<String> {
    if opts.fill_from_order || opts.purpose != Purpose::Reissue {
        return None;
    }
    let csr_file = fields::id("csr_file");
    let mut refs = References::default();
    // A bad `--set` is the normal path's to report.
    let set = defaults::from_set(&opts.defaults, opts.today).ok()?;
    refs.defaults(&set, csr_file);
    let file = path.display().to_string();
    match Format::of(path).ok()? {
        Format::Csv => {
            let rows = CsvRows::open(path, &file).ok()?;
            refs.dated |= FIELDS
                .iter()
                .enumerate()
                .any(|(id, field)| field.check == Check::ExpirationDate && rows.has_column(id));
            if rows.has_column(csr_file) {
                for row in rows {
                    refs.order(&row.ok()?, csr_file, opts)?;
                }
            }
        }
        Format::Toml => {
            let manifest = toml::read(path, &file, opts.today).ok()?;
            refs.defaults(&manifest.defaults, csr_file);
            for order in &manifest.orders {
                refs.order(order, csr_file, opts)?;
            }
        }
    }
    let mut digest = Sha256::new();
    part(
        &mut digest,
        concat!(
            "reissuer ",
            env!("CARGO_PKG_VERSION"),
            " ",
            env!("REISSUER_SOURCE_DIGEST")
        )
        .as_bytes(),
    );
    part(
        &mut digest,
        format!("set {}", opts.defaults.len()).as_bytes(),
    );
    for arg in &opts.defaults {
        part(&mut digest, arg.as_bytes());
    }
    part(
        &mut digest,
        format!("allow_cn_mismatch {}", opts.allow_cn_mismatch).as_bytes(),
    );
    if refs.dated {
        part(&mut digest, format!("today {}", opts.today).as_bytes());
    }
    // Streamed: memory stays flat however long the manifest is.
    let mut manifest = std::fs::File::open(path).ok()?;
    let length = manifest.metadata().ok()?.len();
    digest.update(length.to_be_bytes());
    let mut buffer = vec![0; 1 << 16];
    let mut copied = 0u64;
    loop {
        let read = std::io::Read::read(&mut manifest, &mut buffer).ok()?;
        if read == 0 {
            break;
        }
        digest.update(&buffer[..read]);
        copied += u64::try_from(read).ok()?;
    }
    if copied != length {
        // Changed while it was read: the normal path reads it again.
        return None;
    }
    let dir = manifest_dir(path);
    for name in &refs.files {
        part(&mut digest, name.as_bytes());
        part(&mut digest, &std::fs::read(dir.join(name)).ok()?);
    }
    Some(hex::encode(digest.finalize()))
}

/// Adds one part, length first, so no two different sequences of parts hash alike.
fn part(digest: &mut Sha256, bytes: &[u8]) {
    digest.update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
    digest.update(bytes);
}

/// What the digest needs beyond the manifest's own bytes.
#[derive(Default)]
struct References {
    /// Every `csr_file` named, by the name the rules read it under.
    files: BTreeSet<String>,
    /// Some value is a date that is valid only within a range of today.
    dated: bool,
}

impl References {
    fn defaults(&mut self, defaults: &[super::raw::Slot], csr_file: FieldId) {
        // A default's file counts even when every order names its own: a digest that reads a
        // file too many is only less often reused.
        if let Some((Typed::Str(name), _)) = &defaults[csr_file] {
            self.files.insert(name.clone());
        }
        self.dated |= FIELDS
            .iter()
            .zip(defaults)
            .any(|(field, slot)| field.check == Check::ExpirationDate && slot.is_some());
    }

    /// `None` when a `csr_file` value is not one the rules would read.
    fn order(&mut self, order: &RawOrder, csr_file: FieldId, opts: &LoadOptions) -> Option<()> {
        for (id, raw, _) in &order.values {
            if FIELDS[*id].check == Check::ExpirationDate {
                self.dated = true;
            }
            if *id == csr_file {
                // Converted as the rules convert it, so the name is the file they open.
                match value::convert(&FIELDS[*id], raw.clone(), opts.today).ok()? {
                    Typed::Str(name) => self.files.insert(name),
                    _ => return None,
                };
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LoadOptions {
        LoadOptions {
            defaults: Vec::new(),
            allow_cn_mismatch: false,
            today: time::macros::date!(2026 - 03 - 01),
            fill_from_order: false,
            purpose: Purpose::Reissue,
        }
    }

    fn manifest(dir: &Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("orders.csv");
        std::fs::write(&path, format!("order_id,common_name,csr_file\n{body}")).expect("write");
        path
    }

    #[test]
    fn every_input_of_the_validation_changes_the_digest_and_nothing_else_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.csr"), "first").expect("write");
        let path = manifest(dir.path(), "1,example.com,a.csr\n");
        let base = input_digest(&path, &opts()).expect("a digest");
        assert_eq!(input_digest(&path, &opts()), Some(base.clone()));
        // No date in the manifest: another day reads it the same way.
        let tomorrow = LoadOptions {
            today: time::macros::date!(2026 - 03 - 02),
            ..opts()
        };
        assert_eq!(input_digest(&path, &tomorrow), Some(base.clone()));

        let set = LoadOptions {
            defaults: vec!["signature_hash=sha384".to_owned()],
            ..opts()
        };
        let mismatch = LoadOptions {
            allow_cn_mismatch: true,
            ..opts()
        };
        for other in [set, mismatch] {
            let digest = input_digest(&path, &other).expect("a digest");
            assert_ne!(digest, base);
        }
        std::fs::write(dir.path().join("a.csr"), "firsT").expect("write");
        assert_ne!(input_digest(&path, &opts()).expect("a digest"), base);
    }

    #[test]
    fn what_cannot_be_read_or_depends_on_the_live_orders_has_no_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = manifest(dir.path(), "1,example.com,missing.csr\n");
        assert_eq!(input_digest(&path, &opts()), None);
        std::fs::write(dir.path().join("missing.csr"), "now here").expect("write");
        assert!(input_digest(&path, &opts()).is_some());
        let filled = LoadOptions {
            fill_from_order: true,
            ..opts()
        };
        assert_eq!(input_digest(&path, &filled), None);
        assert_eq!(input_digest(&dir.path().join("absent.csv"), &opts()), None);
    }

    #[test]
    fn a_date_checked_against_today_makes_the_digest_a_days() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("orders.toml");
        std::fs::write(
            &path,
            "[[orders]]\norder_id = 1\ncert_validity.custom_expiration_date = \"01 APR 2026\"\n",
        )
        .expect("write");
        let today = input_digest(&path, &opts()).expect("a digest");
        let tomorrow = LoadOptions {
            today: time::macros::date!(2026 - 03 - 02),
            ..opts()
        };
        assert_ne!(input_digest(&path, &tomorrow), Some(today));
    }
}
