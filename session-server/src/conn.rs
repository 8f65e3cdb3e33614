//! One client WebSocket: read frames, dispatch them, write replies and pushes.
//!
//! The reader decodes each text frame into a [`ClientFrame`]; anything it cannot decode gets
//! a typed `error` frame (and a log line) and the connection carries on. A frame above the
//! maximum size closes the connection with code 1009 and a reason. A writer task drains the
//! connection's outbox into the socket, with a write timeout so a client that stops reading
//! cannot hold the server. When the connection ends, its publishers are withdrawn from the
//! data tier and its subscriptions dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use prometheus::IntCounter;
use registry_common::error::ApiError;
use registry_common::id::{validate_part, DataInfoId};
use registry_common::model::Publisher;
use registry_common::proto::client::{
    negotiate, ClientFrame, ServerFrame, BATCHING_PROTOCOL_VERSION, CLOSE_MOVING,
    OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use tokio::sync::mpsc;

use crate::error::SessionError;
use crate::forward::MAX_INTAKE_PAUSE;
use crate::limits::ConnSlot;
use crate::outbox::{Carries, Frame, Texts};
use crate::registry::{Conn, Hello, Registration};
use crate::server::SessionState;

/// How long one write may take before the client is considered stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most frames written with one flush.
const MAX_WRITE_BATCH: usize = 256;

/// Serves one upgraded WebSocket until it closes; `_slot` is its place under the
/// session's connection cap, given back when it ends.
pub async fn serve(socket: WebSocket, remote: SocketAddr, ctx: Arc<SessionState>, _slot: ConnSlot) {
    let (conn, rx) = ctx.registry.open(remote);
    tracing::debug!(conn = conn.id, %remote, "client connected");
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        conn.clone(),
        ctx.metrics.push_frames.clone(),
    ));
    let idle = Duration::from_millis(ctx.config.client_idle_ms.max(100));
    loop {
        if ctx.forwarder.backlogged() {
            // The data tier is behind: stop reading until it catches up (bounded, see
            // `forward`), so acknowledgements do not run ahead of what subscribers see.
            let paused = Instant::now();
            tokio::select! {
                _ = ctx.forwarder.room(MAX_INTAKE_PAUSE) => {}
                _ = conn.outbox.close_signal().requested() => break,
                _ = ctx.shutdown.cancelled() => break,
            }
            ctx.metrics
                .intake_pause
                .observe(paused.elapsed().as_secs_f64());
        }
        let next = tokio::select! {
            n = tokio::time::timeout(idle, stream.next()) => n,
            _ = conn.outbox.close_signal().requested() => break,
            _ = ctx.shutdown.cancelled() => break,
        };
        match next {
            Ok(Some(Ok(Message::Text(text)))) => handle_text(&ctx, &conn, text.as_str()),
            Ok(Some(Ok(Message::Binary(_)))) => reply_error(
                &ctx,
                &conn,
                None,
                ApiError::new(
                    registry_common::ErrorCode::Malformed,
                    "binary frames are not supported; send JSON text frames",
                ),
            ),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(Message::Close(Some(frame))))) if frame.code == CLOSE_MOVING => {
                // The client left for another session while this one was silent to it:
                // its re-registration there takes its publishers over.
                tracing::info!(conn = conn.id, %remote, "client moved to another session");
                conn.sent_away
                    .store(true, std::sync::atomic::Ordering::Release);
                break;
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => break,
            Ok(Some(Err(e))) => {
                let text = e.to_string();
                if text.contains("Space limit") || text.contains("too long") {
                    tracing::info!(conn = conn.id, %remote, "closing: frame too large: {text}");
                    ctx.metrics
                        .closed
                        .with_label_values(&["frame_too_large"])
                        .inc();
                    conn.outbox.close_signal().close(
                        1009,
                        format!(
                            "frame exceeds the maximum of {} bytes",
                            ctx.config.max_frame_bytes
                        ),
                    );
                } else {
                    tracing::debug!(conn = conn.id, "read error: {text}");
                }
                break;
            }
            Err(_) => {
                ctx.metrics.closed.with_label_values(&["idle"]).inc();
                conn.outbox
                    .close_signal()
                    .close(1001, "no frame received within the idle timeout");
                break;
            }
        }
    }
    // Withdraw this connection's publishers and subscriptions. A client sent away (the server
    // drains, or is cut off from the meta cluster) is re-registering on another session,
    // which takes its publishers over without a gap: they stay in the data tier for that
    // handover (see `reconcile`), also when the session serves again before this runs. A
    // connection cut because this server is stopping is not a client withdrawing either:
    // what it published stays for its re-registration elsewhere, and the data tier removes
    // it as a server-side loss (held back from subscribers) if the client does not come back.
    let ops = ctx.registry.close(&conn);
    if ctx.leaving()
        || ctx.shutdown.is_cancelled()
        || conn.sent_away.load(std::sync::atomic::Ordering::Acquire)
    {
        let grace = Duration::from_millis(ctx.config.handover_grace_ms);
        ctx.reconciler.hand_over(&ops, Instant::now() + grace);
    } else {
        ctx.forwarder.submit(ops);
    }
    ctx.pusher.drop_conn(&conn);
    conn.outbox.close_signal().close(1000, "bye");
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    tracing::debug!(conn = conn.id, "client disconnected");
}

