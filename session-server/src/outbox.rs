//! The outgoing queue of one client connection.
//!
//! Frames are queued in a bounded channel that one writer task drains into the WebSocket:
//! replies serialised, pushes as the datum they share with other subscriptions and their own
//! ids (see `push::frame`), joined into text only as they are written. Pushes are
//! flow-controlled upstream (at most one unacknowledged push per subscription, newer datums
//! superseding older unsent ones, see `push`), so the queue only overflows when a client stops
//! reading altogether; it is then closed with a reason instead of letting the server's memory
//! grow.
//!
//! The writer takes every frame already queued at once ([`Texts`]); on a connection that
//! speaks protocol 2, pushes queued one after another go out as one `pushes` frame.

use parking_lot::Mutex;
use prometheus::IntGauge;
use tokio::sync::{mpsc, Notify};

use crate::push::QueuedPush;

/// One frame waiting in an outbox.
#[derive(Debug)]
pub enum Frame {
    /// Serialised when it was queued (replies, errors, `go_away`).
    Text(String),
    /// A push, serialised as it is written.
    Push(QueuedPush),
}

/// Most bytes of pushes joined into one `pushes` frame; a push larger than this goes alone.
/// No more than the WebSocket's write buffer: that buffer grows to the largest frame written
/// through it and keeps that size for the connection's life: with frames of up to 256 KiB a
/// W1 session at 8,000 changes/s peaked 8 MiB higher than with single pushes.
const MAX_PUSHES_FRAME_BYTES: usize = crate::api::WS_WRITE_BUFFER_BYTES;

/// The texts of frames taken off an outbox together, in their order. With `join_pushes`
/// (the connection speaks protocol 2), each run of consecutive pushes becomes one `pushes`
/// frame of at most [`MAX_PUSHES_FRAME_BYTES`]; otherwise every frame stays one frame.
pub struct Texts {
    frames: std::iter::Peekable<std::vec::IntoIter<Frame>>,
    join_pushes: bool,
}

impl Texts {
    pub fn new(frames: Vec<Frame>, join_pushes: bool) -> Self {
        Self {
            frames: frames.into_iter().peekable(),
            join_pushes,
        }
    }
}

/// What one text written carries, for the writer's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// A reply, an error or a `go_away`.
    Other,
    /// This many pushes.
    Pushes(usize),
}

impl Iterator for Texts {
    type Item = (String, Carries);

    fn next(&mut self) -> Option<Self::Item> {
        let push = match self.frames.next()? {
            Frame::Text(text) => return Some((text, Carries::Other)),
            Frame::Push(push) => push,
        };
        let mut bytes = push.approx_bytes();
        let mut run = vec![push];
        while self.join_pushes {
            let fits = |f: &Frame| match f {
                Frame::Push(p) => bytes + p.approx_bytes() <= MAX_PUSHES_FRAME_BYTES,
                Frame::Text(_) => false,
            };
            match self.frames.next_if(fits) {
                Some(Frame::Push(p)) => {
                    bytes += p.approx_bytes();
                    run.push(p);
                }
                _ => break,
            }
        }
        let text = match run.as_slice() {
            [one] => one.text(),
            many => QueuedPush::join(many),
        };
        Some((text, Carries::Pushes(run.len())))
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Frame::Text(text)
    }
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    #[error("outgoing queue is full")]
    Full,
    #[error("connection is closed")]
    Closed,
}

/// Sending half; the writer task owns the receiver.
pub struct Outbox {
    tx: mpsc::Sender<Frame>,
    /// Frames queued on all connections (shared gauge).
    depth: IntGauge,
    /// Fired (with a reason) to make the writer close the socket.
    close: CloseSignal,
}

impl Outbox {
    pub fn new(capacity: usize, depth: IntGauge) -> (Self, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(capacity.max(16));
        (
            Self {
                tx,
                depth,
                close: CloseSignal::default(),
            },
            rx,
        )
    }

    /// Queues a frame without waiting.
    pub fn send(&self, frame: impl Into<Frame>) -> Result<(), OutboxError> {
        match self.tx.try_send(frame.into()) {
            Ok(()) => {
                self.depth.inc();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(OutboxError::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(OutboxError::Closed),
        }
    }

    /// Called by the writer for every frame it takes off the queue.
    pub fn taken(&self) {
        self.depth.dec();
    }

    pub fn close_signal(&self) -> &CloseSignal {
        &self.close
    }
}

/// A one-shot "close with this reason" signal.
#[derive(Default)]
pub struct CloseSignal {
    /// WebSocket close code and reason; set once.
    reason: Mutex<Option<(u16, String)>>,
    notify: Notify,
}

impl CloseSignal {
    /// Requests a close with a WebSocket close code and reason; the first request wins.
    pub fn close(&self, code: u16, reason: impl Into<String>) {
        let mut r = self.reason.lock();
        if r.is_none() {
            *r = Some((code, reason.into()));
            self.notify.notify_waiters();
        }
    }

    pub fn reason(&self) -> Option<(u16, String)> {
        self.reason.lock().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.reason.lock().is_some()
    }

    /// Waits until a close is requested.
    pub async fn requested(&self) -> (u16, String) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.reason() {
                return r;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use registry_common::id::DataInfoId;
    use registry_common::model::PushDatum;

    use super::*;
    use crate::push::Prepared;

    fn push(push_id: u64, payload_bytes: usize) -> Frame {
        let id = DataInfoId::parse("svc.texts#@#DEFAULT_INSTANCE_ID#@#DEFAULT_GROUP").unwrap();
        let mut datum = PushDatum::empty(id, 1);
        datum.data = vec!["x".repeat(payload_bytes)];
        Frame::Push(QueuedPush::for_test(
            Arc::new(Prepared::new(datum)),
            push_id,
            "sub",
        ))
    }

    fn shapes(frames: Vec<Frame>, join_pushes: bool) -> Vec<(Carries, String)> {
        Texts::new(frames, join_pushes)
            .map(|(text, carries)| {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                (carries, v["type"].as_str().unwrap().to_string())
            })
            .collect()
    }

    #[test]
    fn consecutive_pushes_share_a_frame_only_on_protocol_2() {
        let frames = || {
            vec![
                Frame::Text(r#"{"type":"ack","reqId":1}"#.into()),
                push(1, 10),
                push(2, 10),
                push(3, 10),
                Frame::Text(r#"{"type":"pong","reqId":2}"#.into()),
                push(4, 10),
            ]
        };
        let pushes = |n| {
            (
                Carries::Pushes(n),
                if n == 1 { "push" } else { "pushes" }.to_string(),
            )
        };
        let other = |t: &str| (Carries::Other, t.to_string());
        assert_eq!(
            shapes(frames(), true),
            vec![other("ack"), pushes(3), other("pong"), pushes(1)]
        );
        assert_eq!(
            shapes(frames(), false),
            vec![
                other("ack"),
                pushes(1),
                pushes(1),
                pushes(1),
                other("pong"),
                pushes(1)
            ]
        );
    }

    #[test]
    fn a_pushes_frame_stops_at_its_byte_cap() {
        let big = MAX_PUSHES_FRAME_BYTES / 2;
        let frames = vec![push(1, big), push(2, big), push(3, 10), push(4, 2 * big)];
        let counts: Vec<Carries> = Texts::new(frames, true).map(|(_, c)| c).collect();
        assert_eq!(
            counts,
            vec![Carries::Pushes(1), Carries::Pushes(2), Carries::Pushes(1)]
        );
    }
}
