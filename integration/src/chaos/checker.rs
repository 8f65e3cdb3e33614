//! The independent checker: what clients were told (acknowledged operations) against what
//! subscribers were shown (every push), kept apart from the registry's own bookkeeping.
//!
//! Every publisher publishes data strings `<token>#<seq>`: the token names the publisher, the
//! sequence number its data version. The checker knows, for each token, whether its client
//! still holds it (registered and acknowledged, not withdrawn, client alive) and which
//! sequence was acknowledged last. From the pushes it keeps each subscription's latest view
//! and finds:
//!
//! - **gaps**: a live publisher that was in a subscriber's view disappears from it (with how
//!   long until it came back);
//! - **regressions**: a subscription receives a version at or below one it had;
//! - at quiescence, **lost** (a live publisher missing from a latest view), **stale** (present
//!   with older data than acknowledged), **ghosts** (a withdrawn or dead client's publisher
//!   still shown).
//!
//! Publishers whose registration outcome is unknown (the request failed) are *uncertain* and
//! excluded from lost and ghost counts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

/// Where a publisher stands, by what its client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PubPhase {
    /// Register sent, not yet acknowledged.
    Registering,
    /// Acknowledged and held by its client.
    Live,
    /// Unregistered, or its client closed; since when (ms from start).
    Dead(u64),
    /// The outcome of its registration or removal is unknown.
    Uncertain,
}

#[derive(Clone, Debug)]
pub struct PubState {
    pub service: usize,
    pub phase: PubPhase,
    /// Latest acknowledged sequence.
    pub acked: u64,
    /// Latest sent sequence (a republish in flight is above `acked`).
    pub sent: u64,
}

/// One subscription's view of one service.
#[derive(Default, Debug)]
struct View {
    version: Option<u64>,
    /// token -> seq shown.
    shown: HashMap<String, u64>,
    /// Gaps open: token -> since (ms).
    open_gaps: HashMap<String, u64>,
}

#[derive(Debug)]
struct SubState {
    service: usize,
    /// Still subscribed (its client alive, not unsubscribed).
    active: bool,
    view: View,
}

/// One closed (or, at the end, still open) gap.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gap {
    pub sub: u64,
    pub service: usize,
    pub token: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Regression {
    pub sub: u64,
    pub service: usize,
    pub at_ms: u64,
    pub had: u64,
    pub got: u64,
}

/// What one quiescence check found.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Findings {
    pub lost: usize,
    pub stale: usize,
    pub ghosts: usize,
    /// Up to a few examples, for the post-mortem.
    pub examples: Vec<String>,
}

impl Findings {
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.stale == 0 && self.ghosts == 0
    }
}

/// One line of the history.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    Op {
        at_ms: u64,
        op: String,
        token: String,
        seq: u64,
        ok: bool,
    },
    Push {
        at_ms: u64,
        sub: u64,
        service: usize,
        version: u64,
        data: Vec<String>,
    },
    Fault {
        at_ms: u64,
        what: String,
    },
}

pub struct Checker {
    start: Instant,
    pubs: BTreeMap<String, PubState>,
    subs: BTreeMap<u64, SubState>,
    pub gaps: Vec<Gap>,
    pub regressions: Vec<Regression>,
    pub history: Vec<Event>,
    /// Data strings that did not parse (never expected: counted as a failure).
    pub foreign: usize,
}

/// `<token>#<seq>`.
pub fn data_string(token: &str, seq: u64) -> String {
    format!("{token}#{seq}")
}

fn parse(data: &str) -> Option<(&str, u64)> {
    let (t, s) = data.rsplit_once('#')?;
    Some((t, s.parse().ok()?))
}

impl Checker {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            pubs: BTreeMap::new(),
            subs: BTreeMap::new(),
            gaps: Vec::new(),
            regressions: Vec::new(),
            history: Vec::new(),
            foreign: 0,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn fault(&mut self, what: String) {
        let at_ms = self.now_ms();
        self.history.push(Event::Fault { at_ms, what });
    }

    fn op(&mut self, op: &str, token: &str, seq: u64, ok: bool) {
        let at_ms = self.now_ms();
        self.history.push(Event::Op {
            at_ms,
            op: op.into(),
            token: token.into(),
            seq,
            ok,
        });
    }

    pub fn registering(&mut self, token: &str, service: usize) {
        self.pubs.insert(
            token.into(),
            PubState {
                service,
                phase: PubPhase::Registering,
                acked: 0,
                sent: 1,
            },
        );
        self.op("register_sent", token, 1, true);
    }

