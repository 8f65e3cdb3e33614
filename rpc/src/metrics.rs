//! Prometheus metrics. Each server owns its own [`prometheus::Registry`] (several servers can
//! share one process, as in `registry standalone` and the tests) and renders it at `/metrics`.
//!
//! Conventions: names carry the role (`registry_meta_…`, `registry_data_…`,
//! `registry_session_…`) and the unit (`_seconds`, `_bytes`, `_total` for counters); label
//! values are plain lowercase words. Every latency is a histogram over [`LATENCY_BUCKETS`]; the
//! process series (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, ...) are the Prometheus client's standard ones, added by
//! [`register_process`].

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Buckets of every latency histogram, in seconds: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

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

/// Adds the process's CPU time, resident and virtual memory, open and maximum file
/// descriptors, threads and start time (Linux; nothing elsewhere).
pub fn register_process(registry: &Registry) {
    #[cfg(target_os = "linux")]
    if let Err(e) = registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    )) {
        tracing::warn!("process metrics registration failed: {e}");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
}

// Constructors for the metric definitions of the servers: the names and help texts are
// static, so a failure is a programming error caught by every test that starts a server.

pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    register(registry, &g);
    g
}

pub fn gauge_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), &[label]).expect("static metric definition");
    register(registry, &g);
    g
}

pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    register(registry, &c);
    c
}

/// A counter per value of `label`; the `known` values are exported at 0 from the start, so
/// a series exists (and a rate can be drawn) before its first event.
pub fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    known: &[&str],
) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("static metric definition");
    for value in known {
        c.with_label_values(&[value]);
    }
    register(registry, &c);
    c
}

/// A latency histogram in seconds over [`LATENCY_BUCKETS`].
pub fn latency(registry: &Registry, name: &str, help: &str) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
        .expect("static metric definition");
    register(registry, &h);
    h
}

/// Estimates the `q` quantile (0..1) of what a histogram observed between two snapshots of
/// its cumulative bucket counts (`before` may be empty: since the start), by linear
/// interpolation inside the bucket where it falls; `None` without observations. For status
/// pages; Prometheus computes the same from the series with `histogram_quantile`.
pub fn quantile(before: &[u64], now: &[u64], q: f64) -> Option<f64> {
    let counts: Vec<u64> = now
        .iter()
        .enumerate()
        .map(|(i, c)| c.saturating_sub(before.get(i).copied().unwrap_or(0)))
        .collect();
    let total = *counts.last()?;
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut lower_bound = 0.0;
    let mut lower_count = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        let upper = LATENCY_BUCKETS
            .get(i)
            .copied()
            .unwrap_or(*LATENCY_BUCKETS.last()?);
        if count as f64 >= rank {
            let inside = count.saturating_sub(lower_count);
            if inside == 0 {
                return Some(upper);
            }
            let fraction = (rank - lower_count as f64) / inside as f64;
            return Some(lower_bound + (upper - lower_bound) * fraction);
        }
        lower_bound = upper;
        lower_count = count;
    }
    LATENCY_BUCKETS.last().copied()
}

/// The cumulative bucket counts of a histogram over [`LATENCY_BUCKETS`], the `+Inf` bucket
/// last, as [`quantile`] takes them.
pub fn cumulative(h: &Histogram) -> Vec<u64> {
    let metric = prometheus::core::Metric::metric(h);
    let hist = metric.get_histogram();
    let mut out: Vec<u64> = hist
        .get_bucket()
        .iter()
        .map(|b| b.cumulative_count())
        .collect();
    out.push(hist.get_sample_count());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_and_follow_a_window() {
        let r = Registry::new();
        let h = latency(&r, "t_seconds", "test");
        assert_eq!(quantile(&[], &cumulative(&h), 0.5), None);
        for _ in 0..100 {
            h.observe(0.0015); // in (0.001, 0.002]
        }
        let p50 = quantile(&[], &cumulative(&h), 0.5).unwrap();
        assert!((0.001..=0.002).contains(&p50), "{p50}");
        let before = cumulative(&h);
        for _ in 0..10 {
            h.observe(0.3); // in (0.2, 0.5]
        }
        let p99 = quantile(&before, &cumulative(&h), 0.99).unwrap();
        assert!((0.2..=0.5).contains(&p99), "windowed p99 {p99}");
        let all = quantile(&[], &cumulative(&h), 0.5).unwrap();
        assert!(all < 0.002, "{all}");
        h.observe(60.0);
        assert_eq!(quantile(&[], &cumulative(&h), 1.0), Some(10.0));
    }
}
