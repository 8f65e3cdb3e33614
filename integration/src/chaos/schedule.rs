//! The fault schedule: a pure function of the seed, so a seed replays the same faults on the
//! same servers with the same durations.
//!
//! Each round first takes its broad class ([`FaultClass`]: kill, freeze, partition, clock,
//! multi) from a cycle over the classes, shuffled anew every pass, so any run of 5k rounds
//! holds exactly k of each; then the specific fault within the class at random.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::procs::Tier;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// kill -9, restarted on the same address after the hold.
    Kill,
    /// SIGSTOP for the hold, then SIGCONT.
    Freeze,
    /// Cut from every meta node for the hold.
    CutFromMeta,
    /// Cut from every other server for the hold.
    Isolate,
    /// Restarted with its wall clock behind (libfaketime) for the hold, then restarted true.
    ClockBehind,
}

impl FaultKind {
    pub fn class(self) -> FaultClass {
        match self {
            FaultKind::Kill => FaultClass::Kill,
            FaultKind::Freeze => FaultClass::Freeze,
            FaultKind::CutFromMeta | FaultKind::Isolate => FaultClass::Partition,
            FaultKind::ClockBehind => FaultClass::Clock,
        }
    }
}

/// The broad classes of fault a schedule balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FaultClass {
    /// kill -9 and restart.
    Kill,
    /// SIGSTOP and SIGCONT.
    Freeze,
    /// Cut from the meta nodes, or from every other server.
    Partition,
    /// A wall clock behind.
    Clock,
    /// Two or three faults at once.
    Multi,
}

impl FaultClass {
    pub fn name(self) -> &'static str {
        match self {
            FaultClass::Kill => "kill",
            FaultClass::Freeze => "freeze",
            FaultClass::Partition => "partition",
            FaultClass::Clock => "clock",
            FaultClass::Multi => "multi",
        }
    }
}

/// Which server: the meta leader, or the `n`-th of a tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    MetaLeader,
    MetaFollower(usize),
    Nth(Tier, usize),
}

#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub target: Target,
}

impl Fault {
    /// The name faults are grouped by in the report.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            FaultKind::Kill => "kill",
            FaultKind::Freeze => "freeze",
            FaultKind::CutFromMeta => "cut_from_meta",
            FaultKind::Isolate => "isolate",
            FaultKind::ClockBehind => "clock_behind",
        };
        let who = match self.target {
            Target::MetaLeader => "meta_leader",
            Target::MetaFollower(_) => "meta_follower",
            Target::Nth(Tier::Meta, _) => "meta",
            Target::Nth(Tier::Data, _) => "data",
            Target::Nth(Tier::Session, _) => "session",
        };
        format!("{kind}_{who}")
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Round {
    /// The class drawn: the class of the one fault, or `Multi` with two or three.
    pub class: FaultClass,
    pub faults: Vec<Fault>,
    pub hold_ms: u64,
    /// How far behind the clock runs, for `ClockBehind`.
    pub clock_behind_s: i64,
}

impl Round {
    pub fn label(&self) -> String {
        if self.faults.len() == 1 {
            self.faults[0].label()
        } else {
            "multi".into()
        }
    }
}

/// The kinds a run draws from (all unless restricted).
pub fn all_kinds() -> Vec<FaultKind> {
    vec![
        FaultKind::Kill,
        FaultKind::Freeze,
        FaultKind::CutFromMeta,
        FaultKind::Isolate,
        FaultKind::ClockBehind,
    ]
}

/// A fault of a kind drawn from `kinds`, on a target drawn as fits the kind.
fn one(rng: &mut Xoshiro256PlusPlus, kinds: &[FaultKind], datas: usize, sessions: usize) -> Fault {
    let kind = kinds[rng.random_range(0..kinds.len())];
    let target = match kind {
        FaultKind::ClockBehind => Target::Nth(Tier::Data, rng.random_range(0..datas)),
        FaultKind::CutFromMeta => match rng.random_range(0..2) {
            0 => Target::Nth(Tier::Data, rng.random_range(0..datas)),
            _ => Target::Nth(Tier::Session, rng.random_range(0..sessions)),
        },
        _ => match rng.random_range(0..8) {
            0 => Target::MetaLeader,
            1 => Target::MetaFollower(rng.random_range(0..2)),
            2..=4 => Target::Nth(Tier::Data, rng.random_range(0..datas)),
            _ => Target::Nth(Tier::Session, rng.random_range(0..sessions)),
        },
    };
    Fault { kind, target }
}

/// The classes a run with these kinds can hold: each kind's class, and `Multi` unless the
/// only kind is the clock (two clock faults at once are never drawn).
fn classes(kinds: &[FaultKind]) -> Vec<FaultClass> {
    let mut out: Vec<FaultClass> = kinds.iter().map(|k| k.class()).collect();
    if kinds.iter().any(|k| *k != FaultKind::ClockBehind) {
        out.push(FaultClass::Multi);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Fisher-Yates, with the schedule's generator.
fn shuffle(rng: &mut Xoshiro256PlusPlus, v: &mut [FaultClass]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.random_range(0..=i));
    }
}

fn tier_of(t: &Target) -> Tier {
    match t {
        Target::MetaLeader | Target::MetaFollower(_) => Tier::Meta,
        Target::Nth(tier, _) => *tier,
    }
}

