//! What keeps the queue from being used by the wrong people or against the wrong hosts: who
//! may call the ingress ([`auth`]), where callbacks may go ([`hosts`]), how a receiver knows a
//! callback is ours ([`signing`]), and secrets read from files that may change ([`secret_file`]).

pub mod auth;
pub mod hosts;
pub mod same_origin;
pub mod secret_file;
pub mod signing;
