//! TLS to NATS: which CA certificates to trust, the client certificate to present, and the
//! test-only mode that trusts any server certificate.
//!
//! The files are read and checked before each connection attempt, so one that cannot be used
//! is reported naming its setting instead of surfacing as a handshake failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_nats::ConnectOptions;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::refusal::{Refusal, TlsSettings};

/// TLS to NATS, as configured. TLS is required when a CA file or a client certificate is set;
/// otherwise it is used when the URL says `tls://` or the server asks for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// CA certificates (PEM) the server's certificate must chain to (`nats_tls_ca_file`);
    /// without it, the system's.
    pub ca_file: Option<PathBuf>,
    /// The certificate the worker presents (`nats_tls_cert_file`, `nats_tls_key_file`).
    pub client_cert: Option<ClientCert>,
    /// Trust any server certificate (`nats_tls_insecure`; for tests only).
    pub insecure: bool,
}

/// A client certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl NatsTls {
    /// Which settings are set, to name them when a handshake fails.
    pub(super) fn settings(&self) -> TlsSettings {
        TlsSettings {
            ca_file: self.ca_file.is_some(),
            client_cert: self.client_cert.is_some(),
        }
    }

    /// `options` with these settings applied, after checking that every file can be used.
    pub(super) fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, Refusal> {
        if let Some(ca_file) = &self.ca_file {
            read_certificates("nats_tls_ca_file", ca_file)?;
        }
        let identity = match &self.client_cert {
            Some(cert) => Some(cert.load()?),
            None => None,
        };
        if self.insecure {
            options = options.tls_client_config(any_server_config(identity)?);
        } else {
            if let Some(ca_file) = &self.ca_file {
                options = options.add_root_certificates(ca_file.clone());
            }
            if let Some(cert) = &self.client_cert {
                options =
                    options.add_client_certificate(cert.cert_file.clone(), cert.key_file.clone());
            }
        }
        let required = self.ca_file.is_some() || self.client_cert.is_some();
        Ok(options.require_tls(required))
    }
}

impl ClientCert {
    /// The chain and the key, checked to belong together.
    fn load(&self) -> Result<CertifiedKey, Refusal> {
        let chain = read_certificates("nats_tls_cert_file", &self.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|e| Refusal::file("nats_tls_key_file", &self.key_file, e))?;
        let mismatch = |e: rustls::Error| {
            let why = format!("not the key of nats_tls_cert_file ({e})");
            Refusal::file("nats_tls_key_file", &self.key_file, why)
        };
        CertifiedKey::from_der(chain, key, &provider()).map_err(mismatch)
    }
}

/// The certificates in the PEM file `path` of `setting`: at least one.
fn read_certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, Refusal> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Refusal::file(setting, path, e))?;
    if certificates.is_empty() {
        return Err(Refusal::file(setting, path, "no PEM certificate in it"));
    }
    Ok(certificates)
}

/// The crypto the worker's TLS uses (rustls with ring).
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A client configuration that accepts any server certificate, presenting `identity` when
/// given.
fn any_server_config(identity: Option<CertifiedKey>) -> Result<ClientConfig, Refusal> {
    let provider = Arc::new(provider());
    let verifier = Arc::new(AnyServerCertificate(provider.clone()));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Refusal::tls("TLS cannot be set up", "nats_tls_insecure", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok(match identity {
        Some(key) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key))),
        None => builder.with_no_client_auth(),
    })
}

/// Trusts every server certificate (`nats_tls_insecure`), but still checks that the server
/// holds the key of the certificate it sent.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
