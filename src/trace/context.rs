//! W3C trace context (`traceparent`): which trace a span belongs to, its id, and whether the
//! trace is sampled. Pure: parsing, formatting, and span ids derived from what a call carries,
//! so that every replica names the spans of one call alike.

use std::fmt::Write as _;

/// The header that carries a span's context, as the message's `Header` spells it.
pub const TRACEPARENT: &str = "Traceparent";

/// The sampled bit of the trace flags.
const SAMPLED: u8 = 0x01;

/// Where a span sits: its trace, its own id, and the trace's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl SpanContext {
    /// A `traceparent` value, when valid: version 2 hex digits (not `ff`), a trace id of 32 and
    /// a span id of 16 lower-case hex digits, neither all zeros, and 2 hex digits of flags. A
    /// later version may carry more after a `-`.
    pub fn parse(value: &str) -> Option<SpanContext> {
        let value = value.trim();
        let b = value.as_bytes();
        if !value.is_ascii() || b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        let longer_allowed = version != 0 && (b.len() == 55 || b[55] == b'-');
        if version == 0xff || (b.len() != 55 && !longer_allowed) {
            return None;
        }
        let trace_id: [u8; 16] = hex_bytes(&value[3..35])?;
        let span_id: [u8; 8] = hex_bytes(&value[36..52])?;
        let flags = hex_byte(&value[53..55])?;
        let zero = trace_id.iter().all(|x| *x == 0) || span_id.iter().all(|x| *x == 0);
        (!zero).then_some(SpanContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The `traceparent` value of this span (version `00`).
    pub fn header(&self) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &self.span_id);
        let _ = write!(out, "-{:02x}", self.flags);
        out
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// A span of the same trace with id `span_id`.
    pub fn child(&self, span_id: [u8; 8]) -> SpanContext {
        SpanContext { span_id, ..*self }
    }

    /// A new trace with random ids, marked sampled (the sampler may say otherwise).
    pub fn new_root() -> SpanContext {
        SpanContext {
            trace_id: nonzero(rand::random()),
            span_id: random_span_id(),
            flags: SAMPLED,
        }
    }

    /// This span with its sampled flag set to `sampled` (other flags kept).
    pub fn with_sampled(self, sampled: bool) -> SpanContext {
        let flags = match sampled {
            true => self.flags | SAMPLED,
            false => self.flags & !SAMPLED,
        };
        SpanContext { flags, ..self }
    }

    /// The trace of a call whose message carries no `traceparent`: derived from its call id,
    /// so that every attempt, on any replica, joins the same trace; marked sampled.
    pub fn of_call(call_id: &str) -> SpanContext {
        let digest = sha256(&[b"queue-worker trace", call_id.as_bytes()]);
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(&digest[..16]);
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&digest[16..24]);
        SpanContext {
            trace_id: nonzero(trace_id),
            span_id: nonzero(span_id),
            flags: SAMPLED,
        }
    }

    /// The id of step `step` number `n` under this span (an attempt, the wait, the callback):
    /// the same on every replica, so an attempt can link to the one before without storing it.
    pub fn derived(&self, step: &str, n: u32) -> SpanContext {
        let digest = sha256(&[
            &self.trace_id,
            &self.span_id,
            step.as_bytes(),
            &n.to_be_bytes(),
        ]);
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&digest[..8]);
        self.child(nonzero(span_id))
    }
}

/// A random span id (never all zeros).
pub fn random_span_id() -> [u8; 8] {
    nonzero(rand::random())
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `id`, with its last byte set when it is all zeros (an invalid id).
fn nonzero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id.iter().all(|x| *x == 0) {
        id[N - 1] = 1;
    }
    id
}

fn hex_byte(s: &str) -> Option<u8> {
    let b = s.as_bytes();
    Some(hex_digit(b[0])? << 4 | hex_digit(b[1])?)
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        out[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}

/// A lower-case hex digit (W3C allows no upper case).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let c = SpanContext::parse(VALID).unwrap();
        assert_eq!(c.trace_id[0], 0x4b);
        assert_eq!(c.span_id[7], 0xb7);
        assert!(c.sampled());
        assert_eq!(c.header(), VALID);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(SpanContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_may_carry_more() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-next";
        let c = SpanContext::parse(later).unwrap();
        assert!(!c.sampled());
        assert_eq!(
            c.header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
    }

    #[test]
    fn derived_ids_are_stable_and_distinct_per_step() {
        let c = SpanContext::parse(VALID).unwrap();
        assert_eq!(c.derived("attempt", 1), c.derived("attempt", 1));
        assert_ne!(c.derived("attempt", 1), c.derived("attempt", 2));
        assert_ne!(c.derived("attempt", 1), c.derived("callback", 1));
        assert_eq!(c.derived("attempt", 1).trace_id, c.trace_id);
        assert_eq!(SpanContext::of_call("a"), SpanContext::of_call("a"));
        assert_ne!(
            SpanContext::of_call("a").trace_id,
            SpanContext::of_call("b").trace_id
        );
    }
}