    pub fn registered(&mut self, token: &str, ok: bool) {
        if let Some(p) = self.pubs.get_mut(token) {
            if p.phase == PubPhase::Registering {
                if ok {
                    p.phase = PubPhase::Live;
                    p.acked = 1;
                } else {
                    p.phase = PubPhase::Uncertain;
                }
            }
        }
        self.op("register", token, 1, ok);
    }

    pub fn republishing(&mut self, token: &str, seq: u64) {
        if let Some(p) = self.pubs.get_mut(token) {
            p.sent = p.sent.max(seq);
        }
        self.op("republish_sent", token, seq, true);
    }

    pub fn republished(&mut self, token: &str, seq: u64, ok: bool) {
        if let Some(p) = self.pubs.get_mut(token) {
            if ok {
                p.acked = p.acked.max(seq);
            } else if p.phase == PubPhase::Live {
                p.phase = PubPhase::Uncertain;
            }
        }
        self.op("republish", token, seq, ok);
    }

    /// The publisher is withdrawn from now on (unregister sent, or its client closed).
    pub fn withdrawn(&mut self, token: &str) {
        let now = self.now_ms();
        if let Some(p) = self.pubs.get_mut(token) {
            if p.phase != PubPhase::Uncertain {
                p.phase = PubPhase::Dead(now);
            }
        }
        self.op("withdraw", token, 0, true);
    }

    /// The unregister request failed: the publisher may or may not be gone.
    pub fn withdraw_failed(&mut self, token: &str) {
        if let Some(p) = self.pubs.get_mut(token) {
            p.phase = PubPhase::Uncertain;
        }
        self.op("withdraw", token, 0, false);
    }

    pub fn subscribed(&mut self, sub: u64, service: usize) {
        self.subs.insert(
            sub,
            SubState {
                service,
                active: true,
                view: View::default(),
            },
        );
    }

    pub fn unsubscribed(&mut self, sub: u64) {
        let now = self.now_ms();
        if let Some(s) = self.subs.get_mut(&sub) {
            s.active = false;
            for (token, from) in s.view.open_gaps.drain() {
                self.gaps.push(Gap {
                    sub,
                    service: s.service,
                    token,
                    from_ms: from,
                    to_ms: now,
                    duration_ms: now - from,
                });
            }
        }
    }

    fn holds(&self, token: &str) -> bool {
        self.pubs
            .get(token)
            .is_some_and(|p| matches!(p.phase, PubPhase::Live))
    }

    /// A push as the subscriber's SDK delivered it.
    pub fn push(&mut self, sub: u64, version: u64, data: &[String]) {
        let now = self.now_ms();
        let Some(s) = self.subs.get(&sub) else {
            return;
        };
        if !s.active {
            return;
        }
        let service = s.service;
        let mut shown = HashMap::new();
        for d in data {
            match parse(d) {
                Some((t, seq)) => {
                    shown.insert(t.to_string(), seq);
                }
                None => self.foreign += 1,
            }
        }
        let held: HashSet<String> = shown
            .keys()
            .chain(s.view.shown.keys())
            .filter(|t| self.holds(t))
            .cloned()
            .collect();
        let s = self.subs.get_mut(&sub).expect("checked above");
        if let Some(had) = s.view.version {
            if version <= had {
                self.regressions.push(Regression {
                    sub,
                    service,
                    at_ms: now,
                    had,
                    got: version,
                });
            }
        }
        // A held publisher that was shown and is not any more opens a gap.
        for t in s.view.shown.keys() {
            if !shown.contains_key(t) && held.contains(t) {
                s.view.open_gaps.entry(t.clone()).or_insert(now);
            }
        }
        let mut closed = Vec::new();
        s.view.open_gaps.retain(|t, from| {
            if shown.contains_key(t) {
                closed.push((t.clone(), *from));
                false
            } else {
                true
            }
        });
        for (token, from) in closed {
            self.gaps.push(Gap {
                sub,
                service,
                token,
                from_ms: from,
                to_ms: now,
                duration_ms: now - from,
            });
        }
        s.view.version = Some(version);
        s.view.shown = shown;
        self.history.push(Event::Push {
            at_ms: now,
            sub,
            service,
            version,
            data: data.to_vec(),
        });
    }

