//! The client handle and what it has registered.
//!
//! Every publisher and subscription is recorded here before it is sent, so the connection
//! task can register all of them again on a new connection after a reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::RngExt;
use registry_common::error::ApiError;
use registry_common::id::DataInfoId;
use registry_common::model::validate_registration;
use registry_common::proto::client::ClientFrame;
use tokio::sync::{mpsc, oneshot, watch};

use crate::connection::{self, Command};
use crate::error::SdkError;
use crate::updates::{DatumUpdate, UpdateQueue};

/// How the client connects and behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Session server addresses (`host:port`); the client uses one at a time and moves to
    /// another when it loses the connection.
    pub sessions: Vec<String>,
    /// Zone of this client, recorded with its publishers.
    pub zone: String,
    /// Application name, recorded with its publishers.
    pub app: String,
    /// Identity of this SDK instance; random when `None`.
    pub client_id: Option<String>,
    /// How long `connect` waits for a first connection.
    pub connect_timeout: Duration,
    /// How long one request waits for its acknowledgement (also across a reconnect).
    pub request_timeout: Duration,
    /// Interval of application-level pings; two intervals without a frame from the session
    /// mean it is gone (frozen or cut off), and the client moves to another one. Keep twice
    /// this well under the cluster's removal of a silent session (about 10 s).
    pub ping_interval: Duration,
    /// First and largest delay between reconnection attempts (jittered).
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Updates queued per subscription without a callback before the oldest are dropped (a
    /// subscription with a callback keeps only the newest).
    pub update_queue: usize,
    /// Try sessions in the given order instead of starting at a random one.
    pub ordered: bool,
    /// The application's access key; signs every `hello` (required when the cluster has
    /// auth on). Parse one with [`registry_common::auth::Credential::parse`].
    pub credential: Option<registry_common::auth::Credential>,
    /// Connect over `wss://`, trusting these roots (build one with
    /// [`registry_common::tls::ClientTls::new`]); `None`: plain `ws://`.
    pub tls: Option<registry_common::tls::ClientTls>,
}

impl ClientConfig {
    pub fn new<I, S>(sessions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            sessions: sessions.into_iter().map(Into::into).collect(),
            zone: String::new(),
            app: String::new(),
            client_id: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            ping_interval: Duration::from_secs(3),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            update_queue: 256,
            ordered: false,
            credential: None,
            tls: None,
        }
    }
}

/// Where the client's connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Looking for a session (at start or after losing one).
    Connecting,
    /// Connected and every registration re-sent.
    Connected { session: String },
    /// Sessions refused this client's credential (`unauthenticated` or `forbidden`)
    /// [`REFUSALS_BEFORE_GIVING_UP`] times in a row; the client keeps retrying with backoff
    /// in case the key is granted, but [`Client::connect`] gives up.
    Refused { error: ApiError },
    /// Closed by the application.
    Closed,
}

/// Consecutive refused hellos after which the state turns [`ConnectionState::Refused`]. More
/// than one, so a key created a moment ago has time to reach every session.
pub const REFUSALS_BEFORE_GIVING_UP: u32 = 3;

/// Optional parts of a dataInfoId.
#[derive(Debug, Clone, Default)]
pub struct RegistrationOptions {
    pub instance_id: Option<String>,
    pub group: Option<String>,
}

pub(crate) struct PubReg {
    pub data_id: String,
    pub opts: RegistrationOptions,
    pub data: Vec<String>,
    pub version: u64,
}

/// A function called with every datum update of a subscription.
pub type Callback = Arc<dyn Fn(&DatumUpdate) + Send + Sync>;

pub(crate) struct SubReg {
    pub data_id: String,
    pub opts: RegistrationOptions,
    /// Version of the newest datum delivered; older pushes are dropped.
    pub last_version: Option<u64>,
    pub last: Option<Arc<DatumUpdate>>,
    pub queue: Arc<UpdateQueue>,
    pub callback: Option<Callback>,
}

#[derive(Default)]
pub(crate) struct Registrations {
    pub pubs: HashMap<String, PubReg>,
    pub subs: HashMap<String, SubReg>,
}

pub(crate) struct Shared {
    pub config: ClientConfig,
    pub client_id: String,
    pub regs: Mutex<Registrations>,
    pub state: watch::Sender<ConnectionState>,
    next_id: AtomicU64,
    cmd_tx: mpsc::Sender<Command>,
    stop: watch::Sender<bool>,
}

