//! CSRs and public keys: unwrap the PEM text a manifest holds (any line endings, any trailing
//! newline, or already on one line), parse the DER with x509-parser, verify the CSR's signature,
//! and produce the one-line PEM the reissue page asks for.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

const CSR_LABEL: &str = "CERTIFICATE REQUEST";
const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";

/// What the manifest needs to know about a CSR or public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrInfo {
    /// The subject's common name, if the CSR has one (a public key has none).
    pub common_name: Option<String>,
    /// The DNS names of the CSR's subjectAltName extension request.
    pub dns_names: Vec<String>,
    /// The SubjectPublicKeyInfo, DER.
    pub public_key_der: Vec<u8>,
    /// Header, base64 body without breaks, footer: what goes into `certificate.csr`.
    pub one_line_pem: String,
    /// True for a bare public key, false for a certificate request.
    pub is_public_key: bool,
}

/// The public key's algorithm and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStrength {
    /// RSA with a modulus of this many bits.
    Rsa(usize),
    /// An elliptic-curve key on a curve of this many bits (256 for P-256).
    Ec(usize),
    /// Any other algorithm.
    Other,
}

impl CsrInfo {
    /// The algorithm and size of the public key.
    pub fn key_strength(&self) -> KeyStrength {
        let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(&self.public_key_der) else {
            return KeyStrength::Other;
        };
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => KeyStrength::Rsa(bit_length(rsa.modulus)),
            Ok(PublicKey::EC(ec)) => KeyStrength::Ec(ec.key_size()),
            _ => KeyStrength::Other,
        }
    }
}

fn bit_length(big_endian: &[u8]) -> usize {
    match big_endian.iter().position(|b| *b != 0) {
        Some(i) => (big_endian.len() - i) * 8 - big_endian[i].leading_zeros() as usize,
        None => 0,
    }
}

/// Why a CSR field's text is not a usable CSR or public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// No `-----BEGIN …-----` line.
    #[error("not PEM: expected -----BEGIN CERTIFICATE REQUEST----- or -----BEGIN PUBLIC KEY-----")]
    NotPem,
    /// A private key where the CSR belongs: refused before it can be sent anywhere.
    #[error("this is a private key, not a CSR; a private key must never be sent")]
    PrivateKey,
    /// Some other PEM type, such as a certificate.
    #[error("PEM block is a {0}, not a CERTIFICATE REQUEST or PUBLIC KEY")]
    Label(String),
    /// The BEGIN line has no matching END line, or text surrounds the block.
    #[error("PEM block must be exactly one -----BEGIN {0}----- … -----END {0}----- block")]
    Framing(String),
    /// The body between the PEM lines is not base64.
    #[error("PEM body is not valid base64")]
    Base64,
    /// The DER is not a PKCS#10 certification request.
    #[error("not a valid certificate request: {0}")]
    Request(String),
    /// The request's signature does not verify with its own public key.
    #[error("the CSR's signature does not verify (the request is corrupt or was altered)")]
    Signature,
    /// The DER is not a SubjectPublicKeyInfo.
    #[error("not a valid public key: {0}")]
    PublicKey(String),
}

/// Parses a PEM CSR (and verifies its signature) or a PEM public key.
pub fn parse_csr(text: &str) -> Result<CsrInfo, CsrError> {
    parse(text, Signature::Verify)
}

/// Whether a CSR's signature is checked while it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signature {
    Verify,
    /// The same text verified before (it is known by its digest): parse it only.
    VerifiedBefore,
}

fn parse(text: &str, signature: Signature) -> Result<CsrInfo, CsrError> {
    let Pem { label, der, base64 } = unwrap_pem(text)?;
    if label == PUBLIC_KEY_LABEL {
        return parse_public_key(&der, &base64);
    }
    let (rest, request) =
        X509CertificationRequest::from_der(&der).map_err(|e| CsrError::Request(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Request(
            "trailing bytes after the request".to_owned(),
        ));
    }
    if signature == Signature::Verify {
        request
            .verify_signature()
            .map_err(|_| CsrError::Signature)?;
    }
    let info = &request.certification_request_info;
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut dns_names = Vec::new();
    for extension in request.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension {
            for name in &san.general_names {
                if let GeneralName::DNSName(dns) = name {
                    dns_names.push((*dns).to_owned());
                }
            }
        }
    }
    Ok(CsrInfo {
        common_name,
        dns_names,
        public_key_der: info.subject_pki.raw.to_vec(),
        one_line_pem: one_line(CSR_LABEL, &base64),
        is_public_key: false,
    })
}

