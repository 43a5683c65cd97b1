//! Values parsed from the command line that more than one module needs: quotas, durations and
//! the account's base URL. Pure parsing, no I/O.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// The US CertCentral base URL, the default.
pub const US_BASE_URL: &str = "https://www.digicert.com/services/v2";
/// The European CertCentral base URL (`--region eu`).
pub const EU_BASE_URL: &str = "https://certcentral.digicert.eu/services/v2";

/// The account limits on DigiCert's current rate-limit page: 100 per 5 s and 1000 per 3 min.
/// They are per API key, shared with every other integration that uses the same key.
pub fn default_quotas() -> Vec<Quota> {
    vec![
        Quota {
            limit: 100,
            window: Duration::from_secs(5),
        },
        Quota {
            limit: 1000,
            window: Duration::from_secs(180),
        },
    ]
}

/// "At most `limit` requests start in any interval of length `window`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub window: Duration,
}

/// A quota or duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not of the form `N/DURATION`.
    #[error("quota {0:?} is not of the form N/DURATION (for example 100/5s)")]
    QuotaForm(String),
    /// A zero count or a zero-length window.
    #[error("quota {0:?} must allow at least one request in a window longer than zero")]
    QuotaEmpty(String),
    /// A duration that is not a number followed by ms, s, m or h.
    #[error("duration {0:?} is not a number followed by ms, s, m or h (for example 60s)")]
    Duration(String),
    /// A base URL that does not parse or is not https.
    #[error(
        "base URL {0:?} must be https:// (plain http:// only for a loopback host such as 127.0.0.1)"
    )]
    BaseUrl(String),
}

impl FromStr for Quota {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (count, window) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| ConfigError::QuotaForm(text.to_owned()))?;
        let limit: u32 = count
            .trim()
            .parse()
            .map_err(|_| ConfigError::QuotaForm(text.to_owned()))?;
        let window = parse_duration(window).map_err(|_| ConfigError::QuotaForm(text.to_owned()))?;
        if limit == 0 || window.is_zero() {
            return Err(ConfigError::QuotaEmpty(text.to_owned()));
        }
        Ok(Self { limit, window })
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, format_duration(self.window))
    }
}

/// Parses `500ms`, `5s`, `5m`, `1h` (and anything else humantime accepts, such as `1m30s`).
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|_| ConfigError::Duration(text.to_owned()))
}

/// The shortest of `Nh`, `Nm`, `Ns`, `Nms` that states `duration` exactly.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        0 => "0s".to_owned(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// Checks a CertCentral base URL: https, or http to a loopback host; no trailing slash.
pub fn check_base_url(text: &str) -> Result<String, ConfigError> {
    let url =
        reqwest::Url::parse(text.trim()).map_err(|_| ConfigError::BaseUrl(text.to_owned()))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => return Err(ConfigError::BaseUrl(text.to_owned())),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(ConfigError::BaseUrl(text.to_owned())),
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_in_every_documented_unit() {
        let q: Quota = "100/5s".parse().expect("valid");
        assert_eq!((q.limit, q.window), (100, Duration::from_secs(5)));
        let q: Quota = "1000/5m".parse().expect("valid");
        assert_eq!(q.window, Duration::from_secs(300));
        let q: Quota = "10/250ms".parse().expect("valid");
        assert_eq!(q.window, Duration::from_millis(250));
        let q: Quota = "1300/1h".parse().expect("valid");
        assert_eq!(q.window, Duration::from_secs(3600));
        assert_eq!(q.to_string(), "1300/1h");
    }

    #[test]
    fn malformed_quotas_are_rejected() {
        for bad in [
            "",
            "100",
            "/5s",
            "100/",
            "0/5s",
            "5/0s",
            "-1/5s",
            "x/5s",
            "100/5parsecs",
        ] {
            assert!(bad.parse::<Quota>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn plain_http_is_refused_unless_loopback() {
        assert_eq!(
            check_base_url("https://www.digicert.com/services/v2/").expect("https"),
            "https://www.digicert.com/services/v2"
        );
        assert!(check_base_url("http://127.0.0.1:8080/services/v2").is_ok());
        assert!(check_base_url("http://localhost:1/services/v2").is_ok());
        assert!(check_base_url("http://[::1]:1/services/v2").is_ok());
        assert!(check_base_url("http://www.digicert.com/services/v2").is_err());
        assert!(check_base_url("ftp://127.0.0.1/").is_err());
        assert!(check_base_url("not a url").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,24}") {
            let _ = text.parse::<Quota>();
            let _ = parse_duration(&text);
            let _ = check_base_url(&text);
        }

        #[test]
        fn a_quota_survives_display_and_parse(limit in 1u32..100_000, ms in 1u64..86_400_000) {
            let quota = Quota { limit, window: Duration::from_millis(ms) };
            proptest::prop_assert_eq!(quota.to_string().parse::<Quota>(), Ok(quota));
        }
    }
}
