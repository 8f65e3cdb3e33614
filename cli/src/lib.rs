//! Command-line tools of the registry.
//!
//! - [`standalone`]: every role in one process, the embedded default a new user starts with
//!   (`registry standalone`).
//! - [`health`]: `registry health`, an HTTP health probe for container images without curl.
//! - `src/bin/registry.rs` and `src/bin/registryctl.rs`: the thin binaries.

pub mod health;
pub mod standalone;
