//! The wire protocol between Damselfly's parts, written once for both sides of each conversation.
//!
//! - [`task`]: an agent (or any client with credentials) asks an edge for a task's piece table,
//!   key and ticket, then for sealed pieces, from the edge or from other agents.
//! - [`scheduler`]: agents holding a ticket announce themselves and ask which peers to fetch from.
//! - [`warm`]: the preheater asks an edge to fetch a blob or manifest before anyone pulls it.
//! - [`registry`]: the part of the OCI distribution API both the edge and the agent's mirror route.
//!
//! Only types, names and paths live here (serde, no HTTP framework): each side sends and reads
//! them with its own client or server, so a field or header cannot drift between the two.

pub mod registry;
pub mod scheduler;
pub mod task;
pub mod warm;

pub use registry::RegistryTarget;
pub use scheduler::{
    BytesBySource, ParentCandidate, ParentsAnswer, ParentsQuery, PeerAnnouncement, PeerRecord, RackPlace,
};
pub use task::{TaskAnswer, TaskKeyError, TaskQuery, TicketKeyAnswer};
pub use warm::{WarmAnswer, WarmKind, WarmRequest, WarmState};

/// Carries a task's ticket (`X-Damselfly-Ticket`) on piece requests and scheduler calls.
pub const TICKET_HEADER: &str = "x-damselfly-ticket";

/// Set (`X-Damselfly-Transfer-Failed: 1`) on an edge's error answer when its own transfer from the
/// origin failed, as opposed to the edge failing: another edge would fetch the same bytes, so the
/// agent goes to the origin itself.
pub const TRANSFER_FAILED_HEADER: &str = "x-damselfly-transfer-failed";
