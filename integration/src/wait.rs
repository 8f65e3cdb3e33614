//! Waiting on conditions with deadlines.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every few milliseconds until it returns `Some`, or panics with `what` after
/// `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Like [`eventually`] for a boolean condition.
pub async fn until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, timeout, || {
        let f = check();
        async move { f.await.then_some(()) }
    })
    .await
}

/// Checks `check` every few milliseconds for `period`; panics with `what` the first time it is
/// false (for what must stay true, not what must become true).
pub async fn holds<F, Fut>(what: &str, period: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + period;
    while Instant::now() < end {
        assert!(check().await, "no longer true: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Takes a subscription's updates until one satisfies `pred`; panics with `what` (and the
/// last update seen) when none does within `timeout` or the subscription closes.
pub async fn update(
    sub: &mut client_sdk::Subscriber,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&client_sdk::DatumUpdate) -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(u)) if pred(&u) => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("subscription closed while waiting for {what}"),
            Err(_) => panic!("no update with {what}; last: {:?}", sub.latest()),
        }
    }
}
