//! Who may use the ingress and the `/system` API: as OpenFaaS does it, basic auth with the
//! user and password in `secret_mount_path` (`basic-auth-user`, `basic-auth-password`) when
//! `basic_auth=true`, and/or a bearer token from `api_token_file`. With either set, a request
//! without valid credentials is answered `401` with `WWW-Authenticate`. Secrets are compared
//! in constant time and re-read when their files change ([`super::secret_file`]).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::secret_file::SecretFile;

/// File names of the basic-auth secrets in `secret_mount_path` (as the OpenFaaS gateway).
pub const USER_FILE: &str = "basic-auth-user";
pub const PASSWORD_FILE: &str = "basic-auth-password";

/// Longest `Authorization` value looked at.
const MAX_AUTHORIZATION: usize = 8 * 1024;

/// The credentials the ingress accepts.
#[derive(Debug)]
pub struct IngressAuth {
    basic: Option<(SecretFile, SecretFile)>,
    token: Option<SecretFile>,
}

/// Why a request is not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or wrong ones: `401`.
    Unauthorized,
    /// The secrets cannot be read: `503` (fail closed).
    Unavailable,
}

/// What an `Authorization` header offers.
#[derive(Debug, PartialEq, Eq)]
enum Offered {
    Basic { user: Vec<u8>, password: Vec<u8> },
    Bearer(Vec<u8>),
    Nothing,
}

impl IngressAuth {
    /// Basic auth with the secrets in `basic_dir` (when given) and/or a bearer token from
    /// `token_file`; `None` when neither is given (the ingress is open).
    pub fn new(basic_dir: Option<&Path>, token_file: Option<&Path>) -> Option<IngressAuth> {
        let basic = basic_dir.map(|dir| {
            (
                SecretFile::new(dir.join(USER_FILE)),
                SecretFile::new(dir.join(PASSWORD_FILE)),
            )
        });
        let token = token_file.map(SecretFile::new);
        (basic.is_some() || token.is_some()).then_some(IngressAuth { basic, token })
    }

    /// Read every secret once: `Err` names the file that cannot be read or is empty (checked
    /// at start, so a missing secret stops the process instead of locking everyone out).
    pub fn preload(&self) -> Result<(), String> {
        let files = self
            .basic
            .iter()
            .flat_map(|(u, p)| [u, p])
            .chain(self.token.iter());
        for file in files {
            let value = file.get()?;
            if value.is_empty() {
                return Err(format!("{} is empty", file.path().display()));
            }
        }
        Ok(())
    }

    /// Whether `headers` carry credentials this accepts.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let offered = headers
            .get(header::AUTHORIZATION)
            .map_or(Offered::Nothing, |v| parse_authorization(v.as_bytes()));
        match offered {
            Offered::Basic { user, password } => {
                let Some((u, p)) = &self.basic else {
                    return Err(Denied::Unauthorized);
                };
                let (want_user, want_password) = (read(u)?, read(p)?);
                // Both compared, whatever the first gives.
                let user_ok = same(&user, &want_user);
                let password_ok = same(&password, &want_password);
                allow(user_ok & password_ok)
            }
            Offered::Bearer(token) => {
                let Some(t) = &self.token else {
                    return Err(Denied::Unauthorized);
                };
                allow(same(&token, &read(t)?))
            }
            Offered::Nothing => Err(Denied::Unauthorized),
        }
    }

    /// `WWW-Authenticate` values: one per accepted scheme.
    fn challenges(&self) -> Vec<HeaderValue> {
        let mut out = Vec::new();
        if self.basic.is_some() {
            out.push(HeaderValue::from_static(
                "Basic realm=\"queue-worker\", charset=\"UTF-8\"",
            ));
        }
        if self.token.is_some() {
            out.push(HeaderValue::from_static("Bearer realm=\"queue-worker\""));
        }
        out
    }

    /// The `401` answer.
    fn unauthorized(&self) -> Response {
        let mut resp = (
            StatusCode::UNAUTHORIZED,
            "unauthorized: this ingress requires credentials (basic auth or a bearer token)\n",
        )
            .into_response();
        for v in self.challenges() {
            resp.headers_mut().append(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

fn allow(ok: bool) -> Result<(), Denied> {
    if ok {
        Ok(())
    } else {
        Err(Denied::Unauthorized)
    }
}

/// A secret's value; an unreadable or empty one lets nobody in.
fn read(file: &SecretFile) -> Result<Arc<[u8]>, Denied> {
    match file.get() {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => {
            tracing::error!(path = %file.path().display(), "A credentials file is empty: the ingress refuses every request");
            Err(Denied::Unavailable)
        }
        Err(e) => {
            tracing::error!(error = %e, "Cannot read a credentials file: the ingress refuses every request");
            Err(Denied::Unavailable)
        }
    }
}

/// `Basic <base64 user:password>` or `Bearer <token>` (schemes in any case).
fn parse_authorization(value: &[u8]) -> Offered {
    if value.len() > MAX_AUTHORIZATION {
        return Offered::Nothing;
    }
    let Some(space) = value.iter().position(|b| *b == b' ') else {
        return Offered::Nothing;
    };
    let (scheme, rest) = (&value[..space], value[space + 1..].trim_ascii());
    if scheme.eq_ignore_ascii_case(b"bearer") && !rest.is_empty() {
        return Offered::Bearer(rest.to_vec());
    }
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Offered::Nothing;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
        return Offered::Nothing;
    };
    match decoded.iter().position(|b| *b == b':') {
        Some(colon) => Offered::Basic {
            user: decoded[..colon].to_vec(),
            password: decoded[colon + 1..].to_vec(),
        },
        None => Offered::Nothing,
    }
}

/// Equal, in time that does not depend on where they differ or on their lengths: their
/// SHA-256 digests are compared byte for byte, all of them.
fn same(a: &[u8], b: &[u8]) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a);
    let db = ring::digest::digest(&ring::digest::SHA256, b);
    let diff = da
        .as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Axum middleware: let the request through, or answer `401` (`503` when the secrets cannot
/// be read).
pub async fn require(State(auth): State<Arc<IngressAuth>>, req: Request, next: Next) -> Response {
    match auth.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(Denied::Unauthorized) => auth.unauthorized(),
        Err(Denied::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the ingress cannot read its credentials; see the worker's log\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests;
