//! Caps on what clients may hold and how fast they may register, so one client (or many)
//! cannot grow a session's memory without bound or starve the others.
//!
//! - [`ConnectionSlots`]: the connections a session holds at most; a WebSocket upgrade past
//!   the cap is refused with `limit_exceeded` before any per-connection state exists.
//! - [`ConnLimits`]: per connection, the publishers and subscriptions it may hold and the
//!   rate of its registrations (a token bucket: a sustained rate and a burst large enough
//!   for a client re-registering everything after a reconnect).
//!
//! Every refusal is a typed error to the client and a metric.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::SessionConfig;
use crate::error::SessionError;

/// The per-connection caps, from the server's configuration.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    pub max_publishers: usize,
    pub max_subscriptions: usize,
    /// `None`: registrations are not rate limited.
    pub rate: Option<Quota>,
}

impl ConnLimits {
    pub fn from_config(config: &SessionConfig) -> Self {
        let rate = NonZeroU32::new(config.registrations_per_sec).map(|per_sec| {
            let burst = NonZeroU32::new(config.registration_burst).unwrap_or(per_sec);
            Quota::per_second(per_sec).allow_burst(burst.max(per_sec))
        });
        Self {
            max_publishers: config.max_publishers_per_conn,
            max_subscriptions: config.max_subscriptions_per_conn,
            rate,
        }
    }

    /// A fresh registration budget for one connection.
    pub fn budget(&self) -> RegistrationBudget {
        RegistrationBudget {
            limiter: self.rate.map(RateLimiter::direct),
        }
    }

    /// Refuses one more publisher on a connection that holds `held`.
    pub fn check_publishers(&self, held: usize) -> Result<(), SessionError> {
        if held >= self.max_publishers {
            return Err(SessionError::LimitExceeded(format!(
                "a connection may hold at most {} publishers",
                self.max_publishers
            )));
        }
        Ok(())
    }

    /// Refuses one more subscription on a connection that holds `held`.
    pub fn check_subscriptions(&self, held: usize) -> Result<(), SessionError> {
        if held >= self.max_subscriptions {
            return Err(SessionError::LimitExceeded(format!(
                "a connection may hold at most {} subscriptions",
                self.max_subscriptions
            )));
        }
        Ok(())
    }
}

/// The registration rate limiter of one connection.
pub struct RegistrationBudget {
    limiter: Option<DefaultDirectRateLimiter>,
}

impl RegistrationBudget {
    /// Takes one registration from the budget, or refuses it with `rate_limited`.
    pub fn admit(&self) -> Result<(), SessionError> {
        match &self.limiter {
            Some(l) if l.check().is_err() => Err(SessionError::RateLimited),
            _ => Ok(()),
        }
    }
}

/// The connections a session may hold at once.
#[derive(Debug)]
pub struct ConnectionSlots {
    open: AtomicUsize,
    max: usize,
}

/// One held connection slot, given back when dropped.
#[derive(Debug)]
pub struct ConnSlot(Arc<ConnectionSlots>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionSlots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A slot for one more connection, or `limit_exceeded` when all are taken.
    pub fn acquire(self: &Arc<Self>) -> Result<ConnSlot, SessionError> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map(|_| ConnSlot(self.clone()))
            .map_err(|_| {
                SessionError::LimitExceeded(format!(
                    "this session server holds its maximum of {} connections; try another",
                    self.max
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_are_given_back() {
        let slots = ConnectionSlots::new(2);
        let a = slots.acquire().unwrap();
        let _b = slots.acquire().unwrap();
        assert!(slots.acquire().is_err());
        drop(a);
        assert!(slots.acquire().is_ok());
    }

    #[test]
    fn the_burst_then_the_rate() {
        let limits = ConnLimits {
            max_publishers: 1,
            max_subscriptions: 1,
            rate: Some(
                Quota::per_hour(NonZeroU32::new(1).unwrap())
                    .allow_burst(NonZeroU32::new(3).unwrap()),
            ),
        };
        let budget = limits.budget();
        for _ in 0..3 {
            budget.admit().unwrap();
        }
        assert!(matches!(budget.admit(), Err(SessionError::RateLimited)));
        assert!(limits.check_publishers(0).is_ok());
        assert!(limits.check_publishers(1).is_err());
        assert!(limits.check_subscriptions(1).is_err());
    }
}
