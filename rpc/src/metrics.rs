//! Prometheus metrics. Each server owns its own [`prometheus::Registry`] (several servers can
//! share one process, as in `registry standalone` and the tests) and renders it at `/metrics`.

use prometheus::{Encoder, Registry, TextEncoder};

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        tracing::warn!("cannot encode metrics: {e}");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Registers a collector, logging instead of failing if it is already registered.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: &C) {
    if let Err(e) = registry.register(Box::new(c.clone())) {
        tracing::warn!("metric registration failed: {e}");
    }
}
