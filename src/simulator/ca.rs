//! A throwaway certificate authority (ECDSA P-256 root and intermediate, made at start) that
//! signs real leaf certificates for the public key of the CSR a reissue sent.
//!
//! Leaves are made only when first downloaded: the benchmark commits tens of thousands of
//! reissues and must not pay for signing them.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use time::OffsetDateTime;

use super::csr::{KeyAlgorithm, ParsedKey};

/// The chain formats of `/certificate/{id}/download/format/{format}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainFormat {
    /// `pem_all`: leaf, intermediate, root.
    All,
    /// `pem_noroot`: leaf, intermediate.
    NoRoot,
    /// `pem_nointermediate`: the leaf only.
    LeafOnly,
}

impl ChainFormat {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "pem_all" => Some(Self::All),
            "pem_noroot" => Some(Self::NoRoot),
            "pem_nointermediate" => Some(Self::LeafOnly),
            _ => None,
        }
    }
}

/// Why a leaf could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CaError {
    /// The CSR's key is of a type this CA does not certify (P-521, DSA …).
    #[error("the simulated CA cannot certify this key type")]
    UnsupportedKey,
    /// rcgen refused the parameters (a SAN that is not IA5, say) or failed to sign.
    #[error("cannot sign the certificate")]
    Sign(#[source] rcgen::Error),
}

/// What goes into one leaf.
pub(crate) struct LeafSpec<'a> {
    /// `None`: the request sent no CSR, so the CA makes up a key.
    pub key: Option<&'a ParsedKey>,
    pub common_name: &'a str,
    pub dns_names: &'a [String],
    pub serial: &'a [u8],
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

pub(crate) struct Ca {
    root_pem: String,
    intermediate_pem: String,
    intermediate: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Makes a fresh root and intermediate, valid from a day ago for ten years.
    pub(crate) fn generate() -> Result<Self, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        let not_before = now - time::Duration::days(1);
        let not_after = now + time::Duration::days(3650);

        let root_key = KeyPair::generate()?;
        let root_params = ca_params("reissuer simulator root CA", not_before, not_after)?;
        let root_cert = root_params.self_signed(&root_key)?;
        let root = Issuer::new(root_params, root_key);

        let intermediate_key = KeyPair::generate()?;
        let mut intermediate_params =
            ca_params("reissuer simulator issuing CA", not_before, not_after)?;
        intermediate_params.use_authority_key_identifier_extension = true;
        let intermediate_cert = intermediate_params.signed_by(&intermediate_key, &root)?;
        Ok(Self {
            root_pem: root_cert.pem(),
            intermediate_pem: intermediate_cert.pem(),
            intermediate: Issuer::new(intermediate_params, intermediate_key),
        })
    }

    /// Signs one leaf and returns it as PEM.
    pub(crate) fn issue(&self, spec: &LeafSpec<'_>) -> Result<String, CaError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(CaError::Sign)?;
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name);
        params.subject_alt_names = spec
            .dns_names
            .iter()
            .map(|name| Ok(SanType::DnsName(name.clone().try_into()?)))
            .collect::<Result<_, rcgen::Error>>()
            .map_err(CaError::Sign)?;
        params.serial_number = Some(SerialNumber::from_slice(spec.serial));
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];

        let certificate = match spec.key {
            Some(key) => {
                let public_key = CsrPublicKey::new(key)?;
                params.signed_by(&public_key, &self.intermediate)
            }
            None => {
                let made_up = KeyPair::generate().map_err(CaError::Sign)?;
                params.signed_by(&made_up, &self.intermediate)
            }
        }
        .map_err(CaError::Sign)?;
        Ok(certificate.pem())
    }

    /// The leaf followed by what `format` adds.
    pub(crate) fn chain(&self, leaf_pem: &str, format: ChainFormat) -> String {
        let mut out = String::with_capacity(leaf_pem.len() * 3);
        out.push_str(leaf_pem);
        if format != ChainFormat::LeafOnly {
            out.push_str(&self.intermediate_pem);
        }
        if format == ChainFormat::All {
            out.push_str(&self.root_pem);
        }
        out
    }
}

pub(super) fn ca_params(
    name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "reissuer test equipment");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(params)
}

/// The CSR's public key as rcgen wants it: rcgen writes the SubjectPublicKeyInfo itself from an
/// algorithm and the key bits, and for these four algorithms that rebuilds the CSR's bytes
/// exactly (a test compares them).
struct CsrPublicKey<'a> {
    algorithm: &'static SignatureAlgorithm,
    key: &'a [u8],
}

impl<'a> CsrPublicKey<'a> {
    fn new(parsed: &'a ParsedKey) -> Result<Self, CaError> {
        let algorithm = match parsed.algorithm {
            KeyAlgorithm::Rsa => &rcgen::PKCS_RSA_SHA256,
            KeyAlgorithm::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
            KeyAlgorithm::Other => return Err(CaError::UnsupportedKey),
        };
        Ok(Self {
            algorithm,
            key: &parsed.public_key,
        })
    }
}

impl PublicKeyData for CsrPublicKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}
