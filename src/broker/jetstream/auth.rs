//! How the worker proves who it is to NATS: a `.creds` file, a user and password, a token, or
//! credentials written into the server URL (`nats://user:pass@host`, `nats://token@host`).
//!
//! Secrets stay in files until a connection is attempted: they are read then (so a rotated
//! secret is picked up by the next attempt), handed to async-nats and never logged. Server
//! URLs are stripped of their credentials before async-nats or a log line sees them.

use std::path::{Path, PathBuf};

use async_nats::ConnectOptions;
use percent_encoding::percent_decode_str;

use super::refusal::Refusal;

/// The way to authenticate to NATS, as configured (paths, not secrets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// Nothing configured: credentials in the URL are used when there are some.
    #[default]
    None,
    /// A `.creds` file: user JWT and nkey seed (`nats_credentials_file`).
    CredentialsFile(PathBuf),
    /// A user name and the file holding its password (`nats_user`, `nats_password_file`).
    UserPassword {
        user: String,
        password_file: PathBuf,
    },
    /// The file holding a token (`nats_token_file`).
    TokenFile(PathBuf),
}

/// Credentials written into a server URL, already percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum UrlCredentials {
    /// `nats://user:pass@host`.
    UserPassword { user: String, password: String },
    /// `nats://token@host`.
    Token(String),
}

impl std::fmt::Debug for UrlCredentials {
    /// Names the kind only: the secret is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlCredentials::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            UrlCredentials::Token(_) => write!(f, "Token(***)"),
        }
    }
}

/// The server URLs without credentials, and the credentials of the first URL that had some.
pub(super) struct SplitUrls {
    /// Safe to log and to hand to async-nats.
    pub(super) urls: Vec<String>,
    pub(super) credentials: Option<UrlCredentials>,
}

/// Separates the credentials from `urls`; a URL that does not parse is kept as it is (async-nats
/// reports it).
pub(super) fn split_credentials(urls: &[String]) -> SplitUrls {
    let mut split = SplitUrls {
        urls: Vec::with_capacity(urls.len()),
        credentials: None,
    };
    for raw in urls {
        let Ok(mut url) = url::Url::parse(raw) else {
            split.urls.push(raw.clone());
            continue;
        };
        let found = credentials_of(&url);
        if split.credentials.is_none() {
            split.credentials = found;
        }
        // Both only fail for URLs that cannot have credentials, which then have none to remove.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        split
            .urls
            .push(url.as_str().trim_end_matches('/').to_string());
    }
    split
}

/// The credentials written into `url`, if any.
fn credentials_of(url: &url::Url) -> Option<UrlCredentials> {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let user = decode(url.username());
    match url.password() {
        Some(password) => Some(UrlCredentials::UserPassword {
            user,
            password: decode(password),
        }),
        None if user.is_empty() => None,
        None => Some(UrlCredentials::Token(user)),
    }
}

impl NatsAuth {
    /// The setting(s) to fix when NATS refuses these credentials, `None` when none are set;
    /// `from_url` tells whether the URL carried some.
    pub(super) fn settings(&self, from_url: bool) -> Option<&'static str> {
        match self {
            NatsAuth::None if from_url => Some("the credentials in nats_url"),
            NatsAuth::None => None,
            NatsAuth::CredentialsFile(_) => Some("nats_credentials_file"),
            NatsAuth::UserPassword { .. } => Some("nats_user/nats_password_file"),
            NatsAuth::TokenFile(_) => Some("nats_token_file"),
        }
    }

    /// Connect options carrying these credentials (or `from_url`'s when none are configured),
    /// the secret files read now.
    pub(super) async fn options(
        &self,
        from_url: Option<&UrlCredentials>,
    ) -> Result<ConnectOptions, Refusal> {
        let options = ConnectOptions::new();
        match self {
            NatsAuth::CredentialsFile(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| Refusal::file("nats_credentials_file", path, e)),
            NatsAuth::UserPassword {
                user,
                password_file,
            } => {
                let password = read_secret("nats_password_file", password_file)?;
                Ok(options.user_and_password(user.clone(), password))
            }
            NatsAuth::TokenFile(path) => {
                let token = read_secret("nats_token_file", path)?;
                Ok(options.token(token))
            }
            NatsAuth::None => Ok(match from_url {
                Some(UrlCredentials::UserPassword { user, password }) => {
                    options.user_and_password(user.clone(), password.clone())
                }
                Some(UrlCredentials::Token(token)) => options.token(token.clone()),
                None => options,
            }),
        }
    }
}

/// The secret in the file `path` of `setting`, without the line ending editors and `echo` add.
fn read_secret(setting: &'static str, path: &Path) -> Result<String, Refusal> {
    let text = std::fs::read_to_string(path).map_err(|e| Refusal::file(setting, path, e))?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(Refusal::file(setting, path, "the file is empty"));
    }
    Ok(secret.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(urls: &[&str]) -> SplitUrls {
        split_credentials(&urls.iter().map(|u| u.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn urls_lose_their_credentials_and_the_first_ones_are_kept() {
        let s = split(&[
            "nats://127.0.0.1:4222",
            "nats://worker:p%40ss@a:4222",
            "tls://other:x@b:4223",
        ]);
        assert_eq!(
            s.urls,
            ["nats://127.0.0.1:4222", "nats://a:4222", "tls://b:4223"]
        );
        assert_eq!(
            s.credentials,
            Some(UrlCredentials::UserPassword {
                user: "worker".into(),
                password: "p@ss".into()
            })
        );
    }

    #[test]
    fn a_user_name_alone_is_a_token() {
        let s = split(&["nats://s3cr3t@127.0.0.1:4222"]);
        assert_eq!(s.urls, ["nats://127.0.0.1:4222"]);
        assert_eq!(s.credentials, Some(UrlCredentials::Token("s3cr3t".into())));
        assert_eq!(split(&["nats://h:1"]).credentials, None);
    }

    #[test]
    fn secrets_are_never_printed() {
        let token = format!("{:?}", UrlCredentials::Token("s3cr3t".into()));
        let password = format!(
            "{:?}",
            UrlCredentials::UserPassword {
                user: "u".into(),
                password: "s3cr3t".into()
            }
        );
        assert!(!token.contains("s3cr3t") && !password.contains("s3cr3t"));
    }

    #[test]
    fn a_secret_file_loses_its_line_ending_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "pa ss\r\n").unwrap();
        assert_eq!(read_secret("nats_password_file", &path).unwrap(), "pa ss");
        std::fs::write(&path, "\n").unwrap();
        let empty = read_secret("nats_password_file", &path).unwrap_err();
        assert!(
            empty.to_string().starts_with("nats_password_file: "),
            "{empty}"
        );
        let missing = read_secret("nats_token_file", &dir.path().join("none")).unwrap_err();
        assert!(missing.to_string().contains("nats_token_file"), "{missing}");
    }
}
