//! Resident memory of the server processes a runner started: one reading from `/proc`
//! ([`rss_kib`], [`pss_kib`]), which process each server runs as now ([`Pids`]), a sampler
//! ([`Sampler`]) that reads every server's resident memory at a fixed period for a whole run
//! and summarises it per server and in total: at the end of a warm-up, at the end, the least
//! and most after the warm-up, and the growth after the warm-up (least-squares slope), and
//! the peak of the servers' memory with shared pages counted once ([`PssPeak`]).
//! `registry-bench` and `registry-chaos` both use the sampler for soak runs (`--rss-every`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

/// Resident memory of a process, from `/proc/<pid>/status`: (current, peak) in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Proportional set size of a process in KiB, from `/proc/<pid>/smaps_rollup`: its private
/// pages plus an equal share of each page it shares with other processes. The text of a
/// binary that three servers run is resident once but in each one's RSS; in their PSS it
/// counts a third in each, so a sum over processes counts every page once.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The highest readings a [`PssPeak`] has seen.
#[derive(Clone, Debug, Default)]
pub struct PssPeaks {
    /// The highest sum over the servers running at one reading, KiB.
    pub total_kib: u64,
    /// Each server's highest reading, KiB, by name.
    pub by_server: Vec<(String, u64)>,
}

impl PssPeaks {
    /// Adds one reading of every running server.
    fn take(&mut self, pids: &Pids) {
        let mut total = 0;
        for (name, pid) in pids.snapshot() {
            let Some(kib) = pid.and_then(pss_kib) else {
                continue;
            };
            total += kib;
            match self.by_server.iter_mut().find(|(n, _)| *n == name) {
                Some((_, peak)) => *peak = (*peak).max(kib),
                None => self.by_server.push((name, kib)),
            }
        }
        self.total_kib = self.total_kib.max(total);
    }

    /// Server `name`'s highest reading, KiB.
    pub fn of(&self, name: &str) -> Option<u64> {
        self.by_server
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, kib)| *kib)
    }
}

/// The servers' peak memory with shared pages counted once: every server's PSS read at a
/// period, summed at each reading, the highest sum kept. The kernel keeps a peak of each
/// process's RSS (`VmHWM`) but none of PSS, so a peak between two readings is missed: the
/// period is short while memory moves fast (registration), and the readings are stopped
/// while latency is measured ([`PssPeak::pause`]): a reading walks each process's page
/// tables, and at a million publishers (2.3 GB of them, once a second) that showed in the
/// churn's p99.
#[derive(Debug)]
pub struct PssPeak {
    pids: Pids,
    peaks: Arc<Mutex<PssPeaks>>,
    /// No periodic readings while set; [`PssPeak::peaks`] still reads.
    paused: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PssPeak {
    /// Starts reading now and every `every` (at least 10 ms) after, on a task of the current
    /// Tokio runtime.
    pub fn start(pids: Pids, every: Duration) -> Self {
        let peaks = Arc::new(Mutex::new(PssPeaks::default()));
        let paused = Arc::new(AtomicBool::new(false));
        let every = every.max(Duration::from_millis(10));
        Self {
            pids: pids.clone(),
            peaks: peaks.clone(),
            paused: paused.clone(),
            task: tokio::spawn(async move {
                loop {
                    if !paused.load(Ordering::Relaxed) {
                        peaks.lock().take(&pids);
                    }
                    tokio::time::sleep(every).await;
                }
            }),
        }
    }

    /// Takes one more reading now, and no more periodic ones.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
        self.peaks.lock().take(&self.pids);
    }

    /// Takes one more reading and returns the peaks so far.
    pub fn peaks(&self) -> PssPeaks {
        let mut peaks = self.peaks.lock();
        peaks.take(&self.pids);
        peaks.clone()
    }
}

impl Drop for PssPeak {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which process each server runs as now, by server name, in the order the servers were
/// first named. The runner sets a server's pid when it starts the process and clears it when
/// it kills it; the sampler reads whatever pid each name has at each reading, so a restarted
/// server is followed under its new pid.
#[derive(Clone, Debug, Default)]
pub struct Pids(Arc<Mutex<Vec<NamedPid>>>);

/// A server name and the process it runs as (`None`: not running).
pub type NamedPid = (String, Option<u32>);

impl Pids {
    pub fn new() -> Self {
        Self::default()
    }

    /// Server `name` now runs as `pid` (`None`: not running).
    pub fn set(&self, name: &str, pid: Option<u32>) {
        let mut all = self.0.lock();
        match all.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = pid,
            None => all.push((name.to_owned(), pid)),
        }
    }

    /// Every server name with its current pid.
    pub fn snapshot(&self) -> Vec<NamedPid> {
        self.0.lock().clone()
    }
}