fn parse_public_key(der: &[u8], base64: &str) -> Result<CsrInfo, CsrError> {
    let (rest, spki) =
        SubjectPublicKeyInfo::from_der(der).map_err(|e| CsrError::PublicKey(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::PublicKey(
            "trailing bytes after the key".to_owned(),
        ));
    }
    match spki.parsed() {
        Ok(PublicKey::RSA(_) | PublicKey::EC(_)) => {}
        Ok(_) => {
            return Err(CsrError::PublicKey(
                "neither an RSA nor an EC key".to_owned(),
            ));
        }
        Err(e) => return Err(CsrError::PublicKey(e.to_string())),
    }
    Ok(CsrInfo {
        common_name: None,
        dns_names: Vec::new(),
        public_key_der: der.to_vec(),
        one_line_pem: one_line(PUBLIC_KEY_LABEL, base64),
        is_public_key: true,
    })
}

fn one_line(label: &str, base64: &str) -> String {
    format!("-----BEGIN {label}-----{base64}-----END {label}-----")
}

/// A PEM block: its normalised label, its body decoded, and its body as base64 on one line.
struct Pem {
    label: &'static str,
    der: Vec<u8>,
    base64: String,
}

/// Finds the one PEM block in `text`. Accepts LF, CRLF, no trailing newline, and the one-line
/// form the API itself uses.
fn unwrap_pem(text: &str) -> Result<Pem, CsrError> {
    let text = text.trim();
    let Some(begin_at) = text.find("-----BEGIN ") else {
        return Err(CsrError::NotPem);
    };
    let after_begin = &text[begin_at + "-----BEGIN ".len()..];
    let Some((label, rest)) = after_begin.split_once("-----") else {
        return Err(CsrError::NotPem);
    };
    let normalised = match label {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => CSR_LABEL,
        "PUBLIC KEY" => PUBLIC_KEY_LABEL,
        other if other.contains("PRIVATE KEY") => return Err(CsrError::PrivateKey),
        other => return Err(CsrError::Label(other.to_owned())),
    };
    let end = format!("-----END {label}-----");
    let body = match rest.strip_suffix(end.as_str()) {
        Some(body) if begin_at == 0 && !body.contains("-----") => body,
        _ => return Err(CsrError::Framing(label.to_owned())),
    };
    let mut base64 = String::with_capacity(body.len());
    for piece in body.split_ascii_whitespace() {
        base64.push_str(piece);
    }
    // The engine accepts canonical base64 only (padding, zero trailing bits): the body as
    // given, line breaks removed, is what encoding the DER again would give, so it is sent
    // as it is.
    let der = BASE64.decode(&base64).map_err(|_| CsrError::Base64)?;
    Ok(Pem {
        label: normalised,
        der,
        base64,
    })
}

/// SHA-256 of a CSR's text (trimmed): what a verified CSR is remembered by.
pub type CsrDigest = [u8; 32];

/// SHA-256 of the CSR text to what parsing it gave.
type CacheMap = HashMap<CsrDigest, Result<Arc<CsrInfo>, CsrError>>;

/// CSRs whose signature verified in an earlier run (the journal keeps their digests), and those
/// verified for the first time while this manifest is read, for the journal to keep in turn.
/// Verifying a signature is most of the cost of reading a CSR; a rerun of the same manifest
/// parses each CSR again (its names and key are needed) but verifies none of them.
#[derive(Debug, Default)]
pub struct VerifiedCsrs {
    earlier: HashSet<CsrDigest>,
    new: Mutex<Vec<CsrDigest>>,
    /// Distinct CSRs read whose signature was not verified again.
    reused: AtomicU64,
}

impl VerifiedCsrs {
    /// Starts from the digests of CSRs verified before.
    pub fn new(earlier: HashSet<CsrDigest>) -> Self {
        Self {
            earlier,
            ..Self::default()
        }
    }

    /// How many CSRs read so far were verified before and so not again (each counted once,
    /// unless the in-memory cache forgot it in between).
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// The digests of the CSRs verified for the first time since the last call, each once.
    pub fn take_new(&self) -> Vec<CsrDigest> {
        let mut new = std::mem::take(&mut *lock(&self.new));
        new.sort_unstable();
        new.dedup();
        new
    }

    fn verified_before(&self, digest: &CsrDigest) -> bool {
        self.earlier.contains(digest)
    }

