//! HTTPS for the simulator: a throwaway CA made at start signs the server's certificate, so the
//! tests (and anyone trying `--ca-file`) meet a server that no system trust store knows. The
//! CA's certificate is handed out as PEM for the client side to trust, or not.

use std::sync::Arc;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use tokio_rustls::TlsAcceptor;

use super::ServerTls;

/// The common name of the throwaway CA: what a refused handshake's message names as issuer.
pub const TLS_CA_NAME: &str = "reissuer simulator TLS CA";

/// Why HTTPS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// rcgen refused a name or failed to sign.
    #[error("cannot make the simulator's TLS certificate")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("cannot configure the simulator's TLS")]
    Config(#[from] rustls::Error),
}

/// The acceptor and the CA certificate a client needs to trust it.
pub(crate) struct TlsMaterial {
    pub ca_pem: String,
    pub acceptor: TlsAcceptor,
}

/// Makes a CA and a server certificate for `spec.names`, and a rustls server offering h2 and
/// HTTP/1.1.
pub(crate) fn make(spec: &ServerTls) -> Result<TlsMaterial, TlsSetupError> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let ca_params = super::ca::ca_params(
        TLS_CA_NAME,
        now - time::Duration::days(30),
        now + time::Duration::days(3650),
    )?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = Issuer::new(ca_params, ca_key);

    let names = if spec.names.is_empty() {
        ServerTls::default().names
    } else {
        spec.names.clone()
    };
    let mut leaf = CertificateParams::new(names.clone())?;
    leaf.distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (leaf.not_before, leaf.not_after) = if spec.expired {
        (
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
    } else {
        (
            now - time::Duration::days(1),
            now + time::Duration::days(30),
        )
    };
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: ca_cert.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}
