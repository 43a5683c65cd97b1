//! How a caller asks for a manifest to be read.

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
    /// What the orders are read for, and so which rules apply.
    pub purpose: Purpose,
}

/// What the orders of a manifest are read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A reissue request each (`validate`, `run`): every rule the reissue page states.
    Reissue,
    /// A new key and CSR each (`keygen`): only what those need, an order id (present, valid,
    /// not repeated) and every value readable as its field, since keygen copies each into the
    /// manifest it writes. What the reissue itself requires (`signature_hash`, the rules across
    /// fields) is checked when that manifest is validated or run, and a CSR already given is
    /// not read at all: it is about to be replaced.
    NewKey,
}
