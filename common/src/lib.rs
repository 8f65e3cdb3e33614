//! Shared vocabulary of the registry.
//!
//! Every tier (meta, data, session, SDK) speaks in these types, so they live in one crate
//! with no server dependencies:
//!
//! - [`id`]: `DataInfoId` (the identity of a service) and its validation rules.
//! - [`model`]: publishers, publisher keys, datums and the subscriber scope.
//! - [`version`]: the hybrid clock that issues datum versions.
//! - [`member`]: cluster members, roles and the cluster view (epoch, members, slot table).
//! - [`slot`]: the stable slot hash and the rendezvous placement of slots on data servers.
//! - [`error`]: the error codes every API answers with, and the one map from code to HTTP status.
//! - [`proto`]: wire messages: `client` (SDK <-> session WebSocket), `data` (session/data <-> data
//!   HTTP), `meta` (servers <-> meta HTTP).
//! - [`time`]: wall-clock helpers.
//! - [`backoff`]: the one retry backoff (exponential with jitter) of servers and SDK.
//! - [`auth`]: HMAC-SHA256 request and `hello` signing, cluster secrets and access keys.
//! - [`acl`]: principals, their keys and permissions, and the compiled form servers check.
//! - [`tls`]: TLS server and client configurations from PEM files.

pub mod acl;
pub mod auth;
pub mod backoff;
pub mod error;
pub mod id;
pub mod member;
pub mod model;
pub mod proto;
pub mod slot;
pub mod time;
pub mod tls;
pub mod version;

pub use error::{ApiError, ErrorCode};
pub use id::{DataInfoId, IdError};
pub use member::{ClusterView, Member, MemberId, Role};
pub use model::{Datum, Publisher, PublisherKey};
pub use slot::{SlotId, SlotTable};
