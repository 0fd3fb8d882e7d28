//! Texts that may carry secrets, made fit for a log line: every URL in them loses its
//! user-info (`user:password@`) and its query, and a long text is cut. For error texts from
//! libraries (reqwest, async-nats) that quote the URL they were given.

/// Longest text kept, in bytes; past it the text is cut (at a character boundary) and `…`
/// added.
pub const MAX_TEXT: usize = 512;

/// Longest URL kept whole in a text; past it the URL is cut.
const MAX_URL: usize = 200;

/// `text` with every `scheme://…` URL redacted and the whole cut to [`MAX_TEXT`].
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT + 4));
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = scheme_start(rest, at);
        out.push_str(&rest[..start]);
        let end = url_end(rest, at + 3);
        out.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    cut(out, MAX_TEXT)
}

/// One URL without user-info, query or fragment, cut to [`MAX_URL`].
pub fn url(u: &str) -> String {
    let Some(sep) = u.find("://") else {
        return cut(u.to_string(), MAX_URL);
    };
    let (scheme, after) = (&u[..sep], &u[sep + 3..]);
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..authority_end];
    // The last `@` ends the user-info (a password may hold one).
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path_end = after.find(['?', '#']).unwrap_or(after.len());
    let path = &after[authority_end..path_end.max(authority_end)];
    let mut out = format!("{scheme}://{host}{path}");
    if path_end < after.len() && after[path_end..].starts_with('?') {
        out.push_str("?…");
    }
    cut(out, MAX_URL)
}

/// `s` as it is when short (no copy), else cut to [`MAX_URL`]: for a path on the hot path.
pub fn short(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_URL {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(cut(s.to_string(), MAX_URL))
    }
}

/// Where the scheme before `://` at `sep` begins.
fn scheme_start(s: &str, sep: usize) -> usize {
    s[..sep]
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        .last()
        .map_or(sep, |(i, _)| i)
}

/// Where the URL that continues at `from` ends: at whitespace, a quote or a closing bracket
/// that is not part of it.
fn url_end(s: &str, from: usize) -> usize {
    s[from..]
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | '<' | ','))
        .map_or(s.len(), |i| from + i)
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_queries() {
        let t = text(
            "error sending request for url (http://user:pw@cb.example:8443/hook?token=abc) : \
             nats://a:b@n1:4222,nats://tok@n2 and https://h/p#frag",
        );
        assert_eq!(
            t,
            "error sending request for url (http://cb.example:8443/hook?…) : \
             nats://n1:4222,nats://n2 and https://h/p"
        );
        for secret in ["pw", "token=abc", "a:b", "tok@"] {
            assert!(!t.contains(secret), "{secret} in {t}");
        }
        assert_eq!(url("http://u:p@ss@h/x?y=1"), "http://h/x?…");
        assert_eq!(url("http://h?x"), "http://h?…");
    }

    #[test]
    fn long_texts_and_urls_are_cut() {
        let long = format!("failed: http://h/{}", "a".repeat(100_000));
        let t = text(&long);
        assert!(t.len() < 220, "{}", t.len());
        assert!(t.ends_with('…'));
        let t = text(&"é".repeat(1000));
        assert!(t.len() <= MAX_TEXT + 3);
        assert_eq!(text("no url here"), "no url here");
    }
}
