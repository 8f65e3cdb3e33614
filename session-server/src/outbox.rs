//! The outgoing queue of one client connection.
//!
//! Frames are queued in a bounded channel that one writer task drains into the WebSocket:
//! replies serialised, pushes as the datum they share with other subscriptions and their own
//! ids (see `push::frame`), joined into text only as they are written. Pushes are
//! flow-controlled upstream (at most one unacknowledged push per subscription, newer datums
//! superseding older unsent ones, see `push`), so the queue only overflows when a client stops
//! reading altogether; it is then closed with a reason instead of letting the server's memory
//! grow.

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

impl Frame {
    /// The frame's text.
    pub fn into_text(self) -> String {
        match self {
            Frame::Text(text) => text,
            Frame::Push(push) => push.text(),
        }
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
