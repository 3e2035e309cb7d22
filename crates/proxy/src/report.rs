//! Something that happened to a target, as health checkers and the request path tell the
//! registry's observer, which alone changes health.

use std::sync::Arc;

use crate::backend::Backend;
use crate::target::Event;

#[derive(Debug)]
pub struct Report {
    pub group: String,
    pub backend: Arc<Backend>,
    pub event: Event,
    /// Why, for the log.
    pub why: &'static str,
}
