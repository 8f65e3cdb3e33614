//! The fault schedule: a pure function of the seed, so a seed replays the same faults on the
//! same servers with the same durations.

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

fn tier_of(t: &Target) -> Tier {
    match t {
        Target::MetaLeader | Target::MetaFollower(_) => Tier::Meta,
        Target::Nth(tier, _) => *tier,
    }
}

/// `n` rounds; about one in four has two or three faults at once, on distinct servers, never
/// more than one meta node, one data server, or every session.
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
    (0..n)
        .map(|_| {
            let count = if rng.random_range(0..4) == 0 {
                rng.random_range(2..=3)
            } else {
                1
            };
            let mut faults: Vec<Fault> = Vec::new();
            let mut tries = 0;
            while faults.len() < count && tries < 50 {
                tries += 1;
                let f = one(&mut rng, &kinds, datas, sessions);
                let tier = tier_of(&f.target);
                let same_tier = faults.iter().filter(|g| tier_of(&g.target) == tier).count();
                let clash = faults.iter().any(|g| {
                    g.target == f.target
                        || (tier == Tier::Meta && tier_of(&g.target) == Tier::Meta)
                        || (g.kind == FaultKind::ClockBehind && f.kind == FaultKind::ClockBehind)
                });
                // One data server at a time: with 2 copies, two at once can take every copy
                // of a slot, and then the sessions' repair rebuilds it publisher by publisher
                // (see docs/architecture.md, known limits).
                if clash
                    || (tier == Tier::Session && same_tier + 1 >= sessions)
                    || (tier == Tier::Data && same_tier > 0)
                {
                    continue;
                }
                faults.push(f);
            }
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
}
