//! Command-line tools of the registry.
//!
//! - [`standalone`]: every role in one process, the embedded default a new user starts with
//!   (`registry standalone`).
//! - [`certs`]: a private certificate authority for TLS (`registryctl tls`).
//! - [`ctl`]: the commands of `registryctl`.
//! - [`health`]: `registry health`, an HTTP health probe for container images without curl.
//! - `src/bin/registry.rs` and `src/bin/registryctl.rs`: the thin binaries.

pub mod certs;
pub mod ctl;
pub mod health;
pub mod standalone;
