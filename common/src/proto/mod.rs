//! Wire messages. Documented, with one JSON example each, in `docs/protocol.md`.
//!
//! - [`client`]: SDK <-> SessionServer, JSON text frames on one WebSocket per SDK instance.
//! - [`data`]: SessionServer -> DataServer and DataServer -> DataServer/SessionServer, HTTP/JSON.
//! - [`meta`]: data/session servers -> MetaServer, HTTP/JSON.

pub mod client;
pub mod data;
pub mod meta;
