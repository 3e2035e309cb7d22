//! The demo service: the web service cutover deploys in its examples, tests, benchmarks and demo.

pub mod app;
pub mod auth;
pub mod config;
pub mod keys;
pub mod live;
pub mod server;
pub mod state;

pub use config::Config;
pub use server::{serve, Shutdown};
pub use state::AppState;
