//! The Damselfly peer agent.
