//! Request ids that cross tiers. Every HTTP request a server handles runs in a `request`
//! span carrying an id: the caller's `x-request-id` when it sent a valid one, a new one
//! otherwise; the answer carries it back. Calls a server makes while handling a request pass
//! the same id on ([`crate::HttpClient`] reads [`current`]), and background lanes that start
//! a call of their own (forwarded writes, change notifications, fetches) make one with
//! [`scope`], so one write or push can be followed through every server's log by its id.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header that carries the id.
pub const HEADER: &str = "x-request-id";

/// Longest id taken from a caller; a longer or odd one is replaced.
const MAX_LEN: usize = 64;

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// A new id: 16 hex digits.
pub fn fresh() -> Arc<str> {
    format!("{:016x}", rand::random::<u64>()).into()
}

/// The id of the request being handled (or of the [`scope`] around the caller).
pub fn current() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Runs `fut` with `id` as the current request id, in a `request` span that names it.
pub async fn scope<F: Future>(id: Arc<str>, fut: F) -> F::Output {
    let span = tracing::info_span!("request", id = %id);
    CURRENT.scope(id, fut.instrument(span)).await
}

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Middleware: the request's span and id (see the module comment).
pub async fn layer(request: Request, next: Next) -> Response {
    let id: Arc<str> = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(Arc::from)
        .unwrap_or_else(fresh);
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = %request.uri().path()
    );
    let mut response = CURRENT
        .scope(id.clone(), next.run(request).instrument(span))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_are_scoped_and_callers_ids_are_checked() {
        assert!(current().is_none());
        let id = fresh();
        assert_eq!(id.len(), 16);
        let seen = scope(id.clone(), async { current() }).await;
        assert_eq!(seen.as_deref(), Some(&*id));
        assert!(acceptable("5f0c3a9e-01"));
        assert!(!acceptable(""));
        assert!(!acceptable("a b"));
        assert!(!acceptable("x\n"));
        assert!(!acceptable(&"a".repeat(65)));
    }
}