/// One reading: seconds since sampling started, resident memory in KiB, and the process
/// read (absent in the total).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub rss_kib: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// What a series shows after the warm-up. Every figure is `None` without a reading to
/// base it on; the slope needs two readings after the warm-up.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub samples: usize,
    /// The first reading at or after the end of the warm-up.
    pub warmup_end_kib: Option<u64>,
    /// The last reading.
    pub end_kib: Option<u64>,
    pub min_after_warmup_kib: Option<u64>,
    pub max_after_warmup_kib: Option<u64>,
    /// Least-squares slope of the readings from the end of the warm-up on, MiB per hour.
    pub growth_mib_per_hour: Option<f64>,
    /// Times the process changed (a restart) between readings over the whole run.
    pub restarts: usize,
}

impl Summary {
    fn of(series: &[Sample], warmup_s: f64) -> Self {
        let after: Vec<&Sample> = series.iter().filter(|s| s.t_s >= warmup_s).collect();
        let restarts = series
            .windows(2)
            .filter(|w| w[0].pid.is_some() && w[0].pid != w[1].pid)
            .count();
        Self {
            samples: series.len(),
            warmup_end_kib: after.first().map(|s| s.rss_kib),
            end_kib: series.last().map(|s| s.rss_kib),
            min_after_warmup_kib: after.iter().map(|s| s.rss_kib).min(),
            max_after_warmup_kib: after.iter().map(|s| s.rss_kib).max(),
            growth_mib_per_hour: slope_mib_per_hour(&after),
            restarts,
        }
    }
}

/// Least-squares slope of resident memory against time, in MiB per hour; `None` with fewer
/// than two readings or all at one instant.
fn slope_mib_per_hour(points: &[&Sample]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let hours = |s: &Sample| s.t_s / 3600.0;
    let mib = |s: &Sample| s.rss_kib as f64 / 1024.0;
    let mean_t = points.iter().map(|s| hours(s)).sum::<f64>() / n;
    let mean_m = points.iter().map(|s| mib(s)).sum::<f64>() / n;
    let (mut cov, mut var) = (0.0, 0.0);
    for s in points {
        let dt = hours(s) - mean_t;
        cov += dt * (mib(s) - mean_m);
        var += dt * dt;
    }
    (var > 0.0).then(|| cov / var)
}

/// One server's readings and their summary.
#[derive(Clone, Debug, Serialize)]
pub struct ServerRss {
    pub name: String,
    pub summary: Summary,
    pub series: Vec<Sample>,
}

/// Resident memory over a run: every server's series and summary, and the same for their
/// sum at each reading (a server not running at a reading adds nothing to it).
#[derive(Clone, Debug, Serialize)]
pub struct RssReport {
    /// Period between readings, seconds.
    pub every_s: f64,
    /// The warm-up the summaries leave out: as asked, at most half the run.
    pub warmup_s: f64,
    /// From the first reading to the last, seconds.
    pub elapsed_s: f64,
    pub servers: Vec<ServerRss>,
    pub total: ServerRss,
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

impl RssReport {
    /// A Markdown table: one row per server and one for the total.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "### resident memory (every {:.0} s, {} readings over {:.0} s; after a warm-up of {:.0} s)\n\n\
             | server | at warm-up end | at end | min after warm-up | max after warm-up | growth after warm-up | restarts |\n\
             |---|---|---|---|---|---|---|\n",
            self.every_s, self.total.summary.samples, self.elapsed_s, self.warmup_s
        );
        for s in self.servers.iter().chain(std::iter::once(&self.total)) {
            let m = &s.summary;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                s.name,
                mib(m.warmup_end_kib),
                mib(m.end_kib),
                mib(m.min_after_warmup_kib),
                mib(m.max_after_warmup_kib),
                m.growth_mib_per_hour
                    .map_or("-".into(), |g| format!("{g:+.2} MiB/h")),
                m.restarts
            );
        }
        out
    }
}

/// Readings so far: one series per server name (in the order of [`Pids`]) and the total.
#[derive(Debug, Default)]
struct Readings {
    servers: Vec<(String, Vec<Sample>)>,
    total: Vec<Sample>,
}

impl Readings {
    /// Reads every running server now.
    fn take(&mut self, pids: &Pids, t_s: f64) {
        let mut total = 0;
        for (name, pid) in pids.snapshot() {
            let idx = match self.servers.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    self.servers.push((name, Vec::new()));
                    self.servers.len() - 1
                }
            };
            let Some(pid) = pid else { continue };
            let Some((rss, _)) = rss_kib(pid) else {
                continue;
            };
            total += rss;
            self.servers[idx].1.push(Sample {
                t_s,
                rss_kib: rss,
                pid: Some(pid),
            });
        }
        self.total.push(Sample {
            t_s,
            rss_kib: total,
            pid: None,
        });
    }
}

