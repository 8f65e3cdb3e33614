//! Wire messages. Documented, with one JSON example each, in `docs/protocol.md`.
//!
//! - [`client`]: SDK <-> SessionServer, JSON text frames on one WebSocket per SDK instance.
//! - [`data`]: SessionServer -> DataServer and DataServer -> DataServer/SessionServer, HTTP/JSON.
//! - [`meta`]: data/session servers -> MetaServer, HTTP/JSON.
//! - [`admin`]: the admin API's answers (`/admin/v1/...` on every server).

pub mod admin;
pub mod client;
pub mod data;
pub mod meta;
