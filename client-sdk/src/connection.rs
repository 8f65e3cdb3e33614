//! The task that owns the client's WebSocket.
//!
//! It connects to one session at a time, starting at a random one (or the first, when
//! `ordered`) and rotating on failure with jittered exponential backoff. On every new
//! connection it says `hello` and registers every live publisher and subscription again, so a
//! session crash costs the application nothing but a short delay. Requests in flight when a
//! connection drops are answered by the re-registration of the same publisher or
//! subscription on the next connection. Every push is acknowledged; a push older than what
//! the subscription already holds is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, SinkExt, StreamExt};
use rand::RngExt;
use registry_common::backoff::Backoff;
use registry_common::error::ErrorCode;
use registry_common::proto::client::{
    ClientFrame, Push, ServerFrame, BATCHING_PROTOCOL_VERSION, CLOSE_MOVING, MAX_PUSH_ACKS,
    OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::client::{ClientConfig, ConnectionState, Shared, REFUSALS_BEFORE_GIVING_UP};
use crate::error::SdkError;
use crate::updates::DatumUpdate;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bytes read from the socket at a time. The WebSocket codec zeroes this much before every
/// read, so it is sized for a few pushes rather than for the largest frame (which still
/// arrives whole, over several reads).
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// A request from a handle to the connection task.
pub(crate) struct Command {
    pub frame: ClientFrame,
    /// The publisher or subscription the request is about, if any.
    pub regist_id: Option<String>,
    pub reply: oneshot::Sender<Result<(), SdkError>>,
}

/// Someone waiting for the answer to a request.
struct Waiter {
    regist_id: Option<String>,
    reply: oneshot::Sender<Result<(), SdkError>>,
}

/// Why a connection ended.
enum End {
    Stopped,
    Lost,
    /// The session asked us to move; these sessions were suggested.
    GoAway(Vec<String>),
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut cmd_rx: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
) {
    let sessions = shared.config.sessions.clone();
    let mut next = if shared.config.ordered {
        0
    } else {
        rand::rng().random_range(0..sessions.len())
    };
    let mut preferred: Vec<String> = Vec::new();
    let mut carried: Vec<Waiter> = Vec::new();
    let mut reconnects = Reconnects::new(&shared.config);
    // Hellos refused in a row for the credential.
    let mut refusals: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        let addr = if preferred.is_empty() {
            let a = sessions[next % sessions.len()].clone();
            next += 1;
            a
        } else {
            preferred.remove(0)
        };
        // A refusal stays visible until a connection succeeds.
        shared.state.send_if_modified(|s| {
            let was_refused = matches!(s, ConnectionState::Refused { .. });
            if !was_refused {
                *s = ConnectionState::Connecting;
            }
            !was_refused
        });
        let ws = tokio::select! {
            r = connect(&shared, &addr) => r,
            _ = stop.changed() => break,
        };
        let (mut ws, protocol) = match ws {
            Ok(connected) => connected,
            Err(e) => {
                tracing::debug!(session = %addr, "connect failed: {e}");
                match &e {
                    SdkError::Server(error)
                        if matches!(
                            error.code,
                            ErrorCode::Unauthenticated | ErrorCode::Forbidden
                        ) =>
                    {
                        refusals += 1;
                        tracing::warn!(session = %addr, "credential refused: {error}");
                        if refusals >= REFUSALS_BEFORE_GIVING_UP {
                            shared.state.send_replace(ConnectionState::Refused {
                                error: error.clone(),
                            });
                        }
                    }
                    _ => refusals = 0,
                }
                let delay = reconnects.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => break,
                }
                continue;
            }
        };
        reconnects.reset();
        refusals = 0;
        let mut pending: HashMap<u64, Vec<Waiter>> = HashMap::new();
        if let Err(e) =
            reregister(&shared, &mut ws, &mut pending, std::mem::take(&mut carried)).await
        {
            tracing::debug!(session = %addr, "re-registration failed: {e}");
            carried = pending.into_values().flatten().collect();
            continue;
        }
        shared.state.send_replace(ConnectionState::Connected {
            session: addr.clone(),
        });
        // Info, like the loss: a log that shows the client losing its session shows it
        // connected again, and where.
        tracing::info!(session = %addr, "connected to the session");
        let end = session_loop(
            &shared,
            &mut ws,
            protocol,
            &mut cmd_rx,
            &mut stop,
            &mut pending,
        )
        .await;
        carried = pending.into_values().flatten().collect();
        match end {
            End::Stopped => {
                let _ = ws.close(None).await;
                break;
            }
            End::Lost => {
                tracing::info!(session = %addr, "lost the session; reconnecting");
                farewell(&mut ws).await;
                shared.state.send_replace(ConnectionState::Connecting);
                let delay = reconnects.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => break,
                }
            }
            End::GoAway(suggested) => {
                tracing::info!(session = %addr, "session is going away; moving");
                let _ = ws.close(None).await;
                preferred = suggested.into_iter().filter(|s| s != &addr).collect();
            }
        }
    }
    for w in carried {
        let _ = w.reply.send(Err(SdkError::Closed));
    }
    cmd_rx.close();
    while let Some(cmd) = cmd_rx.recv().await {
        let _ = cmd.reply.send(Err(SdkError::Closed));
    }
    for sub in shared.regs.lock().subs.values() {
        sub.queue.close();
    }
    shared.state.send_replace(ConnectionState::Closed);
}

