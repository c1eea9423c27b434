//! `docker pull` through peer agents, with real Docker Engines of the tests' own (each in its
//! own namespaces, never the machine's daemon), each pointed at its host's agent by a
//! `daemon.json` that `peer-agent configure docker` wrote. A local registry stands in for Docker
//! Hub as the agents' default upstream: docker names no registry in its mirror requests.

#[path = "../common/mod.rs"]
mod common;
mod failing_mirror;
mod failures;
mod pulls;
mod site;
