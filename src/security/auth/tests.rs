use std::path::Path;

use super::*;

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn headers(authorization: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(a) = authorization {
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
    }
    h
}

fn auth_in(dir: &Path, basic_auth: bool, token: bool) -> IngressAuth {
    std::fs::write(dir.join(USER_FILE), "admin\n").unwrap();
    std::fs::write(dir.join(PASSWORD_FILE), "s3cret pass\n").unwrap();
    std::fs::write(dir.join("token"), "tok-123\n").unwrap();
    let token_file = dir.join("token");
    let basic_dir = basic_auth.then_some(dir);
    IngressAuth::new(basic_dir, token.then_some(token_file.as_path())).unwrap()
}

#[test]
fn open_without_settings() {
    assert!(IngressAuth::new(None, None).is_none());
}

#[test]
fn basic_credentials_must_match_both_parts() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_in(dir.path(), true, false);
    auth.preload().unwrap();
    assert_eq!(
        auth.check(&headers(Some(&basic("admin", "s3cret pass")))),
        Ok(())
    );
    assert_eq!(
        auth.check(&headers(
            Some(&basic("admin", "s3cret pass"))
                .map(|s| s.replace("Basic", "bAsIc"))
                .as_deref()
        )),
        Ok(()),
        "the scheme is case-insensitive"
    );
    for wrong in [
        Some(basic("admin", "s3cret")),
        Some(basic("Admin", "s3cret pass")),
        Some(basic("admin", "s3cret pass ")),
        Some(basic("", "")),
        Some("Basic !!!".to_string()),
        Some("Basic".to_string()),
        Some("Bearer tok-123".to_string()),
        None,
    ] {
        assert_eq!(
            auth.check(&headers(wrong.as_deref())),
            Err(Denied::Unauthorized),
            "{wrong:?}"
        );
    }
}

#[test]
fn a_bearer_token_and_basic_auth_may_both_be_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_in(dir.path(), true, true);
    assert_eq!(auth.check(&headers(Some("Bearer tok-123"))), Ok(()));
    assert_eq!(
        auth.check(&headers(Some(&basic("admin", "s3cret pass")))),
        Ok(())
    );
    assert_eq!(
        auth.check(&headers(Some("Bearer tok-1234"))),
        Err(Denied::Unauthorized)
    );
    assert_eq!(auth.challenges().len(), 2);
    let only_token = auth_in(dir.path(), false, true);
    assert_eq!(
        only_token.check(&headers(Some(&basic("admin", "s3cret pass")))),
        Err(Denied::Unauthorized)
    );
}

#[test]
fn missing_or_empty_secrets_fail_closed_and_are_found_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_in(dir.path(), false, true);
    std::fs::write(dir.path().join("token"), "\n").unwrap();
    assert!(auth.preload().unwrap_err().contains("empty"));
    assert_eq!(
        auth.check(&headers(Some("Bearer "))),
        Err(Denied::Unauthorized)
    );
    assert_eq!(
        auth.check(&headers(Some("Bearer x"))),
        Err(Denied::Unavailable)
    );
    let absent_dir = dir.path().join("absent");
    let absent = IngressAuth::new(Some(&absent_dir), None).unwrap();
    assert!(absent.preload().unwrap_err().contains(USER_FILE));
}

#[test]
fn equal_is_exact() {
    assert!(same(b"abc", b"abc"));
    assert!(!same(b"abc", b"abd"));
    assert!(!same(b"abc", b"abcd"));
    assert!(same(b"", b""));
}