/// The registry's one backoff, configured for reconnects: the first delay is uniform in
/// `[reconnect_min, 2 × reconnect_min]`, later ones double up to `reconnect_max`, and none is
/// shorter than `reconnect_min`.
struct Reconnects {
    backoff: Backoff,
    min: Duration,
}

impl Reconnects {
    fn new(config: &ClientConfig) -> Self {
        let min = config.reconnect_min;
        Self {
            backoff: Backoff::new(min.saturating_mul(2), config.reconnect_max.max(min)),
            min,
        }
    }

    /// The delay before the next attempt.
    fn next_delay(&mut self) -> Duration {
        self.backoff.next_delay().max(self.min)
    }

    /// A connection succeeded: the next failure starts over.
    fn reset(&mut self) {
        self.backoff.reset();
    }
}

/// Longest the SDK tries to tell a session it is leaving for another one.
const FAREWELL_TIMEOUT: Duration = Duration::from_millis(200);

/// Ends a connection the SDK gives up on with [`CLOSE_MOVING`], as far as it gets out: a
/// session that was only silent (frozen, or its replies lost) reads it whenever it serves
/// again and leaves this client's publishers for its re-registration elsewhere, rather than
/// withdrawing them from every subscriber's view in between. On a connection that already
/// ended this fails at once.
async fn farewell(ws: &mut Ws) {
    let frame = CloseFrame {
        code: CloseCode::from(CLOSE_MOVING),
        reason: "moving to another session".into(),
    };
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, ws.close(Some(frame))).await;
}

/// Ping intervals without a frame from the session after which it is treated as gone.
const SILENT_INTERVALS: u32 = 2;

/// Longest one write to the session may take: a connection whose writes block (a half-open
/// peer, a full send buffer) for a ping interval is treated as lost, like one whose reads
/// went silent.
fn write_timeout(shared: &Shared) -> Duration {
    shared.config.ping_interval.max(Duration::from_secs(1))
}

/// Runs one write (send, feed or flush) within [`write_timeout`].
async fn within<F>(shared: &Shared, write: F) -> Result<(), SdkError>
where
    F: std::future::Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>,
{
    let limit = write_timeout(shared);
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SdkError::Connect(e.to_string())),
        Err(_) => {
            tracing::info!("a write to the session blocked for {limit:?}; reconnecting");
            Err(SdkError::Connect(format!("write blocked for {limit:?}")))
        }
    }
}

async fn send(shared: &Shared, ws: &mut Ws, frame: &ClientFrame) -> Result<(), SdkError> {
    let text = serde_json::to_string(frame).map_err(|e| SdkError::Invalid(e.to_string()))?;
    within(shared, ws.send(Message::Text(text.into()))).await
}

