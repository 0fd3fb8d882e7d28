//! The body of a call whose message carries only its name (the claim check, see
//! [`crate::claim_check`]): read back from the queue's object bucket before each attempt, and
//! deleted once the call has ended without a dead letter.

use std::time::Duration;

use bytes::Bytes;

use super::Context;
use super::call::Call;
use crate::broker::{BrokerError, Delivery};
use crate::claim_check;

/// How long a call whose body cannot be read now waits before it is tried again.
pub const UNREADABLE_RETRY: Duration = Duration::from_secs(2);

/// Why a call's body is not there.
pub enum Missing {
    /// The object is gone (expired or deleted): the call can never run. One line, for the
    /// dead letter.
    Gone(String),
    /// The object store did not answer: try again later.
    Unreadable(BrokerError),
}

/// `http_req` with the call's body in it, read from the object store when the message names
/// one; unchanged otherwise.
pub async fn fill(
    ctx: &Context,
    call: &Call<'_>,
    http_req: http::Request<Bytes>,
) -> Result<http::Request<Bytes>, Missing> {
    let Some(name) = claim_check::reference(&call.delivery.headers) else {
        return Ok(http_req);
    };
    let queue = &ctx.config.queue_name;
    match claim_check::fetch(ctx.broker.as_ref(), queue, name).await {
        Ok(Some(body)) => {
            let (parts, _) = http_req.into_parts();
            Ok(http::Request::from_parts(parts, body))
        }
        Ok(None) => Err(Missing::Gone(format!(
            "request body object {name} is not in {} (expired or deleted)",
            claim_check::bucket(queue)
        ))),
        Err(e) => Err(Missing::Unreadable(e)),
    }
}

/// Whether the call's status says it has ended: a delivery of it that lost its lease finds
/// the body deleted by the delivery that finished it.
pub async fn ended_elsewhere(ctx: &Context, call: &Call<'_>) -> bool {
    if ctx.calls.is_none() {
        return false;
    }
    let read = crate::status::read(ctx.broker.as_ref(), &ctx.config.queue_name, &call.call_id);
    matches!(read.await, Ok(Some(status)) if status.state.is_terminal())
}

/// Delete the body object of a delivery that ended (acked), if it has one.
pub async fn discard(ctx: &Context, delivery: &Delivery) {
    if let Some(name) = claim_check::reference(&delivery.headers) {
        claim_check::discard(ctx.broker.as_ref(), &ctx.config.queue_name, name).await;
    }
}