impl Shared {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sends a request and waits for its acknowledgement.
    async fn request(&self, frame: ClientFrame, regist_id: Option<String>) -> Result<(), SdkError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command {
            frame,
            regist_id,
            reply,
        };
        let wait = async {
            self.cmd_tx.send(cmd).await.map_err(|_| SdkError::Closed)?;
            rx.await.map_err(|_| SdkError::Closed)?
        };
        tokio::time::timeout(self.config.request_timeout, wait)
            .await
            .map_err(|_| SdkError::Timeout)?
    }
}

/// A connected registry client. Cheap to clone; the connection closes when the last clone
/// is dropped or [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    /// Dropping the last clone stops the connection task.
    _guard: Arc<StopGuard>,
}

struct StopGuard(watch::Sender<bool>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

fn random_hex() -> String {
    let mut rng = rand::rng();
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

impl Client {
    /// Connects to one of `config.sessions` and keeps reconnecting in the background.
    pub async fn connect(config: ClientConfig) -> Result<Client, SdkError> {
        if config.sessions.is_empty() {
            return Err(SdkError::Invalid("no session address given".into()));
        }
        let client_id = config.client_id.clone().unwrap_or_else(random_hex);
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (state, _) = watch::channel(ConnectionState::Connecting);
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            client_id,
            regs: Mutex::new(Registrations::default()),
            state,
            next_id: AtomicU64::new(0),
            cmd_tx,
            stop: stop.clone(),
        });
        tokio::spawn(connection::run(shared.clone(), cmd_rx, stop_rx));
        let client = Client {
            shared: shared.clone(),
            _guard: Arc::new(StopGuard(stop)),
        };
        let mut rx = shared.state.subscribe();
        let connected = tokio::time::timeout(
            shared.config.connect_timeout,
            rx.wait_for(|s| {
                matches!(
                    s,
                    ConnectionState::Connected { .. } | ConnectionState::Refused { .. }
                )
            }),
        )
        .await;
        let outcome = match connected {
            Ok(Ok(state)) => match &*state {
                ConnectionState::Refused { error } => Err(SdkError::Server(error.clone())),
                _ => Ok(()),
            },
            _ => Err(SdkError::Connect(format!(
                "none of {:?} answered within {:?}",
                shared.config.sessions, shared.config.connect_timeout
            ))),
        };
        match outcome {
            Ok(()) => Ok(client),
            Err(e) => {
                let _ = shared.stop.send(true);
                Err(e)
            }
        }
    }

    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// Follows the connection state.
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// Publishes `data` under `data_id` (default instance id and group).
    pub async fn publish(&self, data_id: &str, data: Vec<String>) -> Result<Publisher, SdkError> {
        self.publish_with(data_id, data, RegistrationOptions::default())
            .await
    }

    pub async fn publish_with(
        &self,
        data_id: &str,
        data: Vec<String>,
        opts: RegistrationOptions,
    ) -> Result<Publisher, SdkError> {
        let regist_id = format!("p{}", self.shared.next_id());
        DataInfoId::new(data_id, opts.instance_id.as_deref(), opts.group.as_deref())
            .map_err(|e| SdkError::Invalid(e.to_string()))?;
        validate_registration(&self.shared.client_id, &regist_id, &data)
            .map_err(|e| SdkError::Invalid(e.to_string()))?;
        let frame = ClientFrame::RegisterPublisher {
            req_id: self.shared.next_id(),
            regist_id: regist_id.clone(),
            data_id: data_id.to_owned(),
            instance_id: opts.instance_id.clone(),
            group: opts.group.clone(),
            data: data.clone(),
            version: 1,
        };
        self.shared.regs.lock().pubs.insert(
            regist_id.clone(),
            PubReg {
                data_id: data_id.to_owned(),
                opts,
                data,
                version: 1,
            },
        );
        match self.shared.request(frame, Some(regist_id.clone())).await {
            Ok(()) => Ok(Publisher {
                shared: self.shared.clone(),
                regist_id,
            }),
            Err(e) => {
                self.shared.regs.lock().pubs.remove(&regist_id);
                Err(e)
            }
        }
    }

    /// Subscribes to `data_id` (default instance id and group).
    pub async fn subscribe(&self, data_id: &str) -> Result<Subscriber, SdkError> {
        self.subscribe_with(data_id, RegistrationOptions::default(), None)
            .await
    }

    /// Subscribes with options and an optional callback, called on the connection task for
    /// every update (keep it quick). Without a callback, updates are queued for
    /// [`Subscriber::next`] (up to [`ClientConfig::update_queue`], the oldest dropped first).
    /// With one, the callback has had every update, and [`Subscriber::next`] yields only the
    /// newest not yet taken: a subscription whose queue is never read holds one datum.
    pub async fn subscribe_with(
        &self,
        data_id: &str,
        opts: RegistrationOptions,
        callback: Option<Callback>,
    ) -> Result<Subscriber, SdkError> {
        let regist_id = format!("s{}", self.shared.next_id());
        DataInfoId::new(data_id, opts.instance_id.as_deref(), opts.group.as_deref())
            .map_err(|e| SdkError::Invalid(e.to_string()))?;
        let capacity = if callback.is_some() {
            1
        } else {
            self.shared.config.update_queue
        };
        let queue = Arc::new(UpdateQueue::new(capacity));
        let frame = ClientFrame::RegisterSubscriber {
            req_id: self.shared.next_id(),
            regist_id: regist_id.clone(),
            data_id: data_id.to_owned(),
            instance_id: opts.instance_id.clone(),
            group: opts.group.clone(),
            known_version: 0,
        };
        self.shared.regs.lock().subs.insert(
            regist_id.clone(),
            SubReg {
                data_id: data_id.to_owned(),
                opts,
                last_version: None,
                last: None,
                queue: queue.clone(),
                callback,
            },
        );
        match self.shared.request(frame, Some(regist_id.clone())).await {
            Ok(()) => Ok(Subscriber {
                shared: self.shared.clone(),
                regist_id,
                queue,
            }),
            Err(e) => {
                self.shared.regs.lock().subs.remove(&regist_id);
                Err(e)
            }
        }
    }

    /// Closes the connection; the session withdraws this client's publishers.
    pub async fn close(self) {
        let _ = self.shared.stop.send(true);
        let mut rx = self.shared.state.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            rx.wait_for(|s| *s == ConnectionState::Closed),
        )
        .await;
    }
}

