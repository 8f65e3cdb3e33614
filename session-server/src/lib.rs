//! SessionServer: where clients connect.
//!
//! - [`config`]: flags and defaults.
//! - [`error`]: the domain's errors and their wire codes.
//! - [`floor`]: the highest datum version seen, sent with every write as a floor.
//! - [`limits`]: caps on connections, on what one connection holds, and on its registration
//!   rate.
//! - [`outbox`]: the bounded outgoing queue of one client connection.
//! - [`registry`]: connections, the authoritative copy of their publishers, their subscribers.
//! - [`forward`]: writes to the data tier, one lane per data server, retried until they land.
//! - [`push`]: change notification -> datum (cache or batched fetch) -> per-subscriber push,
//!   with version guard, acknowledgements and merging of changes while a push is in flight.
//! - [`reconcile`]: repair of the data tier from the session's publishers (on primary change
//!   and periodically) and the periodic version pull.
//! - [`conn`]: one client WebSocket: decode, dispatch, reply.
//! - [`detach`]: a session cut off from the meta moves its clients away before it is removed.
//! - [`api`]: HTTP routes (client WebSocket, change notifications, health, metrics).
//! - [`admin`]: admin routes (status, one service), readiness, and the operators' levers
//!   (push switch, clients taken off) applied from the view.
//! - [`server`]: startup, view following, shutdown.

pub mod admin;
pub mod api;
pub mod config;
pub mod conn;
pub mod detach;
pub mod error;
pub mod floor;
pub mod forward;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod push;
pub mod reconcile;
pub mod registry;
pub mod server;

pub use config::SessionConfig;
pub use server::SessionServer;
