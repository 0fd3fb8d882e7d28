//! Go's `net/url` rules for the callback URL: printing, escaping and unescaping.

use std::borrow::Cow;

use super::*;

impl GoUrl {
    /// Like Go's `(*url.URL).String()`, except that userinfo is never written (the
    /// credentials are never kept). Uses `RawPath` when it is a valid encoding of `Path`,
    /// otherwise escapes `Path` the way Go's `EscapedPath` does; likewise for the fragment.
    pub fn to_url_string(&self) -> String {
        let mut buf = String::new();
        if !self.scheme.is_empty() {
            buf.push_str(&self.scheme);
            buf.push(':');
        }
        if !self.opaque.is_empty() {
            buf.push_str(&self.opaque);
        } else {
            let has_user = self.user.is_some();
            let has_authority_part = !self.scheme.is_empty() || !self.host.is_empty() || has_user;
            // OmitHost: `scheme:/path` had no authority at all, so no `//` is written.
            let omit_empty_host = self.omit_host && self.host.is_empty() && !has_user;
            if has_authority_part && !omit_empty_host {
                if !self.host.is_empty() || !self.path.is_empty() || has_user {
                    buf.push_str("//");
                }
                if !self.host.is_empty() {
                    buf.push_str(&go_escape(self.host.as_bytes(), Enc::Host));
                }
            }
            let path = self.escaped_path();
            if !path.is_empty() && !path.starts_with('/') && !self.host.is_empty() {
                buf.push('/');
            }
            if buf.is_empty() {
                // RFC 3986 §4.2: a first segment with a colon would read as a scheme.
                let first_segment = path.split('/').next().unwrap_or_default();
                if first_segment.contains(':') {
                    buf.push_str("./");
                }
            }
            buf.push_str(&path);
        }
        if self.force_query || !self.raw_query.is_empty() {
            buf.push('?');
            buf.push_str(&self.raw_query);
        }
        if !self.fragment.is_empty() {
            buf.push('#');
            buf.push_str(&self.escaped_fragment());
        }
        buf
    }

    /// What Go's `url.Parse` produces for this URL's text: lower-case `Scheme`, `Opaque`
    /// for rootless URLs, `Host` with its port, the decoded `Path` with `RawPath` only when
    /// the original escaping differs from Go's default escaping of `Path`, `RawQuery`
    /// (`ForceQuery` for a bare `?`), `Fragment`/`RawFragment` likewise, `OmitHost` for
    /// `scheme:/path`, and `User = Some` when the URL had a user name or password.
    ///
    /// Where Go keeps bytes that are not UTF-8 (`/%FF`), `Path` holds U+FFFD (as Go's JSON
    /// encoder would write) and `RawPath` keeps the original escaping.
    pub fn from_url(u: &url::Url) -> GoUrl {
        let mut go = GoUrl {
            scheme: u.scheme().to_ascii_lowercase(),
            ..GoUrl::default()
        };
        match u.query() {
            Some("") => go.force_query = true,
            Some(query) => query.clone_into(&mut go.raw_query),
            None => {}
        }
        if let Some(fragment) = u.fragment() {
            (go.fragment, go.raw_fragment) = split_escaped(fragment, Enc::Fragment);
        }
        if u.cannot_be_a_base() {
            u.path().clone_into(&mut go.opaque);
            return go;
        }
        if u.has_authority() {
            if !u.username().is_empty() || u.password().is_some() {
                go.user = Some(GoUserinfo);
            }
            let host = u.host_str().unwrap_or_default();
            go.host = percent_encoding::percent_decode_str(host)
                .decode_utf8_lossy()
                .into_owned();
            if let Some(port) = u.port() {
                go.host.push(':');
                go.host.push_str(&port.to_string());
            }
        } else if u.path().starts_with('/') {
            go.omit_host = true;
        }
        (go.path, go.raw_path) = split_escaped(u.path(), Enc::Path);
        go
    }

    fn escaped_path(&self) -> Cow<'_, str> {
        if let Some(raw) = valid_hint(&self.raw_path, &self.path, Enc::Path) {
            return Cow::Borrowed(raw);
        }
        if self.path == "*" {
            return Cow::Borrowed("*");
        }
        Cow::Owned(go_escape(self.path.as_bytes(), Enc::Path))
    }

    fn escaped_fragment(&self) -> Cow<'_, str> {
        match valid_hint(&self.raw_fragment, &self.fragment, Enc::Fragment) {
            Some(raw) => Cow::Borrowed(raw),
            None => Cow::Owned(go_escape(self.fragment.as_bytes(), Enc::Fragment)),
        }
    }
}

/// The `RawPath`/`RawFragment` hint, when it is a valid encoding of the decoded value
/// (compared after replacing non-UTF-8 bytes with U+FFFD, which is how such values are
/// stored here).
fn valid_hint<'a>(raw: &'a str, decoded: &str, mode: Enc) -> Option<&'a str> {
    if raw.is_empty() || !valid_encoded(raw, mode) {
        return None;
    }
    let unescaped = go_unescape(raw)?;
    (String::from_utf8_lossy(&unescaped) == decoded).then_some(raw)
}

/// Go's `setPath`/`setFragment`: (decoded value, raw hint or `""`).
fn split_escaped(escaped: &str, mode: Enc) -> (String, String) {
    let Some(bytes) = go_unescape(escaped) else {
        // Go's url.Parse rejects an invalid %-escape; keep the text as it is.
        return (escaped.to_owned(), escaped.to_owned());
    };
    let canonical = go_escape(&bytes, mode) == escaped;
    match String::from_utf8(bytes) {
        Ok(decoded) if canonical => (decoded, String::new()),
        Ok(decoded) => (decoded, escaped.to_owned()),
        Err(err) => (
            String::from_utf8_lossy(err.as_bytes()).into_owned(),
            escaped.to_owned(),
        ),
    }
}

/// The escaping contexts of Go's `net/url` used here.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Enc {
    Path,
    Host,
    Fragment,
}

/// Go's `shouldEscape` for the modes above.
fn should_escape(c: u8, mode: Enc) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if mode == Enc::Host
        && matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'"'
        )
    {
        return false;
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => return false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match mode {
            Enc::Path => return c == b'?',
            Enc::Fragment => return false,
            Enc::Host => {}
        },
        _ => {}
    }
    if mode == Enc::Fragment && matches!(c, b'!' | b'(' | b')' | b'*') {
        return false;
    }
    true
}

/// Go's `escape`: `%XX` with upper-case hex for every byte `should_escape` selects.
fn go_escape(s: &[u8], mode: Enc) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &c in s {
        if should_escape(c, mode) {
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 15)]));
        } else {
            // Every byte that is not escaped is ASCII.
            out.push(char::from(c));
        }
    }
    out
}

/// Go's `unescape` in path/fragment mode: `%XX` decoded, `+` kept; `None` for a bad escape.
fn go_unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Go's `validEncoded`: no byte that the mode would escape, sub-delims and `%` allowed.
fn valid_encoded(s: &str, mode: Enc) -> bool {
    s.bytes().all(|c| {
        matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'['
                | b']'
                | b'%'
        ) || !should_escape(c, mode)
    })
}
