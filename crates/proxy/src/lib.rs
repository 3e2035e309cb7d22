//! The data plane: listeners, weighted target groups, health checks, retries, draining and metrics.

pub mod backend;
pub mod body;
pub mod cost;
pub mod downstream;
pub mod drain;
pub mod forward;
#[cfg(test)]
mod fuzz;
pub mod headers;
pub mod health;
pub mod metrics;
mod redirect;
pub mod registry;
pub mod report;
pub mod server;
mod stall;
pub mod table;
pub mod target;
pub mod tls;
pub mod tries;
mod upgrade;
pub mod upstream;
pub mod worker;

pub use drain::{DrainHandle, DrainReport};
pub use forward::{Proxy, ProxyError};
pub use health::HealthConfig;
pub use registry::{GroupStatus, Registry, TargetStatus};
pub use server::{serve, serve_redirect, ListenerOptions};
pub use table::Balance;