async fn write_loop(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Frame>,
    conn: Arc<Conn>,
    push_frames: IntCounter,
) {
    loop {
        tokio::select! {
            biased;
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                conn.outbox.taken();
                // Everything already queued goes out with one flush (one write, mostly).
                let mut batch = vec![frame];
                while batch.len() < MAX_WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(f) => {
                            conn.outbox.taken();
                            batch.push(f);
                        }
                        Err(_) => break,
                    }
                }
                // Known from the hello on, which comes before any push.
                let join_pushes = conn
                    .hello
                    .get()
                    .is_some_and(|h| h.protocol >= BATCHING_PROTOCOL_VERSION);
                let write = async {
                    // A push's text is made here, one frame at a time, and freed once the
                    // socket's buffer has it.
                    for (text, carries) in Texts::new(batch, join_pushes) {
                        if let Carries::Pushes(_) = carries {
                            push_frames.inc();
                        }
                        sink.feed(Message::Text(text.into())).await?;
                    }
                    sink.flush().await
                };
                let sent = tokio::time::timeout(WRITE_TIMEOUT, write).await;
                if !matches!(sent, Ok(Ok(()))) {
                    conn.outbox.close_signal().close(1008, "write timed out");
                    break;
                }
            }
            (code, reason) = conn.outbox.close_signal().requested() => {
                let close = Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }));
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
                break;
            }
        }
    }
    // Account for frames never written.
    while rx.try_recv().is_ok() {
        conn.outbox.taken();
    }
}

/// A registration the data tier refused for good (after the session acknowledged it):
/// withdrawn from the session, any earlier version removed from the data tier, and its
/// client told with an error frame that has no `reqId` and names the publisher.
pub fn report_refused(ctx: &SessionState, publisher: &Publisher, error: ApiError) {
    let Some((unpublish, conn)) = ctx.registry.withdraw_refused(publisher) else {
        return;
    };
    ctx.forwarder.submit(vec![unpublish]);
    let Some(conn) = conn else { return };
    let message = format!(
        "publisher `{}` (version {}) of {} was refused by the data tier and withdrawn: {}",
        publisher.key.regist_id, publisher.version, publisher.data_info_id, error.message
    );
    send(
        &conn,
        &ServerFrame::Error {
            req_id: None,
            error: ApiError::new(error.code, message),
        },
    );
}

fn send(conn: &Conn, frame: &ServerFrame) {
    match serde_json::to_string(frame) {
        Ok(text) => {
            if conn.outbox.send(text).is_err() {
                conn.outbox
                    .close_signal()
                    .close(1008, "outgoing queue full: client does not keep up");
            }
        }
        Err(e) => tracing::error!("cannot encode a frame: {e}"),
    }
}

fn reply_error(ctx: &SessionState, conn: &Conn, req_id: Option<u64>, error: ApiError) {
    ctx.metrics
        .bad_frames
        .with_label_values(&[error.code.as_str()])
        .inc();
    // Bounded: one client sending bad frames as fast as it can must not flood the log.
    if ctx.refusal_log.check().is_ok() {
        tracing::info!(conn = conn.id, remote = %conn.remote, code = %error.code, "refused a client frame: {}", error.message);
    }
    send(conn, &ServerFrame::Error { req_id, error });
}

