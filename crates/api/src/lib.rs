//! Typed messages of cutover's two HTTP protocols, shared by both ends so neither spells a
//! field by hand: the data plane's control socket (the controller is its client) and the
//! admin API (the CLI is its client). Each request is a type that names its method, route and
//! reply ([`Endpoint`]); the server mounts `ROUTE`, the client sends `path()` and decodes
//! `Reply`.

pub mod admin;
pub mod dataplane;
pub mod drains;
pub mod endpoint;

pub use drains::Drains;
pub use endpoint::{Ack, Endpoint, ErrorBody, Method};
