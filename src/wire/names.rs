//! What a valid invocation names: a function the gateway can route, a sub-path that stays
//! under it, a callback URL, header keys as Go writes them. The ingress and `publish` refuse
//! what breaks these rules; the worker treats such a message as poison.

/// A name the rules refuse.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InvalidName {
    #[error("invalid function name {0:?}: expected letters, digits, '-', '_' and '.'")]
    Function(String),
    #[error("invalid path: {0}")]
    Path(String),
}

/// Split `name.namespace` on the last `.`, like the gateway's `getNameParts`.
///
/// `"dev.figlet.openfaas-fn"` gives `("dev.figlet", "openfaas-fn")`. Without a dot, with
/// the dot first (`".x"`, as Go), or with nothing after the dot (`"fn."` gives `"fn"`),
/// the namespace is `default_namespace`.
pub fn split_function<'a>(function: &'a str, default_namespace: &'a str) -> (&'a str, &'a str) {
    match function.rfind('.') {
        Some(dot) if dot > 0 => {
            let (name, namespace) = (&function[..dot], &function[dot + 1..]);
            if namespace.is_empty() {
                (name, default_namespace)
            } else {
                (name, namespace)
            }
        }
        _ => (function, default_namespace),
    }
}

/// Function names as the OpenFaaS gateway routes them: `[-a-zA-Z_0-9.]+`, not starting with a
/// dot (so `..` cannot climb out of `/function/`) and without two dots in a row (no gateway
/// routes such a name, and it cannot stand in a NATS subject).
pub fn validate_function_name(function: &str) -> Result<(), InvalidName> {
    let ok = !function.is_empty()
        && function.len() <= 253
        && !function.starts_with('.')
        && !function.contains("..")
        && function
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(InvalidName::Function(quoted(function)))
    }
}

/// The most of a refused name an error quotes (names come from clients: any size).
const QUOTED_CHARS: usize = 64;

/// `name`, or its start and its size when it is long.
pub(crate) fn quoted(name: &str) -> String {
    if name.chars().count() <= QUOTED_CHARS {
        return name.to_string();
    }
    let start: String = name.chars().take(QUOTED_CHARS).collect();
    format!("{start}... ({} bytes)", name.len())
}

/// A function sub-path must not contain `.`/`..` segments (they would leave the function's
/// URL space once a server normalises the path).
pub fn validate_path(path: &str) -> Result<(), InvalidName> {
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(InvalidName::Path(
            "'.' and '..' segments are not allowed".into(),
        ));
    }
    Ok(())
}

/// An absolute `http`/`https` URL with a host, that an HTTP request can be sent to (the HTTP
/// client takes fewer characters in a host than URL parsing does, and at most 64 KiB).
pub fn parse_callback_url(raw: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(raw).map_err(|e| format!("invalid callback URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "invalid callback URL: scheme {:?} is not http or https",
            quoted(u.scheme())
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("invalid callback URL: no host".into());
    }
    if let Err(e) = u.as_str().parse::<http::Uri>() {
        return Err(format!("invalid callback URL: {e}"));
    }
    Ok(u)
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-call-id` → `X-Call-Id`. Names with characters
/// outside the token set are returned unchanged, as Go does.
pub fn canonical_header_key(name: &str) -> String {
    let valid = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_keys_like_go() {
        assert_eq!(canonical_header_key("x-call-id"), "X-Call-Id");
        assert_eq!(canonical_header_key("content-type"), "Content-Type");
        assert_eq!(canonical_header_key("X-CALLBACK-URL"), "X-Callback-Url");
        assert_eq!(canonical_header_key("bad key"), "bad key");
    }

    #[test]
    fn function_names() {
        for good in [
            "figlet",
            "figlet.openfaas-fn",
            "dev.figlet.ns",
            "a_b-1",
            "fn.",
        ] {
            assert_eq!(validate_function_name(good), Ok(()), "{good}");
        }
        for bad in [
            "", ".x", "..", "../x", "a..b", "fn..", "a b", "a\tb", "a/b", "a*",
        ] {
            assert!(validate_function_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_function_name(&"f".repeat(253)).is_ok());
        let long = "f".repeat(5_000);
        let Err(InvalidName::Function(quoted)) = validate_function_name(&long) else {
            panic!("5,000 characters is not a name");
        };
        assert_eq!(quoted, format!("{}... (5000 bytes)", "f".repeat(64)));
    }

    /// Found by tests/fuzz: URLs the url crate takes but an HTTP request cannot be sent to, and
    /// a long scheme quoted whole.
    #[test]
    fn callback_urls_must_be_requestable_and_refusals_short() {
        for bad in ["http://a{b}/", "http://a`b/", "http://a\"b/"] {
            assert!(parse_callback_url(bad).is_err(), "{bad}");
        }
        let long = format!("http://host/{}", "p".repeat(70_000));
        assert_eq!(
            parse_callback_url(&long),
            Err("invalid callback URL: uri too long".into())
        );
        let scheme = format!("{}://host/", "h".repeat(5_000));
        let err = parse_callback_url(&scheme).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }
}