fn handle_text(ctx: &Arc<SessionState>, conn: &Arc<Conn>, text: &str) {
    let frame = match ClientFrame::decode(text) {
        Ok(f) => f,
        Err(e) => return reply_error(ctx, conn, e.req_id, e.error),
    };
    let req_id = frame.req_id();
    match dispatch(ctx, conn, frame) {
        Ok(Some(reply)) => send(conn, &reply),
        Ok(None) => {}
        Err(e) => {
            // A client that cannot prove who it is gets one answer, then the door.
            let close = matches!(e, SessionError::Unauthenticated(_));
            reply_error(ctx, conn, req_id, e.into());
            if close {
                ctx.metrics
                    .closed
                    .with_label_values(&["unauthenticated"])
                    .inc();
                conn.outbox.close_signal().close(4001, "not authenticated");
            }
        }
    }
}

/// What a client asks to do, for [`authorize`].
#[derive(Clone, Copy)]
enum Action<'a> {
    Connect,
    Publish(&'a DataInfoId),
    Subscribe(&'a DataInfoId),
}

/// The one place a client request is authorised: the blacklist, then (with auth on) the
/// permissions of the principal whose key signed the connection's `hello`, which must still
/// be valid.
fn authorize(
    ctx: &SessionState,
    conn: &Conn,
    hello: Option<&Hello>,
    app: &str,
    action: Action<'_>,
) -> Result<(), SessionError> {
    let view = ctx.membership.view();
    let ip = conn.remote.ip().to_string();
    let listed = view
        .settings
        .client_blacklist
        .iter()
        .any(|b| b == &ip || (!app.is_empty() && b == app));
    if listed {
        return Err(SessionError::Forbidden(format!("{ip} is blacklisted")));
    }
    if !ctx.guard.enabled() {
        return Ok(());
    }
    let Some(hello) = hello else {
        return Ok(());
    };
    let Some(key) = &hello.key_id else {
        return Err(SessionError::Unauthenticated(
            "no verified access key".into(),
        ));
    };
    // The principal's grants as the ACL holds them now, not as they were at `hello`: a
    // narrowed permission applies to connections already open.
    let Some(grants) = ctx.guard.grants_of(key) else {
        return Err(SessionError::Unauthenticated(format!(
            "access key `{key}` was revoked"
        )));
    };
    let allowed = match action {
        Action::Connect => true,
        Action::Publish(id) => grants.may_publish(id),
        Action::Subscribe(id) => grants.may_subscribe(id),
    };
    if !allowed {
        let (what, id) = match action {
            Action::Publish(id) => ("publish", id),
            Action::Subscribe(id) => ("subscribe to", id),
            Action::Connect => unreachable!("connecting is always allowed"),
        };
        return Err(SessionError::Forbidden(format!(
            "principal `{}` may not {what} {id}",
            grants.principal
        )));
    }
    Ok(())
}

/// Closes every connection whose access key was revoked, after every ACL change.
pub async fn close_revoked(ctx: Arc<SessionState>) {
    if !ctx.guard.enabled() {
        return;
    }
    let mut revisions = ctx.membership.acl_revisions();
    loop {
        tokio::select! {
            changed = revisions.changed() => if changed.is_err() { return },
            _ = ctx.shutdown.cancelled() => return,
        }
        for conn in ctx.registry.conns() {
            let Some(key) = conn.hello.get().and_then(|h| h.key_id.clone()) else {
                continue;
            };
            if !ctx.guard.key_is_valid(&key) {
                tracing::info!(conn = conn.id, remote = %conn.remote, %key, "closing: access key revoked");
                ctx.metrics.closed.with_label_values(&["key_revoked"]).inc();
                conn.outbox.close_signal().close(4001, "access key revoked");
            }
        }
    }
}

fn dispatch(
    ctx: &Arc<SessionState>,
    conn: &Arc<Conn>,
    frame: ClientFrame,
) -> Result<Option<ServerFrame>, SessionError> {
    match frame {
        ClientFrame::Hello {
            req_id,
            protocol,
            client_id,
            zone,
            app,
            auth,
        } => {
            let protocol = negotiate(protocol).ok_or(SessionError::Protocol(
                protocol,
                OLDEST_PROTOCOL_VERSION,
                PROTOCOL_VERSION,
            ))?;
            if ctx.leaving() {
                return Err(SessionError::ShuttingDown);
            }
            if conn.hello.get().is_some() {
                return Err(SessionError::DuplicateHello);
            }
            validate_part("clientId", &client_id)?;
            let grants = ctx
                .guard
                .verify_hello(&client_id, auth.as_ref())
                .map_err(|e| SessionError::Unauthenticated(e.to_string()))?;
            let hello = Hello {
                protocol,
                client_id: match &grants {
                    Some(g) => format!("{}:{client_id}", g.principal),
                    None => client_id,
                },
                zone,
                app,
                key_id: grants.as_ref().and(auth.map(|a| a.key_id)),
                grants,
            };
            if hello.grants.is_some() {
                // The id its publishers are keyed by must pass the same checks, here rather
                // than at every registration after a welcome.
                validate_part("principal:clientId", &hello.client_id)?;
            }
            authorize(ctx, conn, Some(&hello), &hello.app, Action::Connect)?;
            conn.hello
                .set(hello)
                .map_err(|_| SessionError::DuplicateHello)?;
            Ok(Some(ServerFrame::Welcome {
                req_id,
                protocol,
                conn_id: conn.id,
                session_id: ctx.id.to_string(),
                max_frame_bytes: ctx.config.max_frame_bytes,
            }))
        }
        ClientFrame::RegisterPublisher {
            req_id,
            regist_id,
            data_id,
            instance_id,
            group,
            data,
            version,
        } => {
            let hello = conn.hello.get().ok_or(SessionError::NoHello)?;
            let id = DataInfoId::new(&data_id, instance_id.as_deref(), group.as_deref())?;
            authorize(ctx, conn, Some(hello), &hello.app, Action::Publish(&id))?;
            conn.budget.admit()?;
            let id = ctx.ids.intern(id);
            let ops = ctx.registry.register_publisher(
                conn,
                Registration {
                    regist_id: &regist_id,
                    data_info_id: id,
                    data,
                    version,
                },
            )?;
            ctx.forwarder.submit(ops);
            Ok(Some(ServerFrame::Ack { req_id }))
        }
        ClientFrame::UnregisterPublisher { req_id, regist_id } => {
            if let Some(op) = ctx.registry.unregister_publisher(conn, &regist_id)? {
                ctx.forwarder.submit(vec![op]);
            }
            Ok(Some(ServerFrame::Ack { req_id }))
        }
        ClientFrame::RegisterSubscriber {
            req_id,
            regist_id,
            data_id,
            instance_id,
            group,
            known_version,
        } => {
            let hello = conn.hello.get().ok_or(SessionError::NoHello)?;
            validate_part("registId", &regist_id)?;
            let id = DataInfoId::new(&data_id, instance_id.as_deref(), group.as_deref())?;
            authorize(ctx, conn, Some(hello), &hello.app, Action::Subscribe(&id))?;
            conn.budget.admit()?;
            let id = ctx.ids.intern(id);
            let previous = {
                let mut subscribers = conn.subscribers.lock();
                if !subscribers.contains_key(&regist_id) {
                    ctx.registry.limits.check_subscriptions(subscribers.len())?;
                }
                subscribers.insert(regist_id.clone(), id.clone())
            };
            if let Some(prev) = previous {
                ctx.pusher.unsubscribe(conn.id, &regist_id, &prev);
            }
            // The ack goes out before the first push.
            send(conn, &ServerFrame::Ack { req_id });
            ctx.pusher.subscribe(conn, &regist_id, id, known_version);
            Ok(None)
        }
        ClientFrame::UnregisterSubscriber { req_id, regist_id } => {
            let id = conn.subscribers.lock().remove(&regist_id).ok_or_else(|| {
                SessionError::Unknown {
                    what: "subscriber",
                    regist_id: regist_id.chars().take(64).collect(),
                }
            })?;
            ctx.pusher.unsubscribe(conn.id, &regist_id, &id);
            Ok(Some(ServerFrame::Ack { req_id }))
        }
        ClientFrame::PushAck { push_id } => {
            ctx.pusher.on_ack(conn, push_id);
            Ok(None)
        }
        ClientFrame::PushAcks { push_ids } => {
            for push_id in push_ids {
                ctx.pusher.on_ack(conn, push_id);
            }
            Ok(None)
        }
        ClientFrame::Ping { req_id } => Ok(Some(ServerFrame::Pong { req_id })),
    }
}