    fn count_reused(&self) {
        self.reused.fetch_add(1, Ordering::Relaxed);
    }

    fn verified_now(&self, digest: CsrDigest) {
        lock(&self.new).push(digest);
    }
}

/// A panic while holding one of these locks leaves only a cache behind; its contents stay valid.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Parse results by content digest, so the same CSR repeated on many rows is verified once.
/// Bounded: when full it starts over, which keeps memory flat on manifests of distinct CSRs.
pub(crate) struct CsrCache {
    entries: Mutex<CacheMap>,
    capacity: usize,
    verified: Arc<VerifiedCsrs>,
}

impl CsrCache {
    pub(crate) fn new(capacity: usize, verified: Arc<VerifiedCsrs>) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
            verified,
        }
    }

    pub(crate) fn parse(&self, text: &str) -> Result<Arc<CsrInfo>, CsrError> {
        let key: CsrDigest = Sha256::digest(text.trim().as_bytes()).into();
        if let Some(hit) = self.lock().get(&key) {
            return hit.clone();
        }
        // Parsed outside the lock so threads verify different CSRs in parallel.
        let known = self.verified.verified_before(&key);
        let result = match known {
            true => parse(text, Signature::VerifiedBefore),
            false => {
                let result = parse(text, Signature::Verify);
                if result.as_ref().is_ok_and(|info| !info.is_public_key) {
                    self.verified.verified_now(key);
                }
                result
            }
        }
        .map(Arc::new);
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        // Two threads may parse the same new text at once; the first to get here counts it.
        if entries.insert(key, result.clone()).is_none() && known {
            self.verified.count_reused();
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheMap> {
        lock(&self.entries)
    }
}

/// Test CSRs made with rcgen; shared with the other manifest tests.
#[cfg(test)]
pub(crate) mod testing {
    use rcgen::{CertificateParams, DnType, KeyPair};

    /// A fresh P-256 CSR for `cn` with `sans` as DNS names, as multi-line PEM (LF).
    pub(crate) fn csr_pem(cn: &str, sans: &[&str]) -> String {
        let key = KeyPair::generate().expect("P-256 key generation");
        let names: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("valid DNS names");
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .serialize_request(&key)
            .expect("CSR serialisation")
            .pem()
            .expect("PEM encoding")
    }

    pub(crate) fn public_key_pem() -> String {
        KeyPair::generate()
            .expect("P-256 key generation")
            .public_key_pem()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn body_of(pem: &str) -> String {
        pem.lines().filter(|l| !l.starts_with("-----")).collect()
    }

    #[test]
    fn lf_csr_parses_to_one_line_pem_with_cn_and_sans() {
        let pem = csr_pem("example.com", &["example.com", "www.example.com"]);
        let info = parse_csr(&pem).expect("valid CSR");
        assert_eq!(info.common_name.as_deref(), Some("example.com"));
        assert_eq!(info.dns_names, ["example.com", "www.example.com"]);
        assert!(!info.is_public_key);
        assert_eq!(
            info.one_line_pem,
            format!(
                "-----BEGIN CERTIFICATE REQUEST-----{}-----END CERTIFICATE REQUEST-----",
                body_of(&pem)
            )
        );
        assert!(!info.one_line_pem.contains(['\n', '\r']));
        assert_eq!(info.key_strength(), KeyStrength::Ec(256));
    }

    #[test]
    fn crlf_missing_newline_and_one_line_forms_give_the_same_result() {
        let pem = csr_pem("a.example", &[]);
        let expected = parse_csr(&pem).expect("LF");
        let crlf = pem.replace('\n', "\r\n");
        let bare = pem.trim_end().to_owned();
        let doubled = format!("{pem}\n\n");
        for text in [crlf, bare, doubled, expected.one_line_pem.clone()] {
            assert_eq!(parse_csr(&text).as_ref(), Ok(&expected), "{text:?}");
        }
    }

    #[test]
    fn base64_that_encoding_would_not_give_back_is_refused() {
        // The one-line PEM is the body as given: only canonical base64 may pass.
        for body in ["AB==", "AAE", "AA=A", "AAAA===="] {
            let text = format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----"
            );
            assert_eq!(parse_csr(&text), Err(CsrError::Base64), "{body}");
        }
    }

    #[test]
    fn public_key_is_accepted_and_kept_as_public_key_pem() {
        let pem = public_key_pem();
        let info = parse_csr(&pem).expect("public key");
        assert!(info.is_public_key);
        assert_eq!(info.common_name, None);
        assert!(
            info.one_line_pem
                .starts_with("-----BEGIN PUBLIC KEY-----MF")
        );
        assert!(info.one_line_pem.ends_with("-----END PUBLIC KEY-----"));
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(parse_csr("hello"), Err(CsrError::NotPem));
        assert_eq!(parse_csr(""), Err(CsrError::NotPem));
        assert_eq!(
            parse_csr(
                "-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----"
            ),
            Err(CsrError::Base64)
        );
        assert!(matches!(
            parse_csr(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"
            ),
            Err(CsrError::Request(_))
        ));
        assert!(matches!(
            parse_csr("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n"),
            Err(CsrError::Framing(_))
        ));
        assert!(matches!(
            parse_csr("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"),
            Err(CsrError::Label(_))
        ));
        assert_eq!(
            parse_csr("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"),
            Err(CsrError::PrivateKey)
        );
    }

    #[test]
    fn two_blocks_or_surrounding_text_are_rejected() {
        let pem = csr_pem("a.example", &[]);
        assert!(matches!(
            parse_csr(&format!("{pem}{pem}")),
            Err(CsrError::Framing(_))
        ));
        assert!(matches!(
            parse_csr(&format!("note\n{pem}")),
            Err(CsrError::Framing(_))
        ));
        assert!(matches!(
            parse_csr(&format!("{pem}note")),
            Err(CsrError::Framing(_))
        ));
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let pem = csr_pem("a.example", &[]);
        let mut der = BASE64.decode(body_of(&pem)).expect("base64");
        // The signature is the last element of the request: flip a bit in its final byte.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let tampered = one_line(CSR_LABEL, &BASE64.encode(&der));
        assert_eq!(parse_csr(&tampered), Err(CsrError::Signature));
    }

    #[test]
    fn tampered_subject_is_rejected() {
        let pem = csr_pem("aaaa.example", &[]);
        let der = BASE64.decode(body_of(&pem)).expect("base64");
        let at = der
            .windows(4)
            .position(|w| w == b"aaaa")
            .expect("CN in DER");
        let mut der = der;
        der[at] = b'b';
        assert_eq!(
            parse_csr(&one_line(CSR_LABEL, &BASE64.encode(&der))),
            Err(CsrError::Signature)
        );
    }

    #[test]
    fn cache_returns_the_same_result_and_stays_bounded() {
        let cache = CsrCache::new(2, Arc::default());
        let a = csr_pem("a.example", &[]);
        let first = cache.parse(&a).expect("valid");
        let second = cache.parse(&a).expect("valid");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(cache.parse("junk"), Err(CsrError::NotPem));
        cache.parse(&csr_pem("b.example", &[])).expect("valid");
        assert!(cache.lock().len() <= 2);
    }

    #[test]
    fn rsa_modulus_bit_length_ignores_leading_zero_bytes() {
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01, 0xff]), 9);
        assert_eq!(bit_length(&[]), 0);
    }

    #[test]
    fn a_csr_verified_before_is_parsed_without_verifying_and_a_new_one_is_remembered() {
        let good = csr_pem("a.example", &["a.example"]);
        let der = BASE64.decode(body_of(&good)).expect("base64");
        let mut broken = der.clone();
        let last = broken.len() - 1;
        broken[last] ^= 0x01;
        let broken = one_line(CSR_LABEL, &BASE64.encode(&broken));
        let digest = |text: &str| -> CsrDigest { Sha256::digest(text.trim().as_bytes()).into() };

        // First reading: both are verified; only the good one is remembered.
        let verified = Arc::new(VerifiedCsrs::default());
        let cache = CsrCache::new(16, verified.clone());
        let info = cache.parse(&good).expect("valid");
        assert_eq!(cache.parse(&broken), Err(CsrError::Signature));
        cache.parse(&public_key_pem()).expect("a public key");
        assert_eq!(verified.take_new(), [digest(&good)]);
        assert!(verified.take_new().is_empty());

        // Next reading, told what was verified: same result, nothing new to remember. The
        // altered CSR's digest stands for a verified one here to show the check is skipped.
        let earlier = HashSet::from([digest(&good), digest(&broken)]);
        let verified = Arc::new(VerifiedCsrs::new(earlier));
        let cache = CsrCache::new(16, verified.clone());
        assert_eq!(*cache.parse(&good).expect("valid"), *info);
        assert!(cache.parse(&broken).is_ok(), "verified again");
        assert!(verified.take_new().is_empty());
        assert_eq!(verified.reused(), 2);
    }
}
