//! The variables of callbacks and of the ingress: where callbacks may go, the bodies it takes,
//! and what one client may take of it.

use super::{Validator, path, to_u32, to_usize};
use crate::config::bound::Bound;
use crate::config::*;

impl Validator {
    /// Callbacks, and what the ingress takes.
    pub(super) fn read_callbacks_and_ingress(&mut self, args: &ConfigArgs, c: &mut Config) {
        let n = &args.callback_retries;
        c.callback_retries = to_u32(self.uint("callback_retries", n, 3, 0, 100, "a whole number"));
        c.callback_signing_secret_file = path(&args.callback_signing_secret_file);
        c.callback_allowed_hosts = self.allowed_hosts(&args.callback_allowed_hosts);
        let bytes = self.uint(
            "max_body_bytes",
            &args.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES as u64,
            1,
            64 * 1024 * 1024,
            "a whole number of bytes",
        );
        c.max_body_bytes = to_usize(bytes);
        let offload = self.uint(
            "payload_offload_bytes",
            &args.payload_offload_bytes,
            DEFAULT_PAYLOAD_OFFLOAD_BYTES as u64,
            0,
            64 * 1024 * 1024,
            "a whole number of bytes (0: never)",
        );
        c.payload_offload_bytes = to_usize(offload);
        self.read_ingress_limits(args, c);
        c.basic_auth = self.boolean("basic_auth", &args.basic_auth, c.basic_auth);
        if let Some(p) = path(&args.secret_mount_path) {
            c.secret_mount_path = p;
        }
        c.api_token_file = path(&args.api_token_file);
    }

    /// What one client may take of the ingress: connections, time, memory.
    fn read_ingress_limits(&mut self, args: &ConfigArgs, c: &mut Config) {
        let n = &args.ingress_max_connections;
        let connections = self.uint(
            "ingress_max_connections",
            n,
            1024,
            1,
            1_000_000,
            "a whole number",
        );
        c.ingress_max_connections = to_usize(connections);
        c.ingress_header_timeout = self.duration(
            "ingress_header_timeout",
            &args.ingress_header_timeout,
            c.ingress_header_timeout,
            Bound::Positive,
        );
        c.ingress_body_timeout = self.duration(
            "ingress_body_timeout",
            &args.ingress_body_timeout,
            c.ingress_body_timeout,
            Bound::Positive,
        );
        let buffered = self.uint(
            "ingress_max_buffered_bytes",
            &args.ingress_max_buffered_bytes,
            c.ingress_max_buffered_bytes as u64,
            1,
            1 << 40,
            "a whole number of bytes",
        );
        c.ingress_max_buffered_bytes = to_usize(buffered);
        if c.ingress_max_buffered_bytes < c.max_body_bytes && !self.failed("max_body_bytes") {
            let why = format!("must be at least max_body_bytes ({})", c.max_body_bytes);
            self.fail(
                "ingress_max_buffered_bytes",
                &args.ingress_max_buffered_bytes,
                why,
            );
        }
    }
}
