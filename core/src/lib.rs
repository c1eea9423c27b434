//! Domain types and pure logic shared by every Damselfly component.
//!
//! Nothing here does I/O or knows about HTTP frameworks or storage engines: the edge, the agents
//! and the preheater all build on these types, so they stay small and dependency-light.

pub mod api;
pub mod bitfield;
pub mod ct;
pub mod digest;
pub mod encoding;
pub mod file_task;
pub mod handout;
pub mod location;
pub mod net;
pub mod parents;
pub mod piece;
pub mod range;
pub mod reference;
pub mod registry_auth;
pub mod registry_errors;
pub mod seal;
pub mod sealed_value;
pub mod size;
pub mod task_peers;
pub mod ticket;

pub use bitfield::Bitfield;
pub use ct::constant_time_eq;
pub use digest::{Digest, DigestError, Sha256Stream};
pub use encoding::PIECE_FORMAT;
pub use file_task::{file_task_id, file_version_id, normalise_url, FileUrlError};
pub use location::Location;
pub use parents::{add_drawn, rank_parents, rank_parents_rack_first, Drawn};
pub use piece::{LayoutError, PieceHash, PieceLayout, PieceTable};
pub use range::{parse_range, ContentRange, RangeNotSatisfiable};
pub use reference::{Reference, RepositoryName};
pub use registry_auth::{Challenge, TokenAnswer};
pub use registry_errors::error_summary;
pub use seal::{ClusterSecret, SealError, TaskKey, NONCE_LEN, TAG_LEN};
pub use sealed_value::SealedValue;
pub use size::parse_size;
pub use ticket::{Ticket, TicketError, TicketSigner, TicketVerifier};
