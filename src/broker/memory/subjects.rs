//! NATS subjects and names: validity, matching (`*`, `>`) and overlap, as nats-server decides
//! them.

/// Whether `subject` is valid: non-empty tokens without whitespace; with `wildcards`, `*`
/// tokens and a final `>` token are allowed.
pub(super) fn valid_subject(subject: &str, wildcards: bool) -> bool {
    if subject.is_empty() {
        return false;
    }
    let mut tokens = subject.split('.').peekable();
    while let Some(t) = tokens.next() {
        if t.is_empty() || t.chars().any(char::is_whitespace) {
            return false;
        }
        match t {
            ">" if !wildcards || tokens.peek().is_some() => return false,
            "*" if !wildcards => return false,
            _ => {}
        }
    }
    true
}

/// Whether the literal `subject` matches `pattern` (`*`: one token, `>`: one or more).
pub(super) fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every subject `a` matches is matched by `b` (nats-server's `subjectIsSubsetMatch`).
pub(super) fn subject_is_subset(a: &str, b: &str) -> bool {
    let ta: Vec<&str> = a.split('.').collect();
    let tb: Vec<&str> = b.split('.').collect();
    for (i, t2) in tb.iter().enumerate() {
        let Some(t1) = ta.get(i) else {
            return false;
        };
        if *t2 == ">" {
            return true;
        }
        if *t1 == ">" {
            return false;
        }
        if *t1 == "*" {
            if *t2 != "*" {
                return false;
            }
            continue;
        }
        if *t2 != "*" && t1 != t2 {
            return false;
        }
    }
    ta.len() == tb.len()
}

/// Whether some subject matches both patterns (nats-server's `SubjectsCollide`).
pub(super) fn subjects_collide(a: &str, b: &str) -> bool {
    let ta: Vec<&str> = a.split('.').collect();
    let tb: Vec<&str> = b.split('.').collect();
    for (x, y) in ta.iter().zip(&tb) {
        if *x == ">" || *y == ">" {
            return true;
        }
        if *x == "*" || *y == "*" || x == y {
            continue;
        }
        return false;
    }
    ta.len() == tb.len()
}

pub(super) fn has_wildcard(subject: &str) -> bool {
    subject.split('.').any(|t| t == "*" || t == ">")
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

pub(super) fn valid_bucket(bucket: &str) -> bool {
    !bucket.is_empty()
        && bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(super) fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_' | '=' | '.'))
}
