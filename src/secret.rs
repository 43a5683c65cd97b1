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

    /// Whether `text` holds the key: how a child's environment is scrubbed of it.
    pub fn is_in(&self, text: &[u8]) -> bool {
        let key = self.0.as_bytes();
        text.windows(key.len()).any(|window| window == key)
    }

    /// `text` with every occurrence of the key replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "<redacted>")
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
    fn the_key_is_found_in_text_and_redacted_from_it() {
        let key = ApiKey::new("k3y").expect("non-empty key");
        assert!(key.is_in(b"k3y") && key.is_in(b"x=k3y;") && !key.is_in(b"k3"));
        assert_eq!(key.redact("a k3y and k3y"), "a <redacted> and <redacted>");
    }

    #[test]
    fn blank_key_is_rejected() {
        assert!(ApiKey::new(" \n").is_none());
    }
}
