//! Client SDK of the registry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), client_sdk::SdkError> {
//! use client_sdk::{Client, ClientConfig};
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:9600"])).await?;
//! let publisher = client.publish("com.example.Echo", vec!["10.0.0.1:8080".into()]).await?;
//! let mut subscriber = client.subscribe("com.example.Echo").await?;
//! while let Some(update) = subscriber.next().await {
//!     println!("{} v{}: {:?}", update.data_info_id, update.version, update.data);
//! }
//! publisher.unregister().await?;
//! # Ok(()) }
//! ```
//!
//! - [`client`]: [`Client`], [`Publisher`] and [`Subscriber`] handles, and the state the SDK
//!   re-registers after a reconnect.
//! - [`connection`]: the task that owns the WebSocket: connects (rotating through the
//!   configured sessions with jittered backoff), says hello, re-registers, matches replies to
//!   requests, acknowledges pushes and drops pushes older than what it holds.
//! - [`updates`]: the bounded per-subscription queue of datum updates.
//! - [`error`]: the SDK's error type, [`SdkError`].

pub mod client;
pub mod connection;
pub mod error;
pub mod updates;

pub use client::{
    Callback, Client, ClientConfig, ConnectionState, Publisher, RegistrationOptions, Subscriber,
};
pub use error::SdkError;
pub use updates::DatumUpdate;
