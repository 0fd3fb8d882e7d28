//! The message the workload publishes for each call: as the ingress prepares it, or raw
//! (poison bytes; the hostile scenario's malformed and oversized messages, [`Raw`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use queue_worker::broker::{BrokerError, MSG_ID_HEADER, Outgoing};
use queue_worker::config::Config;
use queue_worker::flow::Limits;
use queue_worker::flow::limits::{
    ANNOTATION_BURST, ANNOTATION_MAX_CONCURRENCY, ANNOTATION_RATE, KEY_HEADER, VALUE_HEADER,
};
use queue_worker::ingress::{self, Ingress, Prepared, Submission};
use queue_worker::wire;

use crate::SimClock;
use crate::broker_host::CALL_HEADER;
use crate::plan::{CallPlan, GATEWAY, RECEIVER, RECEIVER_PORT, Raw, mix};

/// The body of every call the ingress prepares.
const BODY: &[u8] = b"{\"hello\":\"sim\"}";

/// The payload of the workload's plain poison calls.
const POISON: &[u8] = b"\x00 not a QueueRequest";

/// The header a [`Raw::BigHeader`] message is padded with.
const PADDING_HEADER: &str = "Sim-Padding";

/// The message for call `c`, as the ingress builds it (with the simulation's call header),
/// then shaped as its plan says: a poison call's payload is not a `QueueRequest` at all.
pub fn prepare(config: &Config, c: &CallPlan) -> Result<Prepared, String> {
    let mut prepared = through_ingress(config, c)?;
    prepared
        .outgoing
        .headers
        .push((CALL_HEADER.into(), c.id.clone()));
    let out = &mut prepared.outgoing;
    match &c.raw {
        None if c.poison => out.payload = Bytes::from_static(POISON),
        None => {}
        Some(raw) => shape(out, raw, &c.id)?,
    }
    Ok(prepared)
}

/// Give `prepared` the flow annotations of `limits` (as OpenFaaS copies a function's
/// annotations into each of its messages).
pub fn annotate(prepared: &mut Prepared, limits: &Limits) -> Result<(), String> {
    let out = &mut prepared.outgoing;
    let mut req = decoded(out)?;
    let mut set = |key: &str, value: String| {
        req.annotations.insert(key.to_string(), value);
    };
    if let Some(n) = limits.max_concurrency {
        set(ANNOTATION_MAX_CONCURRENCY, n.to_string());
    }
    if let Some(rate) = limits.rate {
        set(ANNOTATION_RATE, rate.to_string());
        set(ANNOTATION_BURST, limits.burst.to_string());
    }
    out.payload = Bytes::from(wire::encode(&req));
    Ok(())
}

/// Give `prepared` the flow key `key` and its limits, as a caller's headers would.
pub fn with_flow_key(prepared: &mut Prepared, key: &str, limits: &Limits) -> Result<(), String> {
    let out = &mut prepared.outgoing;
    let mut req = decoded(out)?;
    let mut value = Vec::new();
    if let Some(n) = limits.max_concurrency {
        value.push(format!("parallelism={n}"));
    }
    if let Some(rate) = limits.rate {
        value.push(format!("rate={rate},burst={}", limits.burst));
    }
    req.header.insert(KEY_HEADER.into(), vec![key.to_string()]);
    req.header
        .insert(VALUE_HEADER.into(), vec![value.join(",")]);
    out.payload = Bytes::from(wire::encode(&req));
    Ok(())
}

/// Call `c` through `ingress::prepare`.
fn through_ingress(config: &Config, c: &CallPlan) -> Result<Prepared, String> {
    let mut header: BTreeMap<String, Vec<String>> = BTreeMap::new();
    header.insert("X-Call-Id".into(), vec![c.id.clone()]);
    if c.callback {
        header.insert(
            "X-Callback-Url".into(),
            vec![format!("http://{RECEIVER}:{RECEIVER_PORT}/cb/{}", c.id)],
        );
    }
    let submission = Submission {
        function: c.function.clone(),
        path: String::new(),
        query: String::new(),
        header,
        host: GATEWAY.into(),
        body: Bytes::from_static(BODY),
    };
    ingress::prepare(config, &SimClock, submission).map_err(|e| format!("prepare {}: {e}", c.id))
}

/// Reshape the prepared message `out` of call `id` as `raw` says.
fn shape(out: &mut Outgoing, raw: &Raw, id: &str) -> Result<(), String> {
    match raw {
        Raw::Garbage { wire } => {
            let room = wire.saturating_sub(wire_size(&Outgoing {
                payload: Bytes::new(),
                ..out.clone()
            }));
            out.payload = noise(id, room.max(1));
        }
        Raw::Function { name, bare } => {
            let mut req = decoded(out)?;
            req.function = name.clone();
            out.payload = Bytes::from(wire::encode(&req));
            if *bare {
                out.subject = crate::plan::QUEUE.into();
            }
        }
        Raw::BigBody { wire } => pad_body(out, *wire)?,
        Raw::BigHeader { wire } => {
            let room = wire.saturating_sub(wire_size(out) + PADDING_HEADER.len() + 4);
            out.headers
                .push((PADDING_HEADER.into(), "p".repeat(room.max(1))));
        }
        Raw::LongSubject { len } => {
            out.subject = format!("{}.{}", crate::plan::QUEUE, "s".repeat(*len));
            out.payload = noise(id, 64);
        }
    }
    Ok(())
}

