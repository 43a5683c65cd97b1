//! CSRs and public keys as CertCentral receives them: PEM text whose base64 body is on one line
//! (line breaks are tolerated too), parsed and signature-checked with x509-parser.
//!
//! Parsing and verifying costs tens of microseconds, and the benchmark sends the same few CSRs
//! thousands of times, so successful parses are cached by their exact text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Why a CSR was refused; all of them answer `csr_invalid_cannot_parse`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CsrError {
    /// No `-----BEGIN …-----` / `-----END …-----` pair around the text.
    #[error("the CSR is not PEM text")]
    NotPem,
    /// A PEM label other than a certificate request or a public key.
    #[error("the PEM block is a {0}, not a certificate request or public key")]
    Label(String),
    /// The body between header and footer is not base64.
    #[error("the PEM body is not base64")]
    Base64,
    /// The DER inside does not parse.
    #[error("the CSR does not parse")]
    Der,
    /// The request's self-signature does not verify.
    #[error("the CSR's signature does not verify")]
    Signature,
}

/// The key algorithms the simulated CA can put in a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyAlgorithm {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    /// Parsed and verified, but the simulated CA cannot certify it (P-521, DSA …).
    Other,
}

/// What the simulator needs from a CSR or public key.
#[derive(Debug)]
pub(crate) struct ParsedKey {
    pub algorithm: KeyAlgorithm,
    /// The BIT STRING inside the SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    pub key_size: u32,
    /// The subject CN (none for a bare public key).
    pub common_name: Option<String>,
    /// The requested DNS SANs (none for a bare public key).
    pub dns_names: Vec<String>,
}

/// Parses and checks one CSR or public key.
pub(crate) fn parse(text: &str) -> Result<ParsedKey, CsrError> {
    let (label, der) = decode_pem(text)?;
    match label.as_str() {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => parse_request(&der),
        "PUBLIC KEY" => {
            let (rest, spki) = SubjectPublicKeyInfo::from_der(&der).map_err(|_| CsrError::Der)?;
            if !rest.is_empty() {
                return Err(CsrError::Der);
            }
            from_spki(&spki, None, Vec::new())
        }
        _ => Err(CsrError::Label(label)),
    }
}

fn parse_request(der: &[u8]) -> Result<ParsedKey, CsrError> {
    let (rest, request) = X509CertificationRequest::from_der(der).map_err(|_| CsrError::Der)?;
    if !rest.is_empty() {
        return Err(CsrError::Der);
    }
    request
        .verify_signature()
        .map_err(|_| CsrError::Signature)?;
    let info = &request.certification_request_info;
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut dns_names = Vec::new();
    if let Some(extensions) = request.requested_extensions() {
        for extension in extensions {
            if let ParsedExtension::SubjectAlternativeName(san) = extension {
                for name in &san.general_names {
                    if let GeneralName::DNSName(name) = name {
                        dns_names.push((*name).to_owned());
                    }
                }
            }
        }
    }
    from_spki(&info.subject_pki, common_name, dns_names)
}

fn from_spki(
    spki: &SubjectPublicKeyInfo<'_>,
    common_name: Option<String>,
    dns_names: Vec<String>,
) -> Result<ParsedKey, CsrError> {
    let key_size = spki.parsed().map_err(|_| CsrError::Der)?.key_size();
    let oid = &spki.algorithm.algorithm;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let algorithm = if *oid == OID_PKCS1_RSAENCRYPTION {
        KeyAlgorithm::Rsa
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY && curve.as_ref() == Some(&OID_EC_P256) {
        KeyAlgorithm::EcP256
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY && curve.as_ref() == Some(&OID_NIST_EC_P384) {
        KeyAlgorithm::EcP384
    } else if *oid == OID_SIG_ED25519 {
        KeyAlgorithm::Ed25519
    } else {
        KeyAlgorithm::Other
    };
    Ok(ParsedKey {
        algorithm,
        public_key: spki.subject_public_key.data.to_vec(),
        key_size: u32::try_from(key_size).unwrap_or(u32::MAX),
        common_name,
        dns_names,
    })
}

/// Splits `-----BEGIN L-----<base64>-----END L-----` (any whitespace inside the body) into the
/// label and the decoded bytes. Nothing but whitespace may surround the block.
fn decode_pem(text: &str) -> Result<(String, Vec<u8>), CsrError> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let rest = text.trim().strip_prefix(BEGIN).ok_or(CsrError::NotPem)?;
    let (label, rest) = rest.split_once(DASHES).ok_or(CsrError::NotPem)?;
    let footer = format!("-----END {label}-----");
    let body = rest.strip_suffix(footer.as_str()).ok_or(CsrError::NotPem)?;
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| CsrError::Base64)?;
    Ok((label.to_owned(), der))
}

/// Successful parses by exact CSR text. Bounded: when full it starts over, which is cheap and
/// keeps memory flat however many distinct CSRs a run sends.
#[derive(Default)]
pub(crate) struct CsrCache {
    entries: Mutex<HashMap<String, Arc<ParsedKey>>>,
}

const CACHE_CAPACITY: usize = 4096;

impl CsrCache {
    pub(crate) fn parse(&self, text: &str) -> Result<Arc<ParsedKey>, CsrError> {
        if let Some(found) = self.lock().get(text) {
            return Ok(Arc::clone(found));
        }
        // Parsed outside the lock so two cores can verify at once.
        let parsed = Arc::new(parse(text)?);
        let mut entries = self.lock();
        if entries.len() >= CACHE_CAPACITY {
            entries.clear();
        }
        entries.insert(text.to_owned(), Arc::clone(&parsed));
        Ok(parsed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ParsedKey>>> {
        // A panic while holding this lock cannot leave the map half-written: insert and clear
        // are single calls. So a poisoned lock is still a usable cache.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
