//! The key-value key of a call id. Ids of letters, digits, `-` and `_` (UUIDs, most callers'
//! ids) are their own key; any other id (the ingress accepts up to 128 printable ASCII
//! characters) is stored under `b64.` and its URL-safe base64, which no plain id can equal
//! (a plain id has no `.`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The key of `call_id` in a calls bucket; `None` for an empty id (a call without one has no
/// status).
pub fn of(call_id: &str) -> Option<String> {
    if call_id.is_empty() {
        return None;
    }
    let plain = call_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    Some(if plain {
        call_id.to_string()
    } else {
        format!("b64.{}", URL_SAFE_NO_PAD.encode(call_id))
    })
}

/// The call id stored under `key` (the inverse of [`of`]); `None` for a key [`of`] never makes.
pub fn call_id(key: &str) -> Option<String> {
    match key.strip_prefix("b64.") {
        Some(encoded) => {
            let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(key.to_string()).filter(|k| !k.is_empty() && !k.contains('.')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_are_their_own_keys_and_others_are_encoded_apart() {
        assert_eq!(
            of("5b0f3c9e-1d2a-4c1e-9f00-aa11bb22cc33").as_deref(),
            Some("5b0f3c9e-1d2a-4c1e-9f00-aa11bb22cc33")
        );
        assert_eq!(of("job_42").as_deref(), Some("job_42"));
        assert_eq!(of(""), None);
        let odd = ["a.b", "a/b", "*", ">", "a b", "x:y@z", "ü", "."];
        let keys: Vec<String> = odd.iter().map(|id| of(id).unwrap()).collect();
        for (id, key) in odd.iter().zip(&keys) {
            assert!(key.starts_with("b64."), "{id:?} → {key}");
            let body = &key[4..];
            assert!(
                body.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert!(!key.ends_with('.'));
        }
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
        for id in odd.iter().chain(&["job_42", "5b0f3c9e-1d2a"]) {
            assert_eq!(call_id(&of(id).unwrap()).as_deref(), Some(*id), "{id:?}");
        }
        assert_eq!(call_id("b64.!!"), None);
    }
}