/// The `QueueRequest` the ingress put in `out`.
fn decoded(out: &Outgoing) -> Result<wire::QueueRequest, String> {
    wire::decode(&out.payload).map_err(|e| format!("the ingress's own message: {e}"))
}

/// Pad the body of the invocation in `out` until the message is as large as it can be
/// without passing `wire` bytes (the body is base64 in the message: 4 bytes per 3).
fn pad_body(out: &mut Outgoing, wire: usize) -> Result<(), String> {
    let mut req = decoded(out)?;
    let base = wire_size(out);
    let mut len = req.body.len() + wire.saturating_sub(base) / 4 * 3;
    loop {
        req.body = Bytes::from(vec![b'x'; len]);
        out.payload = Bytes::from(wire::encode(&req));
        if wire_size(out) <= wire || len < 3 {
            return Ok(());
        }
        len -= 3;
    }
}

/// `len` bytes that are not JSON (nor UTF-8), the same for the same call.
fn noise(id: &str, len: usize) -> Bytes {
    let seed = crate::plan::fnv(id);
    let mut bytes: Vec<u8> = (0..len as u64)
        .map(|i| mix(seed ^ (i / 8)).to_le_bytes()[(i % 8) as usize])
        .collect();
    bytes[0] = 0xff;
    Bytes::from(bytes)
}

/// The size nats-server compares with `max_payload`: the header block (with `Nats-Msg-Id`)
/// plus the payload, as the in-process broker counts it.
pub fn wire_size(out: &Outgoing) -> usize {
    let id = out.msg_id.as_ref().map(|id| (MSG_ID_HEADER, id.as_str()));
    let headers = out.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let block: usize = headers.chain(id).map(|(k, v)| k.len() + v.len() + 4).sum();
    match block {
        0 => out.payload.len(),
        _ => "NATS/1.0\r\n".len() + block + 2 + out.payload.len(),
    }
}

/// One attempt to publish: through the ingress code, or as it is for a raw message (creating
/// the streams when they are missing).
pub async fn publish(ingress: &Ingress, prepared: &Prepared, raw: bool) -> Result<(), BrokerError> {
    if !raw {
        return ingress::submit_once(ingress, prepared).await.map(|_| ());
    }
    match ingress.publisher.publish(prepared.outgoing.clone()).await {
        Err(BrokerError::NoStream { .. }) => {
            let _ = ingress.ensure_streams().await;
            ingress
                .publisher
                .publish(prepared.outgoing.clone())
                .await
                .map(|_| ())
        }
        r => r.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Behaviour, CallPlan};

    fn call(raw: Raw) -> CallPlan {
        CallPlan {
            id: "h01".into(),
            function: "fn-a".into(),
            at: Default::default(),
            behaviour: Behaviour::Ok { lo: 10, hi: 20 },
            callback: true,
            poison: false,
            raw: Some(raw),
            cancel_at: None,
        }
    }

    fn config() -> Config {
        (crate::scenarios::CRASH.build)(1, &Default::default()).worker_config()
    }

    /// Padded messages come as close to their size as the padding allows, never past it.
    #[test]
    fn padded_messages_fit_their_size() {
        for wire in [3_000, 3_584, 81_920] {
            for raw in [
                Raw::BigBody { wire },
                Raw::BigHeader { wire },
                Raw::Garbage { wire },
            ] {
                let out = prepare(&config(), &call(raw.clone()))
                    .expect("prepared")
                    .outgoing;
                let size = wire_size(&out);
                assert!(size <= wire && size + 4 > wire, "{raw:?}: {size}");
            }
        }
        let out = prepare(&config(), &call(Raw::BigBody { wire: 4_000 })).expect("prepared");
        let req = wire::decode(&out.outgoing.payload).expect("a valid invocation");
        assert_eq!(req.function, "fn-a");
        assert!(req.body.len() > 2_000);
    }

    /// A bad function name stays in the message as it is; the payload is still JSON.
    #[test]
    fn a_bad_function_name_is_published_as_it_is() {
        let raw = Raw::Function {
            name: "a\r\nb".into(),
            bare: true,
        };
        let out = prepare(&config(), &call(raw)).expect("prepared").outgoing;
        assert_eq!(out.subject, crate::plan::QUEUE);
        let json: serde_json::Value = serde_json::from_slice(&out.payload).expect("JSON");
        assert_eq!(json["Function"], "a\r\nb");
    }
}