/// Reads every server's resident memory every period from [`Sampler::start`] until
/// [`Sampler::finish`], on a task of the current Tokio runtime.
#[derive(Debug)]
pub struct Sampler {
    pids: Pids,
    every: Duration,
    started: Instant,
    readings: Arc<Mutex<Readings>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts reading now and every `every` (at least 100 ms) after.
    pub fn start(pids: Pids, every: Duration) -> Self {
        let every = every.max(Duration::from_millis(100));
        let started = Instant::now();
        let readings = Arc::new(Mutex::new(Readings::default()));
        let task = {
            let (pids, readings) = (pids.clone(), readings.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let t_s = started.elapsed().as_secs_f64();
                    readings.lock().take(&pids, t_s);
                }
            })
        };
        Self {
            pids,
            every,
            started,
            readings,
            task,
        }
    }

    /// Takes a last reading, stops, and summarises leaving out the first `warmup` (at most
    /// half the run).
    pub fn finish(self, warmup: Duration) -> RssReport {
        self.task.abort();
        let elapsed_s = self.started.elapsed().as_secs_f64();
        let mut readings = self.readings.lock();
        readings.take(&self.pids, elapsed_s);
        let warmup_s = warmup.as_secs_f64().min(elapsed_s / 2.0);
        let server = |name: &str, series: &[Sample]| ServerRss {
            name: name.to_owned(),
            summary: Summary::of(series, warmup_s),
            series: series.to_vec(),
        };
        RssReport {
            every_s: self.every.as_secs_f64(),
            warmup_s,
            elapsed_s,
            servers: readings
                .servers
                .iter()
                .map(|(name, series)| server(name, series))
                .collect(),
            total: server("all servers", &readings.total),
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_s: f64, mib: f64, pid: u32) -> Sample {
        Sample {
            t_s,
            rss_kib: (mib * 1024.0) as u64,
            pid: Some(pid),
        }
    }

    #[test]
    fn summary_leaves_out_the_warmup_and_fits_a_slope() {
        // 100 MiB during the warm-up, then 50 MiB growing 2 MiB every 30 min.
        let series: Vec<Sample> = (0..=12)
            .map(|i| {
                let t = i as f64 * 600.0;
                let m = if t < 1800.0 {
                    100.0
                } else {
                    50.0 + (t - 1800.0) / 900.0
                };
                at(t, m, if i < 6 { 1 } else { 2 })
            })
            .collect();
        let s = Summary::of(&series, 1800.0);
        assert_eq!(s.samples, 13);
        assert_eq!(s.warmup_end_kib, Some(50 * 1024));
        assert_eq!(s.end_kib, Some(56 * 1024));
        assert_eq!(s.min_after_warmup_kib, Some(50 * 1024));
        assert_eq!(s.max_after_warmup_kib, Some(56 * 1024));
        let g = s
            .growth_mib_per_hour
            .expect("ten readings after the warm-up");
        // Readings are whole KiB, so the fit is exact to a few KiB an hour.
        assert!((g - 4.0).abs() < 1e-3, "{g}");
        assert_eq!(s.restarts, 1);
        let one = Summary::of(&series[..1], 0.0);
        assert_eq!(one.growth_mib_per_hour, None);
        assert_eq!(Summary::of(&[], 0.0).end_kib, None);
    }

    #[test]
    fn pss_counts_a_shared_page_in_part_and_peaks_keep_the_highest_sum() {
        let me = std::process::id();
        let (rss, _) = rss_kib(me).expect("own status");
        let pss = pss_kib(me).expect("own smaps_rollup");
        // A share of a page is at most the page: PSS is positive and at most RSS.
        assert!(pss > 0 && pss <= rss, "pss {pss} rss {rss}");
        let pids = Pids::new();
        pids.set("self", Some(me));
        pids.set("gone", None);
        let mut peaks = PssPeaks::default();
        peaks.take(&pids);
        let first = peaks.total_kib;
        assert!(first > 0);
        assert_eq!(peaks.of("self"), Some(first));
        assert_eq!(peaks.of("gone"), None);
        pids.set("self", None);
        peaks.take(&pids);
        assert_eq!(
            peaks.total_kib, first,
            "a reading with nothing running keeps the peak"
        );
    }

    #[test]
    fn pids_follow_restarts_and_reads_this_process() {
        let pids = Pids::new();
        pids.set("self", Some(std::process::id()));
        pids.set("gone", None);
        let mut r = Readings::default();
        r.take(&pids, 0.0);
        pids.set("self", None);
        r.take(&pids, 1.0);
        assert_eq!(r.servers.len(), 2);
        assert_eq!(r.servers[0].1.len(), 1);
        assert!(r.servers[0].1[0].rss_kib > 0);
        assert!(r.servers[1].1.is_empty());
        assert_eq!(r.total.len(), 2);
        assert_eq!(r.total[1].rss_kib, 0);
    }
}
