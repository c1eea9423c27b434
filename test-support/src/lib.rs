//! Test and benchmark harness for Damselfly.
//!
//! Damselfly's correctness claims are about interoperability: an edge cache is only right if
//! unmodified registries and clients work through it. This crate therefore runs the real
//! third-party programs on loopback instead of mocks, and gives tests the control they need
//! over them:
//!
//! - [`registry`]: a CNCF Distribution registry (the origin), with optional htpasswd auth, push
//!   notifications, shared storage and stop/restart for outage tests.
//! - [`image`]: deterministic OCI images of any size and shape, built offline as OCI layouts.
//! - [`skopeo`]: pushes and pulls (direct or through a mirror) with skopeo.
//! - [`containerd`]: a private containerd daemon pulling through `hosts.toml` mirrors.
//! - [`docker`]: a private Docker Engine pulling through `registry-mirrors`, in namespaces of
//!   its own.
//! - [`agent`]: the peer agent binary as a process on its own loopback address.
//! - [`file_server`]: a plain HTTP file server that counts what it sends.
//! - [`edge`]: the edge cache binary as a process, restarted on its data, scraped for metrics.
//! - [`daemon`], [`metrics`]: what every Damselfly daemon shares (a config file in a directory
//!   of its own, readiness on `/readyz`, kill, restart, SIGTERM) and its scraped `/metrics`.
//! - [`proxy`]: a fault-injecting reverse proxy that counts blob traffic and truncates,
//!   corrupts or fails blob downloads on demand.
//! - [`pki`]: a cluster CA per test and the certificates of its edges and agents.
//! - [`plaintext`]: scans of data directories for unsealed layer bytes.
//! - [`shape`]: what we send checked against the contract fixtures of a peer (Harbor).
//! - [`process`], [`net`], [`poll`], [`htpasswd`]: the plumbing (child processes killed on
//!   drop, free ports, readiness polling, credentials files).
//!
//! Conventions: every daemon binds a kernel-chosen free port, readiness is polled rather than
//! slept for, every process and temporary directory is cleaned up on drop, and failures are
//! reported as `anyhow` errors that quote the relevant tool output.

pub mod agent;
pub mod config_file;
pub mod containerd;
pub mod cri;
pub mod daemon;
pub mod docker;
pub mod edge;
pub mod file_server;
pub mod htpasswd;
pub mod image;
pub mod link;
pub mod metrics;
pub mod net;
pub mod otlp;
pub mod pki;
pub mod plaintext;
pub mod poll;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod registry;
pub mod shape;
pub mod skopeo;
pub mod small_disk;
pub mod stalled;

pub use config_file::ConfigFile;
pub use containerd::{Containerd, CtrPullOptions};
pub use image::{build_image, build_image_async, BlobInfo, BuiltImage, ImageSpec};
pub use net::{free_addr_on, free_port, wait_http_ready};
pub use process::ChildGuard;
pub use proxy::{FaultProxy, RequestRecord};
pub use registry::{Registry, RegistryOptions};
pub use skopeo::{PullOptions, PulledImage, PushOptions};
