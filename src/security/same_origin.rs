//! A browser that holds the ingress's basic-auth credentials (someone used the web console)
//! sends them with any request a page asks for, another site's page too. So the operator's
//! routes refuse a request that changes something when the browser says it comes from another
//! site: `Sec-Fetch-Site` other than `same-origin` or `none`, or, from browsers without it, an
//! `Origin` whose host is not the `Host` asked for. Tools (`curl`, the CLI, scripts) send
//! neither header and are let through.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Axum middleware: `403` for a cross-site request that is not a read.
pub async fn refuse_cross_site(req: Request, next: Next) -> Response {
    if is_cross_site(req.method(), req.headers()) {
        let body =
            "{\"error\":\"refused: a request from another site may not change anything here\"}\n";
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
    }
    next.run(req).await
}

/// A request that would change something, sent by a browser for another site's page.
pub fn is_cross_site(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).map(|h| h.as_bytes());
    origin_host(origin.as_bytes()) != host
}

/// `host[:port]` of an `Origin` (`scheme://host[:port]`); `None` for `null` or anything else.
fn origin_host(origin: &[u8]) -> Option<&[u8]> {
    let text = std::str::from_utf8(origin).ok()?;
    let (_, rest) = text.split_once("://")?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn tools_and_reads_pass() {
        assert!(!is_cross_site(
            &Method::POST,
            &headers(&[("host", "q:8080")])
        ));
        let other = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(!is_cross_site(&Method::GET, &other));
    }

    #[test]
    fn the_browser_s_own_word_decides_when_it_gives_one() {
        for (site, refused) in [
            ("same-origin", false),
            ("none", false),
            ("same-site", true),
            ("cross-site", true),
        ] {
            let mut h = headers(&[("host", "q:8080"), ("origin", "http://q:8080")]);
            h.insert("sec-fetch-site", HeaderValue::from_static(site));
            assert_eq!(is_cross_site(&Method::POST, &h), refused, "{site}");
        }
    }

    #[test]
    fn without_it_the_origin_must_name_the_host() {
        let same = headers(&[("host", "q:8080"), ("origin", "http://q:8080")]);
        assert!(!is_cross_site(&Method::DELETE, &same));
        let other = headers(&[("host", "q:8080"), ("origin", "https://evil.example")]);
        assert!(is_cross_site(&Method::PUT, &other));
        let null = headers(&[("host", "q:8080"), ("origin", "null")]);
        assert!(is_cross_site(&Method::POST, &null));
    }
}
