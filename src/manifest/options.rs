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
}
