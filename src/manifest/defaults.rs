//! Defaults and their precedence. A field an order leaves unset takes the TOML manifest's
//! `[defaults]` value, else the `--set PATH=VALUE` value: order > `[defaults]` > `--set`, decided
//! in [`Layers::fill`] and nowhere else.

use super::error::ManifestError;
use super::fields::{self, FIELDS, Target};
use super::raw::{Defaults, Slot};
use super::value::{self, Raw};

/// The two layers of defaults beneath an order's own values.
pub(crate) struct Layers {
    /// The TOML manifest's `[defaults]` (all `None` for a CSV manifest).
    pub(crate) file: Defaults,
    /// `--set PATH=VALUE` from the command line.
    pub(crate) set: Defaults,
}

impl Layers {
    /// Fills every field the order leaves unset: from `[defaults]`, else from `--set`. `csr` and
    /// `csr_file` are one choice: an order that gives either takes neither from the defaults.
    pub(crate) fn fill(&self, slots: &mut [Slot]) {
        let csr = fields::id("certificate.csr");
        let csr_file = fields::id("csr_file");
        let order_has_csr = slots[csr].is_some() || slots[csr_file].is_some();
        for (id, slot) in slots.iter_mut().enumerate() {
            if slot.is_some() || (order_has_csr && (id == csr || id == csr_file)) {
                continue;
            }
            if let Some(default) = self.file[id].as_ref().or(self.set[id].as_ref()) {
                *slot = Some(default.clone());
            }
        }
    }
}

/// Checks `--set PATH=VALUE` arguments into defaults.
pub(crate) fn from_set(args: &[String], today: time::Date) -> Result<Defaults, ManifestError> {
    let mut defaults: Defaults = vec![None; FIELDS.len()];
    for arg in args {
        let fail = |message: String| ManifestError::Set {
            arg: arg.clone(),
            message,
        };
        let (name, text) = arg
            .split_once('=')
            .ok_or_else(|| fail("expected PATH=VALUE".to_owned()))?;
        let id =
            fields::lookup(name.trim()).ok_or_else(|| fail(fields::unknown_field(name.trim())))?;
        if FIELDS[id].target == Target::OrderId {
            return Err(fail("order_id cannot have a default".to_owned()));
        }
        let typed = value::convert(&FIELDS[id], Raw::Text(text.trim().to_owned()), today)
            .map_err(|message| fail(format!("{}: {message}", FIELDS[id].name())))?;
        defaults[id] = Some((typed, 0));
    }
    Ok(defaults)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::value::Typed;

    fn text(s: &str, line: u64) -> Slot {
        Some((Typed::Str(s.to_owned()), line))
    }

    fn layers(file: &[(&str, Slot)], set: &[(&str, Slot)]) -> Layers {
        let mut layers = Layers {
            file: vec![None; FIELDS.len()],
            set: vec![None; FIELDS.len()],
        };
        for (path, slot) in file {
            layers.file[fields::id(path)] = slot.clone();
        }
        for (path, slot) in set {
            layers.set[fields::id(path)] = slot.clone();
        }
        layers
    }

    #[test]
    fn an_orders_own_value_beats_the_file_defaults_which_beat_set() {
        let hash = fields::id("certificate.signature_hash");
        let dcv = fields::id("dcv_method");
        let comments = fields::id("comments");
        let layers = layers(
            &[
                ("certificate.signature_hash", text("sha384", 2)),
                ("dcv_method", text("email", 3)),
            ],
            &[
                ("certificate.signature_hash", text("sha256", 0)),
                ("dcv_method", text("http-token", 0)),
                ("comments", text("from --set", 0)),
            ],
        );
        let mut slots: Vec<Slot> = vec![None; FIELDS.len()];
        slots[hash] = text("sha512", 9);
        layers.fill(&mut slots);
        assert_eq!(slots[hash], text("sha512", 9), "the order's own value");
        assert_eq!(slots[dcv], text("email", 3), "[defaults] over --set");
        assert_eq!(
            slots[comments],
            text("from --set", 0),
            "--set when nothing else"
        );
        assert_eq!(
            slots.iter().filter(|s| s.is_some()).count(),
            3,
            "nothing else is filled"
        );
    }

    #[test]
    fn an_order_with_either_csr_field_takes_neither_from_the_defaults() {
        let csr = fields::id("certificate.csr");
        let csr_file = fields::id("csr_file");
        let layers = layers(
            &[("csr_file", text("default.csr", 2))],
            &[("certificate.csr", text("PEM", 0))],
        );
        let mut own_file: Vec<Slot> = vec![None; FIELDS.len()];
        own_file[csr_file] = text("own.csr", 7);
        layers.fill(&mut own_file);
        assert_eq!(own_file[csr], None);
        assert_eq!(own_file[csr_file], text("own.csr", 7));

        let mut own_pem: Vec<Slot> = vec![None; FIELDS.len()];
        own_pem[csr] = text("OWN PEM", 7);
        layers.fill(&mut own_pem);
        assert_eq!(own_pem[csr], text("OWN PEM", 7));
        assert_eq!(own_pem[csr_file], None);
    }

    #[test]
    fn set_arguments_are_checked_into_defaults_without_a_line() {
        let today = time::macros::date!(2026 - 03 - 01);
        let defaults =
            from_set(&["signature_hash= SHA384 ".to_owned()], today).expect("valid --set");
        assert_eq!(
            defaults[fields::id("certificate.signature_hash")],
            text("sha384", 0)
        );
        let err = from_set(&["order_id=5".to_owned()], today).expect_err("order_id");
        assert_eq!(
            err.to_string(),
            "--set order_id=5: order_id cannot have a default"
        );
    }
}
