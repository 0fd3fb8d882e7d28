//! Deterministic simulation harness (placeholder).
//!
//! The turmoil-based harness arrives with the simulation issue. This crate exists so the
//! workspace layout is stable and `cargo test --workspace` already covers it.

fn main() {
    eprintln!(
        "sim: the deterministic simulation harness is not built yet (queue-worker {})",
        queue_worker::VERSION
    );
    std::process::exit(2);
}
