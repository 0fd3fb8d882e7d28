//! Failures to connect that will not heal by trying again: NATS refused our credentials, the
//! TLS handshake failed over a certificate, or a secret, certificate or key file cannot be
//! used. Each names the setting to fix, so the process can stop with one clear line instead of
//! retrying for ever.

use std::path::Path;

use async_nats::{ConnectError, ConnectErrorKind};

use crate::broker::BrokerError;

/// Why [`super::JetStreamBroker::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    /// NATS may answer later (down, unreachable, timing out): worth another attempt.
    #[error(transparent)]
    Unreachable(#[from] BrokerError),
    /// NATS will refuse every attempt until the named setting is fixed.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// A failure that names the setting to fix; its text is one line for the operator and holds no
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(String);

impl Refusal {
    /// The file of `setting` at `path` cannot be read or does not hold what it should.
    pub fn file(setting: &str, path: &Path, why: impl std::fmt::Display) -> Refusal {
        Refusal(format!("{setting}: cannot use {}: {why}", path.display()))
    }

    /// NATS answered that the credentials of `settings` are not valid, or (`None`) that it
    /// wants some.
    pub fn credentials(settings: Option<&str>, why: impl std::fmt::Display) -> Refusal {
        match settings {
            Some(settings) => Refusal(format!("NATS refused our credentials ({settings}): {why}")),
            None => Refusal(format!(
                "NATS requires credentials and none are set (nats_credentials_file, nats_user \
                 with nats_password_file, or nats_token_file): {why}"
            )),
        }
    }

    /// The TLS handshake with NATS failed for a reason `settings` can fix.
    pub fn tls(what: &str, settings: &str, why: impl std::fmt::Display) -> Refusal {
        Refusal(format!("{what} ({settings}): {why}"))
    }
}

/// What the TLS settings were, to name the right ones when a handshake fails.
#[derive(Debug, Clone, Copy)]
pub(super) struct TlsSettings {
    pub(super) ca_file: bool,
    pub(super) client_cert: bool,
}

/// Sorts a failed connection attempt: refused for good (naming `auth_settings`, `None` when
/// no credentials are set, or the TLS settings), or worth another attempt.
pub(super) fn classify(
    err: ConnectError,
    auth_settings: Option<&str>,
    tls: TlsSettings,
    urls: &str,
) -> ConnectFailure {
    match err.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            return Refusal::credentials(auth_settings, err.kind()).into();
        }
        ConnectErrorKind::Tls => {
            return Refusal::tls("TLS with NATS cannot be set up", tls.all(), &err).into();
        }
        _ => {}
    }
    match rustls_error_in(&err) {
        Some(tls_err) => tls_refusal(tls_err, tls).into(),
        None => ConnectFailure::Unreachable(BrokerError::Connect {
            url: urls.to_string(),
            reason: err.to_string(),
        }),
    }
}

impl TlsSettings {
    /// The TLS settings, for a failure any of them may cause.
    fn all(self) -> &'static str {
        "nats_tls_ca_file, nats_tls_cert_file/nats_tls_key_file, nats_tls_insecure"
    }

    /// The setting that decides which server certificates are trusted.
    fn trust(self) -> &'static str {
        match self.ca_file {
            true => "nats_tls_ca_file",
            false => "nats_tls_ca_file not set: the system's CA certificates were used",
        }
    }

    /// The settings of the certificate the worker presents.
    fn identity(self) -> &'static str {
        match self.client_cert {
            true => "nats_tls_cert_file/nats_tls_key_file",
            false => "nats_tls_cert_file/nats_tls_key_file not set: no client certificate sent",
        }
    }
}

/// The refusal for a TLS handshake that failed with `err`.
fn tls_refusal(err: &rustls::Error, tls: TlsSettings) -> Refusal {
    match err {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            Refusal::tls("NATS's TLS certificate is not trusted", tls.trust(), err)
        }
        rustls::Error::AlertReceived(_) => Refusal::tls(
            "NATS refused our TLS client certificate",
            tls.identity(),
            err,
        ),
        _ => Refusal::tls("The TLS handshake with NATS failed", tls.all(), err),
    }
}

/// The rustls error somewhere in `err`'s chain of causes (async-nats wraps handshake failures
/// in I/O errors).
fn rustls_error_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if inner.is_some() {
            return inner;
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_TLS: TlsSettings = TlsSettings {
        ca_file: false,
        client_cert: false,
    };

    fn io_wrapped(tls: rustls::Error) -> ConnectError {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        ConnectError::with_source(ConnectErrorKind::Io, io)
    }

    #[test]
    fn refused_credentials_name_their_settings() {
        let err = ConnectError::new(ConnectErrorKind::AuthorizationViolation);
        let failure = classify(err, Some("nats_token_file"), NO_TLS, "nats://h:4222");
        assert_eq!(
            failure.to_string(),
            "NATS refused our credentials (nats_token_file): authorization violation"
        );
        assert!(matches!(failure, ConnectFailure::Refused(_)));
    }

    #[test]
    fn credentials_asked_for_and_not_set_name_the_ways_to_set_them() {
        let err = ConnectError::new(ConnectErrorKind::AuthorizationViolation);
        let text = classify(err, None, NO_TLS, "nats://h:4222").to_string();
        assert!(
            text.starts_with("NATS requires credentials and none are set ("),
            "{text}"
        );
        assert!(text.contains("nats_token_file"), "{text}");
    }

    #[test]
    fn an_untrusted_server_certificate_names_the_ca_file() {
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let tls = TlsSettings {
            ca_file: true,
            client_cert: true,
        };
        let failure = classify(io_wrapped(untrusted), None, tls, "tls://h:4222");
        assert!(matches!(failure, ConnectFailure::Refused(_)));
        let text = failure.to_string();
        assert!(
            text.contains("(nats_tls_ca_file)") && text.contains("UnknownIssuer"),
            "{text}"
        );
    }

    #[test]
    fn a_refused_client_certificate_names_the_certificate_settings() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let text = classify(io_wrapped(alert), None, NO_TLS, "h").to_string();
        assert!(
            text.contains("nats_tls_cert_file/nats_tls_key_file not set"),
            "{text}"
        );
    }

    #[test]
    fn a_server_that_is_down_is_worth_waiting_for() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = ConnectError::with_source(ConnectErrorKind::Io, refused);
        let failure = classify(err, None, NO_TLS, "nats://h:4222");
        assert!(
            matches!(failure, ConnectFailure::Unreachable(_)),
            "{failure}"
        );
        let timed_out = ConnectError::new(ConnectErrorKind::TimedOut);
        let failure = classify(timed_out, None, NO_TLS, "nats://h:4222");
        assert!(matches!(failure, ConnectFailure::Unreachable(_)));
    }
}
