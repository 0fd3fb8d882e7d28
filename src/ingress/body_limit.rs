//! The largest body the ingress accepts is one NATS can store: the message carries the body
//! base64-encoded (4 bytes for every 3) in JSON, with the request's head (path, query,
//! headers; Go's JSON escaping writes `<`, `>`, `&` as six bytes each), and NATS refuses a
//! message over its `max_payload`. With the head bounded ([`HEAD_LIMIT`]), every body up to
//! [`largest_body`] fits, so `max_body_bytes` is an exact promise: the default is lowered to it
//! at start, and a `max_body_bytes` set above it stops the start (a `413` from NATS for a body
//! under the documented limit used to surprise callers).

/// Bytes of a request's head (request line and headers) the ingress reads; larger heads are
/// answered `431`.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// The rest of a message: its JSON keys, `X-Call-Id`, `X-Start-Time`, host, the NATS headers.
const SKELETON: usize = 4 * 1024;
/// The most one head byte can become in the message (Go's `\u003c` for `<`).
const ESCAPED: usize = 6;

/// The largest body whose message always fits `max_payload`, whatever head comes with it.
pub fn largest_body(max_payload: usize) -> usize {
    let room = max_payload.saturating_sub(ESCAPED * HEAD_LIMIT + SKELETON);
    room / 4 * 3
}

/// The limit of bodies carried in the message (`setting`: `max_body_bytes`, or
/// `payload_offload_bytes` when larger bodies go to the object store) to serve with:
/// `configured`, lowered to [`largest_body`] when it is the default (`is_default`); `Err` when
/// a value set by the operator does not fit.
pub fn fit(
    setting: &str,
    configured: usize,
    is_default: bool,
    max_payload: Option<usize>,
) -> Result<usize, String> {
    let Some(max_payload) = max_payload else {
        return Ok(configured);
    };
    let largest = largest_body(max_payload);
    if configured <= largest {
        Ok(configured)
    } else if is_default {
        Ok(largest)
    } else {
        Err(format!(
            "{setting}={configured} cannot be stored: NATS takes messages of at most \
             {max_payload} bytes (max_payload), which holds bodies of at most {largest} bytes \
             (base64 in JSON, with a request head of up to {HEAD_LIMIT} bytes); \
             set {setting} to {largest} or less, or raise the server's max_payload"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_body_leaves_room_for_base64_and_the_head() {
        let mib = 1024 * 1024;
        let largest = largest_body(mib);
        assert_eq!(largest, 709_632);
        assert!(largest.div_ceil(3) * 4 + ESCAPED * HEAD_LIMIT + SKELETON <= mib);
        assert_eq!(largest_body(0), 0);
    }

    #[test]
    fn the_default_is_lowered_and_a_setting_too_large_refused() {
        let mib = Some(1024 * 1024);
        let largest = largest_body(1024 * 1024);
        assert_eq!(fit("max_body_bytes", 1000, false, mib), Ok(1000));
        assert_eq!(fit("max_body_bytes", 786_432, true, mib), Ok(largest));
        let err = fit("max_body_bytes", 786_432, false, mib).unwrap_err();
        assert!(
            err.contains("max_body_bytes=786432") && err.contains(&largest.to_string()),
            "{err}"
        );
        assert_eq!(
            fit("max_body_bytes", 786_432, false, None),
            Ok(786_432),
            "no server to ask"
        );
    }
}