/// A registered publisher.
pub struct Publisher {
    shared: Arc<Shared>,
    regist_id: String,
}

impl Publisher {
    pub fn regist_id(&self) -> &str {
        &self.regist_id
    }

    /// Replaces the published data (bumps the client-side version).
    pub async fn republish(&self, data: Vec<String>) -> Result<u64, SdkError> {
        validate_registration(&self.shared.client_id, &self.regist_id, &data)
            .map_err(|e| SdkError::Invalid(e.to_string()))?;
        let frame = {
            let mut regs = self.shared.regs.lock();
            let reg = regs.pubs.get_mut(&self.regist_id).ok_or(SdkError::Closed)?;
            reg.version += 1;
            reg.data = data.clone();
            ClientFrame::RegisterPublisher {
                req_id: self.shared.next_id(),
                regist_id: self.regist_id.clone(),
                data_id: reg.data_id.clone(),
                instance_id: reg.opts.instance_id.clone(),
                group: reg.opts.group.clone(),
                data,
                version: reg.version,
            }
        };
        let version = match &frame {
            ClientFrame::RegisterPublisher { version, .. } => *version,
            _ => 0,
        };
        self.shared
            .request(frame, Some(self.regist_id.clone()))
            .await?;
        Ok(version)
    }

    /// Withdraws the publisher.
    pub async fn unregister(self) -> Result<(), SdkError> {
        self.shared.regs.lock().pubs.remove(&self.regist_id);
        let frame = ClientFrame::UnregisterPublisher {
            req_id: self.shared.next_id(),
            regist_id: self.regist_id.clone(),
        };
        self.shared.request(frame, None).await
    }
}

/// A subscription: yields every datum update, newest last.
pub struct Subscriber {
    shared: Arc<Shared>,
    regist_id: String,
    queue: Arc<UpdateQueue>,
}

impl Subscriber {
    pub fn regist_id(&self) -> &str {
        &self.regist_id
    }

    /// The next update; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<DatumUpdate> {
        self.queue.next().await
    }

    /// The next queued update, without waiting.
    pub fn try_next(&mut self) -> Option<DatumUpdate> {
        self.queue.try_next()
    }

    /// The newest datum received so far.
    pub fn latest(&self) -> Option<DatumUpdate> {
        self.shared
            .regs
            .lock()
            .subs
            .get(&self.regist_id)
            .and_then(|s| s.last.as_deref().cloned())
    }

    /// Ends the subscription.
    pub async fn unsubscribe(self) -> Result<(), SdkError> {
        self.shared.regs.lock().subs.remove(&self.regist_id);
        self.queue.close();
        let frame = ClientFrame::UnregisterSubscriber {
            req_id: self.shared.next_id(),
            regist_id: self.regist_id.clone(),
        };
        self.shared.request(frame, None).await
    }
}