/// Opens the WebSocket and completes the hello exchange; the protocol version it speaks.
async fn connect(shared: &Shared, addr: &str) -> Result<(Ws, u32), SdkError> {
    let step = Duration::from_secs(3);
    let (scheme, connector) = match &shared.config.tls {
        Some(tls) => ("wss", Some(Connector::Rustls(tls.config()))),
        None => ("ws", None),
    };
    let url = format!("{scheme}://{addr}/ws");
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(16 * 1024);
    // Nagle's algorithm off: requests and acks are small frames that must leave at once.
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(url, Some(config), true, connector);
    let (mut ws, _) = tokio::time::timeout(step, connect)
        .await
        .map_err(|_| SdkError::Timeout)?
        .map_err(|e| SdkError::Connect(e.to_string()))?;
    let mut offer = PROTOCOL_VERSION;
    loop {
        match hello(shared, &mut ws, offer, step).await {
            Ok(protocol) => return Ok((ws, protocol)),
            // A session older than this SDK refuses the newer protocol: speak the oldest.
            Err(SdkError::Server(e))
                if e.code == ErrorCode::UnsupportedProtocol && offer > OLDEST_PROTOCOL_VERSION =>
            {
                tracing::debug!(session = %addr, "session refused protocol {offer}: {e}");
                offer = OLDEST_PROTOCOL_VERSION;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Says hello offering protocol `offer`; the version the session answered with.
async fn hello(shared: &Shared, ws: &mut Ws, offer: u32, step: Duration) -> Result<u32, SdkError> {
    let req_id = shared.next_id();
    send(
        shared,
        ws,
        &ClientFrame::Hello {
            req_id,
            protocol: offer,
            client_id: shared.client_id.clone(),
            zone: shared.config.zone.clone(),
            app: shared.config.app.clone(),
            auth: shared
                .config
                .credential
                .as_ref()
                .map(|c| c.sign_hello(&shared.client_id)),
        },
    )
    .await?;
    let deadline = Instant::now() + step;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .map_err(|_| SdkError::Timeout)?;
        match msg {
            Some(Ok(Message::Text(t))) => match ServerFrame::decode(t.as_str()) {
                // A session that does not say more than protocol 1 speaks only that.
                Ok(ServerFrame::Welcome { protocol, .. }) => return Ok(protocol.min(offer)),
                Ok(ServerFrame::Error { error, .. }) => return Err(SdkError::Server(error)),
                _ => continue,
            },
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(SdkError::Connect(e.to_string())),
            None => return Err(SdkError::Connect("closed during hello".into())),
        }
    }
}

/// Sends every live registration on a fresh connection and hands waiters of requests lost
/// with the previous connection to the re-registration of the same item.
async fn reregister(
    shared: &Shared,
    ws: &mut Ws,
    pending: &mut HashMap<u64, Vec<Waiter>>,
    carried: Vec<Waiter>,
) -> Result<(), SdkError> {
    let mut frames = Vec::new();
    let mut by_regist: HashMap<String, u64> = HashMap::new();
    {
        let regs = shared.regs.lock();
        for (regist_id, p) in &regs.pubs {
            let req_id = shared.next_id();
            by_regist.insert(regist_id.clone(), req_id);
            frames.push(ClientFrame::RegisterPublisher {
                req_id,
                regist_id: regist_id.clone(),
                data_id: p.data_id.clone(),
                instance_id: p.opts.instance_id.clone(),
                group: p.opts.group.clone(),
                data: p.data.clone(),
                version: p.version,
            });
        }
        for (regist_id, s) in &regs.subs {
            let req_id = shared.next_id();
            by_regist.insert(regist_id.clone(), req_id);
            frames.push(ClientFrame::RegisterSubscriber {
                req_id,
                regist_id: regist_id.clone(),
                data_id: s.data_id.clone(),
                instance_id: s.opts.instance_id.clone(),
                group: s.opts.group.clone(),
                known_version: s.last_version.unwrap_or(0),
            });
        }
    }
    for w in carried {
        match w.regist_id.as_ref().and_then(|r| by_regist.get(r)) {
            Some(req_id) => pending.entry(*req_id).or_default().push(w),
            // Unregistrations and pings: the old connection's end already did their work.
            None => {
                let _ = w.reply.send(Ok(()));
            }
        }
    }
    for frame in &frames {
        send(shared, ws, frame).await?;
    }
    Ok(())
}

fn resolve(pending: &mut HashMap<u64, Vec<Waiter>>, req_id: u64, result: Result<(), SdkError>) {
    if let Some(waiters) = pending.remove(&req_id) {
        for w in waiters {
            let _ = w.reply.send(result.clone());
        }
    }
}

async fn session_loop(
    shared: &Arc<Shared>,
    ws: &mut Ws,
    protocol: u32,
    cmd_rx: &mut mpsc::Receiver<Command>,
    stop: &mut watch::Receiver<bool>,
    pending: &mut HashMap<u64, Vec<Waiter>>,
) -> End {
    let ping_every = shared.config.ping_interval.max(Duration::from_millis(10));
    let mut ping = tokio::time::interval(ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rx = Instant::now();
    // A session that sends nothing (not even the answer to a ping) for this long is treated
    // as gone: frozen, or cut off from us. It must be well under the time the cluster takes
    // to give up on a silent session and remove its publishers (about 10 s), so that this
    // client has re-registered elsewhere by then.
    let silence = ping_every * SILENT_INTERVALS;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until((last_rx + silence).into()) => {
                tracing::info!(silent_ms = silence.as_millis() as u64, "the session went silent");
                return End::Lost;
            }
            cmd = cmd_rx.recv() => {
                let Some(cmd) = cmd else { return End::Stopped };
                let req_id = cmd.frame.req_id().unwrap_or(0);
                pending.entry(req_id).or_default().push(Waiter { regist_id: cmd.regist_id, reply: cmd.reply });
                if send(shared, ws, &cmd.frame).await.is_err() {
                    return End::Lost;
                }
            }
            msg = ws.next() => {
                last_rx = Instant::now();
                // Handle this frame and every other one already received, then acknowledge
                // their pushes with one flush.
                let mut next = Some(msg);
                let mut handled = 0;
                let mut acks = Vec::new();
                while let Some(msg) = next.take() {
                    match msg {
                        Some(Ok(Message::Text(t))) => match ServerFrame::decode(t.as_str()) {
                            Ok(frame) => {
                                if let Some(end) = on_frame(shared, pending, &mut acks, frame) {
                                    return end;
                                }
                            }
                            Err(e) => tracing::warn!("undecodable frame from session: {e}"),
                        },
                        Some(Ok(Message::Close(frame))) => {
                            if let Some(f) = frame {
                                tracing::info!(code = %f.code, reason = %f.reason, "session closed the connection");
                            }
                            return End::Lost;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return End::Lost,
                    }
                    handled += 1;
                    if handled < 256 {
                        next = ws.next().now_or_never();
                    }
                }
                if acknowledge(shared, ws, protocol, &acks).await.is_err() {
                    return End::Lost;
                }
            }
            _ = ping.tick() => {
                let frame = ClientFrame::Ping { req_id: shared.next_id() };
                if send(shared, ws, &frame).await.is_err() {
                    return End::Lost;
                }
            }
            _ = stop.changed() => return End::Stopped,
        }
    }
}

/// Acknowledges `push_ids` (every push received, even one dropped as old) and flushes:
/// one `push_acks` frame per [`MAX_PUSH_ACKS`] ids on protocol 2, one `push_ack` each before.
async fn acknowledge(
    shared: &Shared,
    ws: &mut Ws,
    protocol: u32,
    push_ids: &[u64],
) -> Result<(), SdkError> {
    if protocol >= BATCHING_PROTOCOL_VERSION {
        for ids in push_ids.chunks(MAX_PUSH_ACKS) {
            let acks = ClientFrame::push_acks_json(ids);
            within(shared, ws.feed(Message::Text(acks.into()))).await?;
        }
    } else {
        for &id in push_ids {
            let ack = ClientFrame::push_ack_json(id);
            within(shared, ws.feed(Message::Text(ack.into()))).await?;
        }
    }
    within(shared, ws.flush()).await
}

/// Handles one frame from the session; the ids of pushes to acknowledge go to `acks`.
fn on_frame(
    shared: &Arc<Shared>,
    pending: &mut HashMap<u64, Vec<Waiter>>,
    acks: &mut Vec<u64>,
    frame: ServerFrame,
) -> Option<End> {
    match frame {
        ServerFrame::Ack { req_id } => resolve(pending, req_id, Ok(())),
        ServerFrame::Error {
            req_id: Some(req_id),
            error,
        } => resolve(pending, req_id, Err(SdkError::Server(error))),
        ServerFrame::Error {
            req_id: None,
            error,
        } => tracing::warn!("session reported an error: {error}"),
        ServerFrame::Push(push) => on_push(shared, acks, push),
        ServerFrame::Pushes { pushes } => {
            for push in pushes {
                on_push(shared, acks, push);
            }
        }
        ServerFrame::GoAway { sessions, .. } => return Some(End::GoAway(sessions)),
        ServerFrame::Pong { .. } | ServerFrame::Welcome { .. } => {}
    }
    None
}

/// Hands a push newer than what its subscription holds to the subscription (queue and
/// callback) and notes its id for acknowledgement.
fn on_push(shared: &Shared, acks: &mut Vec<u64>, push: Push) {
    let Push {
        push_id,
        regist_id,
        data_info_id,
        version,
        data,
    } = push;
    acks.push(push_id);
    let mut callback = None;
    {
        let mut regs = shared.regs.lock();
        if let Some(sub) = regs.subs.get_mut(&regist_id) {
            if sub.last_version.is_none_or(|v| version > v) {
                let update = Arc::new(DatumUpdate {
                    data_info_id: String::from(data_info_id),
                    version,
                    data,
                });
                sub.last_version = Some(version);
                sub.last = Some(update.clone());
                sub.queue.push(update.clone());
                callback = sub.callback.clone().map(|cb| (cb, update));
            }
        }
    }
    // Outside the lock: the callback may call back into the client.
    if let Some((cb, update)) = callback {
        cb(&update);
    }
}