    /// Open gaps of publishers that are not held any more end when they were withdrawn (a
    /// withdrawn publisher may go).
    fn settle_gaps(&mut self) {
        let pubs = &self.pubs;
        for (sub, s) in self.subs.iter_mut() {
            let mut ended = Vec::new();
            s.view
                .open_gaps
                .retain(|t, from| match pubs.get(t).map(|p| &p.phase) {
                    Some(PubPhase::Live) => true,
                    Some(PubPhase::Dead(at)) => {
                        ended.push((t.clone(), *from, (*at).max(*from)));
                        false
                    }
                    _ => false,
                });
            for (token, from, to) in ended {
                if to > from {
                    self.gaps.push(Gap {
                        sub: *sub,
                        service: s.service,
                        token,
                        from_ms: from,
                        to_ms: to,
                        duration_ms: to - from,
                    });
                }
            }
        }
    }

    /// Compares every active subscription's latest view with what the clients were told.
    /// Call when no client operation is in flight.
    pub fn check(&mut self) -> Findings {
        self.settle_gaps();
        let mut f = Findings::default();
        let mut expected: HashMap<usize, Vec<(&String, u64)>> = HashMap::new();
        for (t, p) in &self.pubs {
            if p.phase == PubPhase::Live {
                expected.entry(p.service).or_default().push((t, p.acked));
            }
        }
        for (sub, s) in &self.subs {
            if !s.active {
                continue;
            }
            for (t, seq) in expected.get(&s.service).map(Vec::as_slice).unwrap_or(&[]) {
                match s.view.shown.get(*t) {
                    None => {
                        f.lost += 1;
                        if f.examples.len() < 5 {
                            f.examples
                                .push(format!("sub {sub} (service {}) lacks {t}", s.service));
                        }
                    }
                    Some(shown) if shown < seq => {
                        f.stale += 1;
                        if f.examples.len() < 5 {
                            f.examples.push(format!(
                                "sub {sub} (service {}) shows {t}#{shown}, acked #{seq}",
                                s.service
                            ));
                        }
                    }
                    _ => {}
                }
            }
            for t in s.view.shown.keys() {
                if matches!(self.pubs.get(t).map(|p| &p.phase), Some(PubPhase::Dead(_))) {
                    f.ghosts += 1;
                    if f.examples.len() < 5 {
                        f.examples
                            .push(format!("sub {sub} (service {}) still shows {t}", s.service));
                    }
                }
            }
        }
        f
    }

    /// Ends every open gap now (at the end of the run).
    pub fn close_open_gaps(&mut self) {
        self.settle_gaps();
        let now = self.now_ms();
        for (sub, s) in self.subs.iter_mut() {
            for (token, from) in s.view.open_gaps.drain() {
                self.gaps.push(Gap {
                    sub: *sub,
                    service: s.service,
                    token,
                    from_ms: from,
                    to_ms: now,
                    duration_ms: now - from,
                });
            }
        }
    }

    pub fn live_publishers(&self) -> usize {
        self.pubs
            .values()
            .filter(|p| p.phase == PubPhase::Live)
            .count()
    }

    pub fn active_subscriptions(&self) -> usize {
        self.subs.values().filter(|s| s.active).count()
    }
}

impl Default for Checker {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(t: &str, s: u64) -> String {
        data_string(t, s)
    }

    #[test]
    fn finds_gaps_losses_ghosts_and_regressions() {
        let mut c = Checker::new();
        c.registering("a", 0);
        c.registered("a", true);
        c.registering("b", 0);
        c.registered("b", true);
        c.subscribed(1, 0);
        c.push(1, 10, &[d("a", 1), d("b", 1)]);
        assert!(c.check().clean());
        // b disappears while held: a gap, and lost at a check.
        c.push(1, 11, &[d("a", 1)]);
        let f = c.check();
        assert_eq!((f.lost, f.ghosts, f.stale), (1, 0, 0));
        c.push(1, 12, &[d("a", 1), d("b", 1)]);
        assert_eq!(c.gaps.len(), 1);
        // A republish acknowledged but not shown: stale.
        c.republishing("a", 2);
        c.republished("a", 2, true);
        assert_eq!(c.check().stale, 1);
        c.push(1, 13, &[d("a", 2), d("b", 1)]);
        // b withdrawn, still shown: a ghost; its going is no gap.
        c.withdrawn("b");
        assert_eq!(c.check().ghosts, 1);
        c.push(1, 14, &[d("a", 2)]);
        assert!(c.check().clean());
        assert_eq!(c.gaps.len(), 1);
        // A version at or below one held.
        c.push(1, 14, &[d("a", 2)]);
        assert_eq!(c.regressions.len(), 1);
        // An uncertain registration is neither lost nor a ghost.
        c.registering("u", 0);
        c.registered("u", false);
        assert!(c.check().clean());
    }
}