/// Whether `f` may join `faults` in one round: distinct servers, never more than one meta
/// node, one data server, one clock fault, or every session.
fn fits(faults: &[Fault], f: &Fault, sessions: usize) -> bool {
    let tier = tier_of(&f.target);
    let same_tier = faults.iter().filter(|g| tier_of(&g.target) == tier).count();
    let clash = faults.iter().any(|g| {
        g.target == f.target
            || (tier == Tier::Meta && tier_of(&g.target) == Tier::Meta)
            || (g.kind == FaultKind::ClockBehind && f.kind == FaultKind::ClockBehind)
    });
    // One data server at a time: with 2 copies, two at once can take every copy of a slot,
    // and then the sessions' repair rebuilds it publisher by publisher (see
    // docs/architecture.md, known limits).
    !(clash
        || (tier == Tier::Session && same_tier + 1 >= sessions)
        || (tier == Tier::Data && same_tier > 0))
}

/// `n` rounds, balanced over the classes the kinds allow (see the module). A multi round
/// holds two or three faults of any allowed kinds, on distinct servers, never more than one
/// meta node, one data server, or every session.
pub fn schedule(
    seed: u64,
    n: usize,
    kinds: &[FaultKind],
    datas: usize,
    sessions: usize,
) -> Vec<Round> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let kinds = if kinds.is_empty() {
        all_kinds()
    } else {
        kinds.to_vec()
    };
    let classes = classes(&kinds);
    let mut cycle: Vec<FaultClass> = Vec::new();
    (0..n)
        .map(|_| {
            if cycle.is_empty() {
                cycle = classes.clone();
                shuffle(&mut rng, &mut cycle);
            }
            let class = cycle.pop().unwrap_or(FaultClass::Multi);
            let faults = if class == FaultClass::Multi {
                let count = rng.random_range(2..=3);
                let mut faults: Vec<Fault> = Vec::new();
                // Any allowed kind fits next to some other, so two faults come within a
                // few tries; the bound only keeps a third from being sought for ever.
                let mut tries = 0;
                while faults.len() < count && (faults.len() < 2 || tries < 50) && tries < 10_000 {
                    tries += 1;
                    let f = one(&mut rng, &kinds, datas, sessions);
                    if fits(&faults, &f, sessions) {
                        faults.push(f);
                    }
                }
                faults
            } else {
                let within: Vec<FaultKind> = kinds
                    .iter()
                    .copied()
                    .filter(|k| k.class() == class)
                    .collect();
                vec![one(&mut rng, &within, datas, sessions)]
            };
            let longest = faults.iter().any(|f| {
                matches!(
                    f.kind,
                    FaultKind::Freeze | FaultKind::CutFromMeta | FaultKind::Isolate
                )
            });
            // Silences sometimes outlast the 10 s lease.
            let hold_ms = if longest && rng.random_range(0..3) == 0 {
                rng.random_range(11_000..14_000)
            } else {
                rng.random_range(500..5_000)
            };
            Round {
                class,
                faults,
                hold_ms,
                clock_behind_s: rng.random_range(20..120),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_its_schedule() {
        let a = serde_json::to_string(&schedule(7, 30, &[], 4, 3)).unwrap();
        let b = serde_json::to_string(&schedule(7, 30, &[], 4, 3)).unwrap();
        let c = serde_json::to_string(&schedule(8, 30, &[], 4, 3)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        for r in schedule(7, 200, &[], 4, 3) {
            assert!(!r.faults.is_empty());
            let metas = r
                .faults
                .iter()
                .filter(|f| tier_of(&f.target) == Tier::Meta)
                .count();
            assert!(metas <= 1);
            let sessions = r
                .faults
                .iter()
                .filter(|f| tier_of(&f.target) == Tier::Session)
                .count();
            assert!(sessions < 3);
            let datas = r
                .faults
                .iter()
                .filter(|f| tier_of(&f.target) == Tier::Data)
                .count();
            assert!(datas <= 1);
        }
    }

    #[test]
    fn every_five_rounds_hold_one_of_each_class() {
        for seed in 0..20 {
            let plan = schedule(seed, 100, &[], 4, 3);
            for (k, pass) in plan.chunks(5).enumerate() {
                let mut got: Vec<FaultClass> = pass.iter().map(|r| r.class).collect();
                got.sort_unstable();
                assert_eq!(got, classes(&all_kinds()), "seed {seed}, pass {k}");
            }
            for r in &plan {
                match r.class {
                    FaultClass::Multi => {
                        assert!((2..=3).contains(&r.faults.len()), "{r:?}");
                        assert_eq!(r.label(), "multi");
                    }
                    class => {
                        assert_eq!(r.faults.len(), 1);
                        assert_eq!(r.faults[0].kind.class(), class);
                    }
                }
            }
            // Within a class the kind still varies.
            let partitions: std::collections::BTreeSet<FaultKind> = plan
                .iter()
                .filter(|r| r.class == FaultClass::Partition)
                .map(|r| r.faults[0].kind)
                .collect();
            assert_eq!(partitions.len(), 2, "seed {seed}");
        }
    }

    #[test]
    fn restricted_kinds_balance_their_own_classes() {
        let plan = schedule(3, 30, &[FaultKind::Kill, FaultKind::Isolate], 4, 3);
        for pass in plan.chunks(3) {
            let mut got: Vec<FaultClass> = pass.iter().map(|r| r.class).collect();
            got.sort_unstable();
            assert_eq!(
                got,
                vec![FaultClass::Kill, FaultClass::Partition, FaultClass::Multi]
            );
        }
        assert!(plan.iter().all(|r| r
            .faults
            .iter()
            .all(|f| matches!(f.kind, FaultKind::Kill | FaultKind::Isolate))));
        let clock = schedule(3, 10, &[FaultKind::ClockBehind], 4, 3);
        assert!(clock
            .iter()
            .all(|r| r.class == FaultClass::Clock && r.faults.len() == 1));
    }
}
