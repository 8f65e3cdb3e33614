//! `slot-migration-probe`: how long a data server that joins takes to copy in a slot holding
//! many publishers, and the whole slot table.
//!
//! Each run starts an in-process cluster (1 meta, 1 data, 1 session server on 127.0.0.1, each
//! on its own runtime) with two copies of every slot, publishes `--publishers` publishers
//! through SDK clients on services chosen so that all of them hash into one slot (plus,
//! optionally, `--background-services` services of 10 publishers spread over every slot),
//! waits until the data server holds them all, then starts a second data server. With two
//! copies and two servers the newcomer holds every slot, so it must copy every one. Timed
//! from just before the second server starts (which includes its join through the meta):
//!
//! - **joined**: the second server is a member (its start returned);
//! - **slot**: the heavy slot is `Ready` on the second server (copied in);
//! - **table**: no slot is syncing and all of them are `Ready` on the second server.
//!
//! The copy is checked: the second server must hold every publisher of the heavy slot. With
//! `RUST_LOG=data_server::server=debug` the data servers log each slot copy's own duration
//! (`slot copied in ... took_ms`).
//!
//! `cargo build --release --bins && target/release/slot-migration-probe --runs 5 --publishers 10000`

/// jemalloc: far fewer cycles in malloc/free than the system allocator on this workload of
/// many small short-lived buffers (JSON frames), with less fragmentation.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use client_sdk::Client;
use data_server::slots::Phase;
use futures::stream::{self, StreamExt};
use integration::cluster::{Cluster, ClusterConfig};
use registry_common::slot::{slot_of, SlotId, DEFAULT_SLOT_COUNT};
use registry_common::DataInfoId;

#[derive(Parser)]
#[command(
    name = "slot-migration-probe",
    about = "Times copying a heavy slot into a data server that joins"
)]
struct Args {
    /// Runs, each on a fresh cluster.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The heavy slot. Slots are copied in in ascending order, a few at a time, so a low slot
    /// is copied first and a high one after most of the (empty) others; default: the slot
    /// of `migrate.svc.0`.
    #[arg(long)]
    slot: Option<SlotId>,
    /// Publishers in the heavy slot.
    #[arg(long, default_value_t = 10_000)]
    publishers: usize,
    /// Services (all in the heavy slot) the publishers are spread over.
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Extra services of 10 publishers each, spread over every slot.
    #[arg(long, default_value_t = 0)]
    background_services: usize,
    /// Bytes of payload per publisher.
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// SDK clients the publishers are spread over.
    #[arg(long, default_value_t = 20)]
    clients: usize,
}

/// Service names that hash into `slot`.
fn services_in(slot: SlotId, n: usize) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0usize;
    while out.len() < n {
        let name = format!("migrate.svc.{i}");
        let id = DataInfoId::new(&name, None, None)?;
        if slot_of(&id, DEFAULT_SLOT_COUNT) == slot {
            out.push(name);
        }
        i += 1;
    }
    Ok(out)
}

fn payload(k: usize, size: usize) -> String {
    let mut s = format!("pub-{k}|");
    if s.len() < size {
        s.extend(std::iter::repeat_n('x', size - s.len()));
    }
    s
}

/// What one run measured, in milliseconds from the start of the second data server.
#[derive(Debug, Clone)]
struct RunResult {
    joined_ms: f64,
    slot_ms: f64,
    table_ms: f64,
    newcomer_is_primary: bool,
    copied_publishers: usize,
    publish_secs: f64,
}

