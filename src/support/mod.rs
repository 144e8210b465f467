//! Small utilities shared across modules, one home per concept.

pub(crate) mod backoff;
pub(crate) mod lock;
