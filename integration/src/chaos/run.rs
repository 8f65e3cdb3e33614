//! One chaos run: the cluster, the load, the rounds of faults, the checks, every server's
//! resident memory over the run, the report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::checker::{Findings, Gap, Regression};
use super::load::{Load, LoadShape};
use super::netfilter::Partitions;
use super::procs::{ChaosCluster, Shape, Tier, LIBFAKETIME};
use super::schedule::{schedule, FaultKind, Round, Target};
use crate::rss::{RssReport, Sampler};

#[derive(Clone, Debug)]
pub struct ChaosArgs {
    pub seed: u64,
    pub faults: usize,
    pub duration: Duration,
    pub kinds: Vec<FaultKind>,
    pub shape: Shape,
    pub load: LoadShape,
    pub bins: PathBuf,
    pub logs: Option<PathBuf>,
    /// How long after healing the views must converge before what is missing counts as lost.
    pub settle: Duration,
    /// Period of the resident memory readings.
    pub rss_every: Duration,
    /// Warm-up the memory summary leaves out (at most half the run).
    pub rss_warmup: Duration,
    /// Run only this round of the seed's schedule, `faults` times over (a failure's replay).
    pub replay_round: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundReport {
    pub n: usize,
    pub label: String,
    pub round: Round,
    pub injected_at_ms: u64,
    pub healed_at_ms: u64,
    /// From healing to every view matching what clients were told; `None`: not within the
    /// settle time.
    pub converged_ms: Option<u64>,
    pub findings: Findings,
    pub gaps: usize,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindStats {
    pub count: usize,
    pub not_converged: usize,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub lost: usize,
    pub stale: usize,
    pub ghosts: usize,
    pub regressions: usize,
    pub gaps: usize,
    pub foreign_data: usize,
    pub not_converged: usize,
}

impl Counts {
    pub fn clean(&self) -> bool {
        self.lost
            + self.stale
            + self.ghosts
            + self.regressions
            + self.gaps
            + self.foreign_data
            + self.not_converged
            == 0
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosReport {
    pub seed: u64,
    pub rounds_planned: usize,
    pub rounds_run: usize,
    pub elapsed_s: f64,
    pub counts: Counts,
    pub by_kind: BTreeMap<String, KindStats>,
    /// The same by broad class (kill, freeze, partition, clock, multi).
    pub by_class: BTreeMap<String, KindStats>,
    pub longest_gap_ms: Option<u64>,
    pub client_ops: usize,
    pub failed_client_ops: usize,
    pub live_publishers_at_end: usize,
    pub subscriptions_at_end: usize,
    pub rounds: Vec<RoundReport>,
    pub final_findings: Findings,
    pub gaps: Vec<Gap>,
    pub regressions: Vec<Regression>,
    pub server_logs: String,
    /// Every server's resident memory over the run (a restarted server under its new pid).
    pub rss: RssReport,
}

fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

/// Convergence statistics of the rounds, grouped by `key`.
fn stats_by(
    rounds: &[RoundReport],
    key: impl Fn(&RoundReport) -> String,
) -> BTreeMap<String, KindStats> {
    let mut groups: BTreeMap<String, Vec<Option<u64>>> = BTreeMap::new();
    for r in rounds {
        groups.entry(key(r)).or_default().push(r.converged_ms);
    }
    groups
        .into_iter()
        .map(|(k, v)| {
            let mut ok: Vec<u64> = v.iter().flatten().copied().collect();
            ok.sort_unstable();
            (
                k,
                KindStats {
                    count: v.len(),
                    not_converged: v.iter().filter(|x| x.is_none()).count(),
                    p50_ms: percentile(&ok, 0.5),
                    p99_ms: percentile(&ok, 0.99),
                    max_ms: ok.last().copied(),
                },
            )
        })
        .collect()
}

/// Resolves a target to a server index.
async fn resolve(cluster: &ChaosCluster, t: Target) -> Option<usize> {
    match t {
        Target::MetaLeader => cluster.meta_leader().await,
        Target::MetaFollower(n) => {
            let leader = cluster.meta_leader().await;
            let others: Vec<usize> = cluster
                .indices(Tier::Meta)
                .into_iter()
                .filter(|i| Some(*i) != leader)
                .collect();
            others.get(n % others.len().max(1)).copied()
        }
        Target::Nth(tier, n) => {
            let all = cluster.indices(tier);
            all.get(n % all.len().max(1)).copied()
        }
    }
}

/// Waits until every active subscription's view matches what clients were told, or
/// `within` passes; returns how long it took and the last findings.
async fn converge(load: &Load, within: Duration) -> (Option<u64>, Findings) {
    let start = Instant::now();
    loop {
        let f = load.checker.lock().check();
        if f.clean() {
            return (Some(start.elapsed().as_millis() as u64), f);
        }
        if start.elapsed() > within {
            return (None, f);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<(ChaosReport, Vec<super::checker::Event>)> {
    let started = Instant::now();
    let plan = match args.replay_round {
        None => schedule(
            args.seed,
            args.faults,
            &args.kinds,
            args.shape.datas,
            args.shape.sessions,
        ),
        Some(n) => {
            let full = schedule(
                args.seed,
                n + 1,
                &args.kinds,
                args.shape.datas,
                args.shape.sessions,
            );
            vec![full[n].clone(); args.faults]
        }
    };
    let wants_cut = plan.iter().any(|r| {
        r.faults
            .iter()
            .any(|f| matches!(f.kind, FaultKind::CutFromMeta | FaultKind::Isolate))
    });
    let mut partitions = if wants_cut {
        Some(Partitions::new().context(
            "partitions need iptables as root; leave out cut_from_meta and isolate with --kinds",
        )?)
    } else {
        None
    };
    if plan
        .iter()
        .any(|r| r.faults.iter().any(|f| f.kind == FaultKind::ClockBehind))
        && !std::path::Path::new(LIBFAKETIME).exists()
    {
        anyhow::bail!("clock faults need libfaketime ({LIBFAKETIME}): apt-get install faketime");
    }
    eprintln!("starting the cluster ({:?})", args.shape);
    let mut cluster = ChaosCluster::start(&args.bins, args.shape, args.logs.clone()).await?;
    let sampler = Sampler::start(cluster.pids.clone(), args.rss_every);
    let load = Load::new(args.load.clone(), cluster.addrs(Tier::Session), args.seed);
    load.populate().await?;
    let (first, findings) = converge(&load, args.settle).await;
    let (publishers, subscriptions) = {
        let c = load.checker.lock();
        (c.live_publishers(), c.active_subscriptions())
    };
    eprintln!(
        "registered: {publishers} publishers, {subscriptions} subscriptions, converged after {first:?} ms {findings:?}"
    );
    let stop = registry_rpc::CancellationToken::new();
    tokio::spawn(load.clone().drive(stop.clone()));

    let mut rounds = Vec::new();
    for (n, round) in plan.iter().enumerate() {
        if started.elapsed() > args.duration {
            eprintln!("duration reached after {n} rounds");
            break;
        }
        load.resume();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let mut notes = Vec::new();
        let mut touched = Vec::new();
        let injected_at_ms = load.checker.lock().now_ms();
        for f in &round.faults {
            let Some(i) = resolve(&cluster, f.target).await else {
                notes.push(format!("no server for {:?}", f.target));
                continue;
            };
            let name = cluster.servers[i].name.clone();
            load.checker
                .lock()
                .fault(format!("inject {} on {name}", f.label()));
            let result = match f.kind {
                FaultKind::Kill => {
                    cluster.servers[i].kill();
                    Ok(())
                }
                FaultKind::Freeze => cluster.servers[i].freeze(),
                FaultKind::ClockBehind => {
                    cluster.servers[i].kill();
                    cluster.servers[i].start(Some(-round.clock_behind_s))
                }
                FaultKind::CutFromMeta | FaultKind::Isolate => {
                    let me = cluster.servers[i].ip;
                    let others: Vec<_> = cluster
                        .servers
                        .iter()
                        .enumerate()
                        .filter(|(j, s)| {
                            *j != i && (f.kind == FaultKind::Isolate || s.tier == Tier::Meta)
                        })
                        .map(|(_, s)| s.ip)
                        .collect();
                    let p = partitions.as_mut().expect("created when the plan cuts");
                    others.into_iter().try_for_each(|o| p.cut(me, o))
                }
            };
            if let Err(e) = result {
                notes.push(format!("{} on {name}: {e}", f.label()));
            }
            touched.push((i, f.kind));
        }
        eprintln!(
            "round {n}: {} on {:?}, hold {} ms",
            round.label(),
            touched
                .iter()
                .map(|(i, _)| cluster.servers[*i].name.as_str())
                .collect::<Vec<_>>(),
            round.hold_ms
        );
        tokio::time::sleep(Duration::from_millis(round.hold_ms)).await;
        for (i, kind) in &touched {
            let s = &mut cluster.servers[*i];
            let r = match kind {
                FaultKind::Kill => s.start(None),
                FaultKind::Freeze => s.thaw(),
                FaultKind::ClockBehind => {
                    s.kill();
                    s.start(None)
                }
                FaultKind::CutFromMeta | FaultKind::Isolate => Ok(()),
            };
            if let Err(e) = r {
                notes.push(format!("heal {}: {e}", s.name));
            }
        }
        if let Some(p) = partitions.as_mut() {
            if let Err(e) = p.heal() {
                notes.push(format!("heal partitions: {e}"));
            }
        }
        load.checker.lock().fault(format!("heal round {n}"));
        let heal_started = Instant::now();
        load.pause();
        if !load.quiesce(Duration::from_secs(20)).await {
            notes.push("client operations still in flight 20 s after healing".into());
        }
        let healed_at_ms = load.checker.lock().now_ms();
        let (converged, findings) = converge(&load, args.settle).await;
        // From the heal (restart, SIGCONT, rules lifted), not from the end of the client
        // operations that were in flight.
        let converged_ms = converged.map(|_| heal_started.elapsed().as_millis() as u64);
        let gaps = load
            .checker
            .lock()
            .gaps
            .iter()
            .filter(|g| g.from_ms >= injected_at_ms.saturating_sub(1_000))
            .count();
        eprintln!(
            "round {n}: converged {converged_ms:?} ms after healing; lost {} stale {} ghosts {} gaps so far {}",
            findings.lost, findings.stale, findings.ghosts, gaps
        );
        if !findings.clean() {
            eprintln!("  examples: {:?}", findings.examples);
        }
        if let Err(e) = cluster.wait_complete(Duration::from_secs(30)).await {
            notes.push(format!("cluster not whole 30 s after healing: {e}"));
        }
        rounds.push(RoundReport {
            n,
            label: round.label(),
            round: round.clone(),
            injected_at_ms,
            healed_at_ms,
            converged_ms,
            findings,
            gaps,
            notes,
        });
    }
    stop.cancel();
    load.pause();
    load.quiesce(Duration::from_secs(20)).await;
    let (_, final_findings) = converge(&load, args.settle).await;
    let rss = sampler.finish(args.rss_warmup);
    let (report, history) = {
        let mut checker = load.checker.lock();
        checker.close_open_gaps();

        let by_kind = stats_by(&rounds, |r| r.label.clone());
        let by_class = stats_by(&rounds, |r| r.round.class.name().to_owned());
        let mut lost = final_findings.lost;
        let mut stale = final_findings.stale;
        let mut ghosts = final_findings.ghosts;
        for r in &rounds {
            lost += r.findings.lost;
            stale += r.findings.stale;
            ghosts += r.findings.ghosts;
        }
        let counts = Counts {
            lost,
            stale,
            ghosts,
            regressions: checker.regressions.len(),
            gaps: checker.gaps.len(),
            foreign_data: checker.foreign,
            not_converged: rounds.iter().filter(|r| r.converged_ms.is_none()).count()
                + usize::from(!final_findings.clean()),
        };
        let report = ChaosReport {
            seed: args.seed,
            rounds_planned: plan.len(),
            rounds_run: rounds.len(),
            elapsed_s: started.elapsed().as_secs_f64(),
            counts,
            by_kind,
            by_class,
            longest_gap_ms: checker.gaps.iter().map(|g| g.duration_ms).max(),
            client_ops: load.ops.load(Ordering::Relaxed),
            failed_client_ops: load.failed_ops.load(Ordering::Relaxed),
            live_publishers_at_end: checker.live_publishers(),
            subscriptions_at_end: checker.active_subscriptions(),
            rounds,
            final_findings,
            gaps: checker.gaps.clone(),
            regressions: checker.regressions.clone(),
            server_logs: cluster.logs.display().to_string(),
            rss,
        };
        let history = std::mem::take(&mut checker.history);
        (report, history)
    };
    load.close().await;
    drop(partitions);
    Ok((report, history))
}

/// Writes the history (one JSON event per line).
pub fn write_history(
    load_history: &[super::checker::Event],
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in load_history {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Markdown tables of convergence by fault kind and by class, the counts, and the servers'
/// resident memory.
pub fn markdown(report: &ChaosReport) -> String {
    let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{v} ms"));
    let table = |head: &str, groups: &BTreeMap<String, KindStats>| {
        let mut s = format!(
            "| {head} | count | not converged | convergence p50 | p99 | max |\n|---|---|---|---|---|---|\n"
        );
        for (k, st) in groups {
            s.push_str(&format!(
                "| {k} | {} | {} | {} | {} | {} |\n",
                st.count,
                st.not_converged,
                ms(st.p50_ms),
                ms(st.p99_ms),
                ms(st.max_ms)
            ));
        }
        s
    };
    let mut s = table("fault", &report.by_kind);
    s.push('\n');
    s.push_str(&table("class", &report.by_class));
    let c = &report.counts;
    s.push_str(&format!(
        "\nlost {} stale {} ghosts {} regressions {} gaps {} (longest {}) not converged {}\n",
        c.lost,
        c.stale,
        c.ghosts,
        c.regressions,
        c.gaps,
        ms(report.longest_gap_ms),
        c.not_converged
    ));
    s.push('\n');
    s.push_str(&report.rss.markdown());
    s
}
