//! Whom the client trusts, and what it says about a server certificate it refuses.
//!
//! Trusted: the operating system's CA certificates, read with `rustls-native-certs` (which reads
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` instead when either is set, as OpenSSL does), plus any
//! `--ca-file`. Verification itself is rustls' WebPKI verifier; the wrapper here changes no
//! decision, it only attaches the refused certificate's issuer to the error, because that name
//! is what an operator behind a TLS-inspecting proxy needs to see.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

/// Why `--ca-file` cannot be used. Nothing has been sent when this is reported.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file cannot be read.
    #[error("--ca-file {}: cannot read it", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The file holds no `-----BEGIN CERTIFICATE-----` block.
    #[error("--ca-file {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it", path.display())]
    Empty { path: PathBuf },
    /// A certificate in the file cannot be a trust anchor (it does not parse).
    #[error("--ca-file {}: certificate {number} is not a usable CA certificate", path.display())]
    Unusable {
        path: PathBuf,
        number: usize,
        #[source]
        source: rustls::Error,
    },
}

/// The CA certificates the client trusts, and where they came from (for the refusal message).
#[derive(Clone)]
pub struct Trust {
    roots: Arc<RootCertStore>,
    /// Where the roots came from, e.g. "148 CA certificates from the system store".
    sources: Vec<String>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("roots", &self.roots.len())
            .field("sources", &self.sources)
            .finish()
    }
}

impl Trust {
    /// The system's CA certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set), plus those of
    /// `ca_file`.
    pub fn load(ca_file: Option<&Path>) -> Result<Self, TrustError> {
        let mut roots = RootCertStore::empty();
        let mut sources = Vec::new();
        if let Some(path) = ca_file {
            let added = add_ca_file(&mut roots, path)?;
            sources.push(format!(
                "{added} CA certificate(s) from --ca-file {}",
                path.display()
            ));
        }
        let system = rustls_native_certs::load_native_certs();
        let where_from = system_store_name();
        for error in &system.errors {
            tracing::warn!("trust store ({where_from}): {error}");
        }
        let (added, ignored) = roots.add_parsable_certificates(system.certs);
        if ignored > 0 {
            tracing::debug!("{ignored} certificate(s) of the system trust store are not usable");
        }
        sources.push(format!("{added} CA certificate(s) from {where_from}"));
        Ok(Self {
            roots: Arc::new(roots),
            sources,
        })
    }

    /// A rustls client configuration verifying against these roots, offering h2 and HTTP/1.1.
    pub(crate) fn client_config(&self) -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = NamingVerifier::new(self, Arc::clone(&provider));
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions");
        let mut config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        // What reqwest offers by default with HTTP/2 enabled; a preconfigured TLS is used as is.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// Adds every certificate of the PEM file; at least one must be there.
fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, TrustError> {
    let read_error = |source| TrustError::Read {
        path: path.to_owned(),
        source,
    };
    let mut added = 0;
    for (index, cert) in CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .enumerate()
    {
        let cert = cert.map_err(read_error)?;
        roots.add(cert).map_err(|source| TrustError::Unusable {
            path: path.to_owned(),
            number: index + 1,
            source,
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(TrustError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(added)
}

/// Where the system's certificates were read from, as the message names it.
fn system_store_name() -> String {
    let file = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty());
    let dir = std::env::var_os("SSL_CERT_DIR").filter(|v| !v.is_empty());
    match (file, dir) {
        (None, None) => "the system trust store".to_owned(),
        (Some(file), None) => format!("SSL_CERT_FILE={}", file.to_string_lossy()),
        (None, Some(dir)) => format!("SSL_CERT_DIR={}", dir.to_string_lossy()),
        (Some(file), Some(dir)) => format!(
            "SSL_CERT_FILE={} and SSL_CERT_DIR={}",
            file.to_string_lossy(),
            dir.to_string_lossy()
        ),
    }
}

/// What was wrong with a refused server certificate, as far as the advice differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not issued by a trusted CA (or its signature does not check out).
    UnknownIssuer,
    /// Past its end of validity.
    Expired,
    /// Before its start of validity.
    NotValidYet,
    /// Not for the host connected to.
    WrongName,
    /// Anything else (revoked, wrong purpose, unparseable …).
    Other,
}

impl Refusal {
    fn of(reason: &CertificateError) -> Self {
        match reason {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                Refusal::UnknownIssuer
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Refusal::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Refusal::NotValidYet
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Refusal::WrongName
            }
            _ => Refusal::Other,
        }
    }
}

/// A server certificate the client refused: who it was for, who issued it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntrustedServer {
    /// The host the client was connecting to.
    pub host: String,
    /// What kind of refusal it was.
    pub refusal: Refusal,
    /// The verifier's own words.
    pub reason: String,
    /// The refused certificate's subject and issuer, as `CN=…, O=…`.
    pub subject: Option<String>,
    pub issuer: Option<String>,
    /// The issuer of the last certificate the server sent, when it differs from `issuer` (the
    /// root an intermediate points at).
    pub chain_issuer: Option<String>,
    /// The refused certificate's end of validity (UTC).
    pub not_after: Option<String>,
    /// Where the trusted CA certificates came from.
    pub trusted: Vec<String>,
}

impl fmt::Display for UntrustedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server certificate of {} is not trusted ({})",
            self.host, self.reason
        )?;
        if let Some(issuer) = &self.issuer {
            write!(f, "; issued by {issuer}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UntrustedServer {}

impl UntrustedServer {
    fn new(
        server_name: &ServerName<'_>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        reason: CertificateError,
        trusted: &[String],
    ) -> Self {
        let leaf = names_of(end_entity);
        let top = intermediates.last().and_then(names_of);
        let issuer = leaf.as_ref().map(|names| names.issuer.clone());
        let chain_issuer = top
            .map(|names| names.issuer)
            .filter(|top| Some(top) != issuer.as_ref());
        Self {
            host: server_name.to_str().into_owned(),
            refusal: Refusal::of(&reason),
            reason: rustls::Error::InvalidCertificate(reason).to_string(),
            subject: leaf.as_ref().map(|names| names.subject.clone()),
            issuer,
            chain_issuer,
            not_after: leaf.and_then(|names| names.not_after),
            trusted: trusted.to_vec(),
        }
    }

    /// What happened and what to do about it, in lines for a person.
    pub fn explain(&self) -> String {
        let mut text = format!(
            "the server certificate of {} is not trusted: {}\n",
            self.host, self.reason
        );
        if let Some(subject) = &self.subject {
            text.push_str(&format!("  certificate: {subject}\n"));
        }
        let issuer = self.issuer.as_deref().unwrap_or("(unreadable)");
        text.push_str(&format!("  issued by:   {issuer}\n"));
        if let Some(top) = &self.chain_issuer {
            text.push_str(&format!(
                "  its chain ends at a certificate issued by: {top}\n"
            ));
        }
        if let Some(not_after) = &self.not_after {
            text.push_str(&format!("  valid until: {not_after}\n"));
        }
        text.push_str(&format!("  trusted:     {}\n", self.trusted.join("; ")));
        let only_adds = "--ca-file only adds trusted CAs: it cannot make";
        let advice = match self.refusal {
            Refusal::Expired => format!(
                "The certificate has expired. Check this machine's clock; if it is right, the \
                 server (or a proxy in between)\npresents an expired certificate. {only_adds} an \
                 expired certificate valid."
            ),
            Refusal::NotValidYet => format!(
                "The certificate is not valid yet: check this machine's clock. {only_adds} it \
                 valid before its time."
            ),
            Refusal::WrongName => format!(
                "The certificate is not for {}: check --base-url (or DIGICERT_BASE_URL), and any \
                 proxy in between.\n{only_adds} a certificate valid for another name.",
                self.host
            ),
            Refusal::UnknownIssuer | Refusal::Other => format!(
                "If {} is your organisation's CA (a TLS-inspecting proxy, say), trust it:\n  \
                 --ca-file PATH (or REISSUER_CA_FILE=PATH), a PEM file with that CA's \
                 certificate(s), or\n  \
                 the system trust store (SSL_CERT_FILE / SSL_CERT_DIR are honoured).\n\
                 If it is not, do not trust it: something is intercepting the connection.",
                self.chain_issuer.as_deref().unwrap_or(issuer)
            ),
        };
        text.push_str(&advice);
        text
    }
}

struct CertNames {
    subject: String,
    issuer: String,
    not_after: Option<String>,
}

fn names_of(cert: &CertificateDer<'_>) -> Option<CertNames> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let not_after = parsed
        .validity()
        .not_after
        .to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .ok();
    Some(CertNames {
        subject: parsed.subject().to_string(),
        issuer: parsed.issuer().to_string(),
        not_after,
    })
}

/// Finds the refused certificate in an error chain, if that is what the error was.
pub(crate) fn untrusted_server(err: &(dyn std::error::Error + 'static)) -> Option<UntrustedServer> {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(rustls::Error::InvalidCertificate(reason)) =
            current.downcast_ref::<rustls::Error>()
        {
            return Some(match reason {
                CertificateError::Other(OtherError(other)) => {
                    match other.downcast_ref::<UntrustedServer>() {
                        Some(named) => named.clone(),
                        None => unnamed(reason.clone()),
                    }
                }
                _ => unnamed(reason.clone()),
            });
        }
        cause = next_cause(current);
    }
    None
}

/// The error's cause. An `io::Error` wrapping another error hides it from `source()` (which
/// skips to the wrapped error's own cause), and the connector nests two of them, so it is asked
/// for what it wraps.
fn next_cause<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    match err
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        Some(wrapped) => Some(wrapped),
        None => err.source(),
    }
}

fn unnamed(reason: CertificateError) -> UntrustedServer {
    UntrustedServer {
        host: "the server".to_owned(),
        refusal: Refusal::of(&reason),
        reason: rustls::Error::InvalidCertificate(reason).to_string(),
        subject: None,
        issuer: None,
        chain_issuer: None,
        not_after: None,
        trusted: Vec::new(),
    }
}

/// rustls' WebPKI verifier, whose refusals carry the refused certificate's names.
#[derive(Debug)]
struct NamingVerifier {
    /// `None` when not a single CA certificate could be loaded: every certificate is refused.
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    sources: Vec<String>,
}

impl NamingVerifier {
    fn new(trust: &Trust, provider: Arc<CryptoProvider>) -> Self {
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&trust.roots), provider.clone())
                .build()
                .ok();
        Self {
            inner,
            provider,
            sources: trust.sources.clone(),
        }
    }
}

impl ServerCertVerifier for NamingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.inner {
            Some(inner) => {
                inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        };
        verdict.map_err(|err| match err {
            rustls::Error::InvalidCertificate(reason) => {
                let named = UntrustedServer::new(
                    server_name,
                    end_entity,
                    intermediates,
                    reason,
                    &self.sources,
                );
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    named,
                ))))
            }
            other => other,
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA named `ca_name` and a server certificate it signed for `names`.
    fn ca_and_server(ca_name: &str, names: &[&str]) -> (String, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let leaf = rcgen::CertificateParams::new(names).expect("params");
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf");
        (ca_cert.pem(), leaf_cert.der().clone())
    }

    fn verify(trust: &Trust, leaf: &CertificateDer<'_>, host: &str) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = NamingVerifier::new(trust, provider);
        let name = ServerName::try_from(host.to_owned()).expect("server name");
        verifier
            .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn a_certificate_from_the_ca_file_is_trusted_and_one_from_elsewhere_is_refused_by_issuer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ours, our_leaf) = ca_and_server("Example Corp Root", &["cc.example.test"]);
        let (_, their_leaf) = ca_and_server("Inspecting Proxy CA", &["cc.example.test"]);
        let trust = Trust::load(Some(&write(dir.path(), "ca.pem", &ours))).expect("loads");

        verify(&trust, &our_leaf, "cc.example.test").expect("trusted");

        let err = verify(&trust, &their_leaf, "cc.example.test").expect_err("refused");
        let refused = untrusted_server(&err).expect("named");
        assert_eq!(refused.refusal, Refusal::UnknownIssuer);
        assert_eq!(refused.host, "cc.example.test");
        assert_eq!(refused.issuer.as_deref(), Some("CN=Inspecting Proxy CA"));
        let text = refused.explain();
        assert!(text.contains("Inspecting Proxy CA"), "{text}");
        assert!(text.contains("--ca-file"), "{text}");
        assert!(
            text.contains("1 CA certificate(s) from --ca-file"),
            "says what was trusted: {text}"
        );
    }

    #[test]
    fn a_trusted_certificate_for_another_name_is_refused_as_such() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ours, leaf) = ca_and_server("Example Corp Root", &["other.example.test"]);
        let trust = Trust::load(Some(&write(dir.path(), "ca.pem", &ours))).expect("loads");
        let err = verify(&trust, &leaf, "cc.example.test").expect_err("refused");
        let refused = untrusted_server(&err).expect("named");
        assert_eq!(refused.refusal, Refusal::WrongName);
        assert!(refused.explain().contains("is not for cc.example.test"));
    }

    #[test]
    fn the_refusal_is_found_inside_the_io_errors_the_connector_wraps_it_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ours, _) = ca_and_server("Example Corp Root", &["cc.example.test"]);
        let (_, theirs) = ca_and_server("Inspecting Proxy CA", &["cc.example.test"]);
        let trust = Trust::load(Some(&write(dir.path(), "ca.pem", &ours))).expect("loads");
        let refused = verify(&trust, &theirs, "cc.example.test").expect_err("refused");
        // The shape hyper-util and tokio-rustls give it.
        let wrapped = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            refused,
        ));
        let found = untrusted_server(&wrapped).expect("found");
        assert_eq!(found.issuer.as_deref(), Some("CN=Inspecting Proxy CA"));
        // Other failures are not mistaken for it.
        let reset =
            std::io::Error::other(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(untrusted_server(&reset).is_none());
        let alert = std::io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        assert!(untrusted_server(&alert).is_none());
    }

    #[test]
    fn a_ca_file_without_a_usable_certificate_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            Trust::load(Some(&missing)),
            Err(TrustError::Read { .. })
        ));
        let empty = write(dir.path(), "empty.pem", "# nothing here\n");
        let err = Trust::load(Some(&empty)).expect_err("refused");
        assert!(matches!(err, TrustError::Empty { .. }));
        assert!(err.to_string().contains("empty.pem"));
        let garbage = write(
            dir.path(),
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        assert!(matches!(
            Trust::load(Some(&garbage)),
            Err(TrustError::Unusable { number: 1, .. })
        ));
    }

    #[test]
    fn a_ca_file_may_hold_several_cas_and_each_is_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, first_leaf) = ca_and_server("First Root", &["a.example.test"]);
        let (second, second_leaf) = ca_and_server("Second Root", &["b.example.test"]);
        let bundle = write(dir.path(), "bundle.pem", &format!("{first}\n{second}"));
        let trust = Trust::load(Some(&bundle)).expect("loads");
        verify(&trust, &first_leaf, "a.example.test").expect("first trusted");
        verify(&trust, &second_leaf, "b.example.test").expect("second trusted");
    }
}
