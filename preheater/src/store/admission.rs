//! The answer to admitting an event's jobs, shared by both stores and the store they sit behind.

/// Whether an event's jobs were created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Created,
    /// The event was seen before (within the dedupe TTL): nothing was created.
    Duplicate,
}
