//! The benchmark report: a JSON document (one object per phase, with the parameters used)
//! and the same figures as a Markdown table.

use serde::Serialize;

use super::params::Params;
use crate::rss::RssReport;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        Self {
            samples: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Register {
    pub registrations: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// First registration to every subscriber holding all publishers of its service.
    pub full_convergence_ms: u64,
    /// Subscribers that first held all publishers of their service in each second since the
    /// first registration (the shape of convergence: how fast the tail drains).
    pub converged_by_second: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Churn {
    pub republishes: u64,
    pub seconds: f64,
    pub latency: Latency,
    /// Latency of the changes sent in each second of the phase (to see when a tail formed).
    pub by_second: Vec<Latency>,
    pub pushes_per_second: f64,
    /// Subscribers whose last push is not the latest data, after quiescence.
    pub stale_subscribers: u64,
    /// Primary-to-replica lag observed by the data servers during the phase (`None` when
    /// the cluster was not started by the tool).
    pub replication_lag: Option<ReplicationLag>,
}

/// Replication lag over one phase, from the data servers' histogram
/// `registry_data_replication_lag_seconds` (difference of two scrapes, summed over the
/// servers). Quantiles are interpolated inside a bucket, so each comes with its bucket.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicationLag {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Bounds (ms) of the bucket each quantile fell in: p50, p99, p999.
    pub buckets_ms: [(f64, f64); 3],
    /// Cumulative count per upper bound (ms; `inf` last).
    pub histogram: Vec<(f64, u64)>,
}

impl ReplicationLag {
    pub fn of(buckets: &super::launch::Buckets) -> Option<Self> {
        use super::launch::quantile;
        let ms = |(v, lo, hi): (f64, f64, f64)| (v * 1e3, (lo * 1e3, hi * 1e3));
        let (p50, b50) = ms(quantile(buckets, 0.5)?);
        let (p99, b99) = ms(quantile(buckets, 0.99)?);
        let (p999, b999) = ms(quantile(buckets, 0.999)?);
        Some(Self {
            samples: buckets.last().map_or(0, |b| b.1),
            p50_ms: p50,
            p99_ms: p99,
            p999_ms: p999,
            buckets_ms: [b50, b99, b999],
            histogram: buckets.iter().map(|(le, n)| (le * 1e3, *n)).collect(),
        })
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Failover {
    pub killed: String,
    /// Kill to every subscriber holding, for every publisher, data at least as new as
    /// what was sent before the kill.
    pub convergence_ms: u64,
    /// Publishers missing from a subscriber's final view.
    pub publishers_lost: u64,
    pub stale_subscribers: u64,
    /// Publish-to-push latency of changes sent during the failover phase.
    pub latency: Latency,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcMemory {
    pub name: String,
    pub role: String,
    pub peak_rss_kib: u64,
    /// Highest proportional set size read (every 50 ms through registration, every second
    /// after): shared pages count in part.
    pub peak_pss_kib: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Footprint {
    pub processes: Vec<ProcMemory>,
    /// The sum of every server's own peak RSS: a page several servers share (the text of a
    /// binary three of them run, libc) counts once in each.
    pub total_peak_rss_mib: f64,
    /// The highest sum of the servers' PSS at one reading: the cluster's memory with every
    /// page counted once (readings every 50 ms through registration, so a shorter peak can
    /// be missed).
    pub total_peak_pss_mib: f64,
    /// Growth of the data servers' resident memory over the register phase, per publisher.
    pub data_bytes_per_publisher: f64,
    /// The same per stored copy, minus the payload.
    pub data_bytes_per_copy_beyond_payload: f64,
    /// Per stored copy beyond the payload once the data servers' memory has settled after
    /// the register phase (transient request buffers freed and returned to the system).
    pub data_bytes_per_copy_settled: f64,
    /// Growth of the sessions' resident memory over the register phase, per registration
    /// (publishers and subscriptions together: a session holds both, with the datum cache
    /// and the connections' buffers).
    pub session_bytes_per_registration: f64,
}

/// The sessions' periodic reconciliation passes up to the end of churn (from their
/// `registry_session_{repair,pull}_pass_seconds`, all sessions together).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Passes {
    pub repairs: u64,
    pub repair_mean_ms: f64,
    pub pulls: u64,
    /// Pacing included: the periodic pull is spread over half the interval.
    pub pull_mean_ms: f64,
}

impl Passes {
    /// From the counters scraped from every server (`ProcCluster::counters`).
    pub fn of(counters: &[(String, Vec<(String, f64)>)]) -> Option<Self> {
        let total = |name: &str| -> f64 {
            counters
                .iter()
                .flat_map(|(_, c)| c.iter())
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v)
                .sum()
        };
        let repairs = total("registry_session_repair_pass_seconds_count");
        let pulls = total("registry_session_pull_pass_seconds_count");
        if repairs + pulls == 0.0 {
            return None;
        }
        let mean = |sum: f64, n: f64| if n > 0.0 { sum / n * 1e3 } else { 0.0 };
        Some(Self {
            repairs: repairs as u64,
            repair_mean_ms: mean(total("registry_session_repair_pass_seconds_sum"), repairs),
            pulls: pulls as u64,
            pull_mean_ms: mean(total("registry_session_pull_pass_seconds_sum"), pulls),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub params: Params,
    pub commit: Option<String>,
    pub register: Register,
    pub churn: Churn,
    pub failover: Option<Failover>,
    pub footprint: Option<Footprint>,
    /// The sessions' reconciliation passes (`None` when the cluster was not started by the
    /// tool).
    pub passes: Option<Passes>,
    /// Every server's resident memory over the run (`None` when the cluster was not started
    /// by the tool).
    pub rss: Option<RssReport>,
}

impl Report {
    /// Whether the run met the correctness bar: nothing lost, nothing stale.
    pub fn correct(&self) -> bool {
        self.churn.stale_subscribers == 0
            && self
                .failover
                .as_ref()
                .is_none_or(|f| f.publishers_lost == 0 && f.stale_subscribers == 0)
    }

    pub fn markdown(&self) -> String {
        let p = &self.params;
        let mut out = format!(
            "### registry-bench {} (D={}, P={}, S={}, C={}, B={} B, Q={}/s, T={} s)\n\n| phase | figure | value |\n|---|---|---|\n",
            p.workload, p.services, p.publishers, p.subscribers, p.clients, p.payload, p.rate, p.churn_secs
        );
        let r = &self.register;
        out += &format!("| register | registrations/s | {:.0} |\n", r.per_second);
        out += &format!(
            "| register | full convergence | {} ms |\n",
            r.full_convergence_ms
        );
        let c = &self.churn;
        let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
        out += &format!(
            "| churn | publish-to-push p50 | {} |\n",
            ms(c.latency.p50_us)
        );
        out += &format!(
            "| churn | publish-to-push p99 | {} |\n",
            ms(c.latency.p99_us)
        );
        out += &format!(
            "| churn | publish-to-push p999 | {} |\n",
            ms(c.latency.p999_us)
        );
        out += &format!(
            "| churn | publish-to-push max | {} |\n",
            ms(c.latency.max_us)
        );
        out += &format!("| churn | pushes/s | {:.0} |\n", c.pushes_per_second);
        out += &format!(
            "| churn | stale subscribers after quiescence | {} |\n",
            c.stale_subscribers
        );
        if let Some(l) = &c.replication_lag {
            for (name, v, (lo, hi)) in [
                ("p50", l.p50_ms, l.buckets_ms[0]),
                ("p99", l.p99_ms, l.buckets_ms[1]),
                ("p999", l.p999_ms, l.buckets_ms[2]),
            ] {
                out += &format!(
                    "| churn | replication lag {name} ({} samples) | {v:.2} ms (bucket {lo}-{hi} ms) |\n",
                    l.samples
                );
            }
        }
        if let Some(f) = &self.failover {
            out += &format!(
                "| failover | kill -9 {} to converged | {} ms |\n",
                f.killed, f.convergence_ms
            );
            out += &format!("| failover | publishers lost | {} |\n", f.publishers_lost);
            out += &format!(
                "| failover | stale subscribers after quiescence | {} |\n",
                f.stale_subscribers
            );
            out += &format!(
                "| failover | publish-to-push p99 during failover | {} |\n",
                ms(f.latency.p99_us)
            );
        }
        if let Some(m) = &self.footprint {
            for proc in &m.processes {
                out += &format!(
                    "| footprint | peak RSS {} | {:.1} MiB |\n",
                    proc.name,
                    proc.peak_rss_kib as f64 / 1024.0
                );
            }
            out += &format!(
                "| footprint | all servers, peak RSS | {:.1} MiB |\n",
                m.total_peak_rss_mib
            );
            out += &format!(
                "| footprint | all servers, peak PSS (shared pages counted once) | {:.1} MiB |\n",
                m.total_peak_pss_mib
            );
            out += &format!(
                "| footprint | data-server memory per publisher | {:.0} B |\n",
                m.data_bytes_per_publisher
            );
            out += &format!(
                "| footprint | per stored copy beyond payload | {:.0} B |\n",
                m.data_bytes_per_copy_beyond_payload
            );
            out += &format!(
                "| footprint | per stored copy beyond payload, settled | {:.0} B |\n",
                m.data_bytes_per_copy_settled
            );
            out += &format!(
                "| footprint | session-server memory per registration (publisher or subscription) | {:.0} B |\n",
                m.session_bytes_per_registration
            );
        }
        if let Some(ps) = &self.passes {
            let mean = |n: u64, ms: f64| match n {
                0 => "none finished".to_owned(),
                n => format!("{ms:.0} ms (mean of {n})"),
            };
            out += &format!(
                "| reconcile | repair of every slot | {} |\n",
                mean(ps.repairs, ps.repair_mean_ms)
            );
            out += &format!(
                "| reconcile | version pull of every subscribed id, paced | {} |\n",
                mean(ps.pulls, ps.pull_mean_ms)
            );
        }
        if let Some(r) = &self.rss {
            out += "\n";
            out += &r.markdown();
        }
        out
    }
}