async fn one_run(args: &Args, slot: SlotId, heavy: &[String]) -> anyhow::Result<RunResult> {
    let mut cluster = Cluster::start(ClusterConfig::new(1, 1, 1)).await?;
    if cluster.view().settings.copies != 2 {
        bail!(
            "expected two copies, the cluster has {}",
            cluster.view().settings.copies
        );
    }
    let mut clients: Vec<Client> = Vec::with_capacity(args.clients);
    for _ in 0..args.clients.max(1) {
        clients.push(cluster.client(0).await?);
    }
    let background = args.background_services;
    let mut jobs: Vec<(String, usize)> = (0..args.publishers)
        .map(|k| (heavy[k % heavy.len()].clone(), k))
        .collect();
    for b in 0..background {
        for p in 0..10 {
            jobs.push((format!("migrate.bg.{b}"), args.publishers + b * 10 + p));
        }
    }
    let started = Instant::now();
    let n = clients.len();
    let results: Vec<_> = stream::iter(jobs)
        .map(|(svc, k)| {
            let client = &clients[k % n];
            let data = payload(k, args.payload);
            async move { client.publish(&svc, vec![data]).await }
        })
        .buffer_unordered(512)
        .collect()
        .await;
    let _publishers = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let first = cluster.datas[0].server().state().clone();
    let held_by = |s: &data_server::server::DataState| s.store.slot_counts()[slot as usize].1;
    let ready_by = Instant::now() + Duration::from_secs(120);
    while held_by(&first) < args.publishers {
        if Instant::now() > ready_by {
            bail!(
                "the data server holds {} of {} publishers in slot {slot}",
                held_by(&first),
                args.publishers
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total_expected = args.publishers + background * 10;
    while first.store.slot_counts().iter().map(|c| c.1).sum::<usize>() < total_expected {
        if Instant::now() > ready_by {
            bail!("background publishers did not all arrive");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t0 = Instant::now();
    cluster.add_data().await?;
    let joined = t0.elapsed();
    let second = cluster.datas[1].server().state().clone();
    let slots = second.store.slot_count() as usize;
    let deadline = t0 + Duration::from_secs(120);
    let mut slot_done = None;
    let table_done = loop {
        if slot_done.is_none() && second.slots.phase(slot) == Phase::Ready {
            slot_done = Some(t0.elapsed());
        }
        let (syncing, ready, _) = second.slots.counts();
        if slot_done.is_some() && syncing == 0 && ready == slots {
            break t0.elapsed();
        }
        if Instant::now() > deadline {
            bail!("the second data server did not copy in every slot within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let copied = held_by(&second);
    let view = second.membership.view();
    let newcomer_is_primary = view
        .slots
        .get(slot)
        .is_some_and(|a| a.primary.as_ref() == Some(&second.id));
    let outcomes: Vec<(String, u64)> = ["copied", "partial"]
        .iter()
        .map(|o| {
            (
                o.to_string(),
                second.metrics.slot_syncs.with_label_values(&[o]).get(),
            )
        })
        .collect();
    eprintln!("  slot copies on the second server by outcome: {outcomes:?}");
    for c in clients {
        c.close().await;
    }
    for d in &mut cluster.datas {
        d.kill();
    }
    for s in &mut cluster.sessions {
        s.kill();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(RunResult {
        joined_ms: ms(joined),
        slot_ms: ms(slot_done.unwrap_or_default()),
        table_ms: ms(table_done),
        newcomer_is_primary,
        copied_publishers: copied,
        publish_secs,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let first = DataInfoId::new("migrate.svc.0", None, None)?;
    let slot = args
        .slot
        .unwrap_or_else(|| slot_of(&first, DEFAULT_SLOT_COUNT));
    if slot >= DEFAULT_SLOT_COUNT {
        bail!("there are {DEFAULT_SLOT_COUNT} slots");
    }
    let heavy = services_in(slot, args.services.max(1))?;
    eprintln!(
        "heavy slot {slot}: {} publishers over {} services; {} background services x 10",
        args.publishers,
        heavy.len(),
        args.background_services
    );
    let mut results = Vec::new();
    for run in 1..=args.runs {
        let r = one_run(&args, slot, &heavy)
            .await
            .with_context(|| format!("run {run}"))?;
        eprintln!("run {run}: {r:?}");
        if r.copied_publishers < args.publishers {
            bail!(
                "run {run}: the second server holds {} of {} publishers of the slot",
                r.copied_publishers,
                args.publishers
            );
        }
        results.push(r);
    }
    println!(
        "### slot-migration-probe ({} publishers in slot {slot}, {} background services x 10, 1 -> 2 data servers, 2 copies)\n",
        args.publishers, args.background_services
    );
    println!("| run | join | heavy slot ready | whole table ready | newcomer is the slot's | publishers copied |");
    println!("|---|---|---|---|---|---|");
    for (i, r) in results.iter().enumerate() {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} |",
            i + 1,
            r.joined_ms,
            r.slot_ms,
            r.table_ms,
            if r.newcomer_is_primary {
                "primary"
            } else {
                "replica"
            },
            r.copied_publishers
        );
    }
    println!(
        "| median | {:.1} ms | {:.1} ms | {:.1} ms | | |",
        median(results.iter().map(|r| r.joined_ms).collect()),
        median(results.iter().map(|r| r.slot_ms).collect()),
        median(results.iter().map(|r| r.table_ms).collect()),
    );
    eprintln!(
        "publishing took {:?} s per run",
        results
            .iter()
            .map(|r| (r.publish_secs * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    Ok(())
}
