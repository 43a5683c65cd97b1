//! The API key, in a type that cannot be printed by accident.

use std::fmt;

/// A CertCentral API key. `Debug` and `Display` redact it; only the API client reads it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key, trimming the surrounding whitespace a key file usually carries.
    pub fn new(key: &str) -> Option<Self> {
        let key = key.trim();
        (!key.is_empty()).then(|| Self(key.to_owned()))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_key() {
        let key = ApiKey::new("  s3cr3t-key\n").expect("non-empty key");
        assert_eq!(key.expose(), "s3cr3t-key");
        assert!(!format!("{key:?} {key}").contains("s3cr3t"));
    }

    #[test]
    fn blank_key_is_rejected() {
        assert!(ApiKey::new(" \n").is_none());
    }
}
