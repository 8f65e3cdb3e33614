//! Decoder robustness: structure-aware random inputs for every decoder of bytes a server
//! reads from the network or from disk.
//!
//! Each decoder comes with a valid sample. An input is the sample with one to four
//! mutations: most act on its JSON tree (a node replaced by a value of another type, an
//! extreme number, a hostile string, deep nesting; a key removed, added or renamed; an array
//! emptied or repeated), the rest on its bytes (flipped, cut, spliced, repeated). A decoder
//! may refuse an input with an error; it must never panic. `decoder-fuzz` runs a million
//! inputs per decoder; the test suite a short run.
//!
//! Most inputs are small: long strings just past the 256-byte limits, nesting well past the
//! decoders' depth limit but not by much, arrays repeated a few times, so an input is a few
//! hundred bytes. One in [`LARGE_ONE_IN`] is large: strings up to 70 KB, nesting 400 deep,
//! arrays repeated 50 times, for the size and depth limits themselves. Every structure is
//! drawn at both sizes.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use registry_common::proto::client::{ClientFrame, ServerFrame};
use registry_common::proto::{data, meta};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// Decodes bytes; `Err` is a refusal.
type DecodeFn = Box<dyn Fn(&[u8]) -> Result<(), String> + Send + Sync>;

/// One decoder: its name, a valid input, and the decoding.
pub struct Decoder {
    pub name: String,
    pub sample: Vec<u8>,
    decode: DecodeFn,
}

impl Decoder {
    /// Decodes `input`; `Err` is a refusal, a panic escapes.
    pub fn decode(&self, input: &[u8]) -> Result<(), String> {
        (self.decode)(input)
    }
}

fn serde_decoder<T: DeserializeOwned + 'static>(name: &str, sample: Value) -> Decoder {
    Decoder {
        name: name.into(),
        sample: serde_json::to_vec(&sample).unwrap_or_default(),
        decode: Box::new(|b| {
            serde_json::from_slice::<T>(b)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    }
}

const ID: &str = "com.example.Echo#@#DEFAULT_INSTANCE_ID#@#DEFAULT_GROUP";

fn publisher() -> Value {
    json!({"dataInfoId": ID, "key": {"clientId": "5f0c3a9e", "registId": "p1"},
        "data": ["10.0.0.1:8080"], "version": 1,
        "session": "session-127.0.0.1:9600-5d1e2f3a4b5c", "connId": 42,
        "registeredAtMs": 1763870000000u64, "zone": "zone-a", "app": "checkout"})
}

fn view() -> Value {
    json!({"epoch": 1, "members": {"data-127.0.0.1:9620-abe9d023ff66": {
            "id": "data-127.0.0.1:9620-abe9d023ff66", "role": "data", "addr": "127.0.0.1:9620",
            "zone": "default", "registeredAtMs": 1763870000000u64}},
        "slots": {"slots": [{"primary": "data-127.0.0.1:9620-abe9d023ff66", "replicas": []}]},
        "settings": {"copies": 2, "slotCount": 1, "pushEnabled": true, "clientBlacklist": []}})
}

/// Every decoder, with its sample.
pub fn decoders() -> Vec<Decoder> {
    let mut out = vec![
        Decoder {
            name: "client_frame".into(),
            sample: br#"{"type":"register_publisher","reqId":2,"registId":"p1","dataId":"com.example.Echo","instanceId":null,"group":null,"data":["10.0.0.1:8080"],"version":1}"#.to_vec(),
            decode: Box::new(|b| {
                ClientFrame::decode(&String::from_utf8_lossy(b))
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
            }),
        },
        Decoder {
            name: "client_hello".into(),
            sample: br#"{"type":"hello","reqId":1,"protocol":1,"clientId":"5f0c3a9e1d2b4c6a8e7f9a0b1c2d3e4f","zone":"zone-a","app":"checkout"}"#.to_vec(),
            decode: Box::new(|b| {
                ClientFrame::decode(&String::from_utf8_lossy(b))
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
            }),
        },
        Decoder {
            name: "client_subscribe".into(),
            sample: br#"{"type":"register_subscriber","reqId":4,"registId":"s1","dataId":"com.example.Echo","instanceId":null,"group":null,"knownVersion":0}"#.to_vec(),
            decode: Box::new(|b| {
                ClientFrame::decode(&String::from_utf8_lossy(b))
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
            }),
        },
        Decoder {
            name: "server_frame".into(),
            sample: serde_json::to_vec(&json!({"type": "push", "pushId": 7, "registId": "s1",
                "dataInfoId": ID, "version": 1882620899909173248u64, "data": ["10.0.0.1:8080"]}))
            .unwrap_or_default(),
            decode: Box::new(|b| {
                ServerFrame::decode(&String::from_utf8_lossy(b)).map(|_| ())
            }),
        },
        serde_decoder::<data::WriteRequest>(
            "data_write_request",
            json!({"epoch": 9, "ops": [{"publish": {"publisher": publisher()}},
                {"unpublish": {"dataInfoId": ID, "key": {"clientId": "5f0c3a9e", "registId": "p0"},
                    "session": "session-127.0.0.1:9600-5d1e2f3a4b5c", "connId": 41}}],
                "versionFloor": 1882620899909173248u64}),
        ),
        serde_decoder::<data::WriteResponse>(
            "data_write_response",
            json!({"epoch": 9, "results": [{"version": 1882620899909173248u64},
                {"error": {"code": "not_owner", "message": "slot 3", "epoch": 9, "redirect": "127.0.0.1:9622"}}]}),
        ),
        serde_decoder::<data::FetchRequest>(
            "data_fetch_request",
            json!({"epoch": 9, "ids": [ID], "compact": true}),
        ),
        serde_decoder::<data::FetchResponse>(
            "data_fetch_response",
            json!({"epoch": 9, "datums": [{"dataInfoId": ID, "version": 5, "publishers": [publisher()], "serverRemoval": true}],
                "compact": [{"dataInfoId": ID, "version": 5, "publishers": 1, "data": ["10.0.0.1:8080"]}],
                "errors": []}),
        ),
        serde_decoder::<data::VersionsResponse>(
            "data_versions_response",
            json!({"epoch": 9, "versions": [{"dataInfoId": ID, "version": 5}], "errors": []}),
        ),
        serde_decoder::<data::ChangeBatch>(
            "session_changes",
            json!({"from": "data-127.0.0.1:9620-abe9d023ff66", "epoch": 9, "changes": [{"dataInfoId": ID,
                "version": 5, "datum": {"dataInfoId": ID, "version": 5, "publishers": 1, "data": ["10.0.0.1:8080"]}}]}),
        ),
        serde_decoder::<data::SessionPublishersRequest>(
            "data_session_publishers_request",
            json!({"epoch": 9, "session": "session-127.0.0.1:9600-5d1e2f3a4b5c", "slots": [17]}),
        ),
        serde_decoder::<data::SessionPublishersResponse>(
            "data_session_publishers_response",
            json!({"epoch": 9, "slots": [17], "publishers": [{"dataInfoId": ID,
                "key": {"clientId": "5f0c3a9e", "registId": "p1"}, "connId": 42, "version": 1,
                "registeredAtMs": 1763870000000u64}]}),
        ),
        serde_decoder::<data::ReplicateRequest>(
            "data_replicate_request",
            json!({"epoch": 9, "from": "data-127.0.0.1:9620-abe9d023ff66", "items": [{"dataInfoId": ID, "ops": [
                {"version": 7, "prevVersion": 5, "op": {"put": {"publisher": publisher()}}},
                {"version": 8, "prevVersion": 7, "op": {"remove": {"key": {"clientId": "5f0c3a9e", "registId": "p0"}}}}]}]}),
        ),
        serde_decoder::<data::ReplicateResponse>(
            "data_replicate_response",
            json!({"epoch": 9, "acks": [{"dataInfoId": ID, "version": 8, "needFull": false}], "errors": []}),
        ),
        serde_decoder::<data::SyncRequest>(
            "data_sync_request",
            json!({"epoch": 10, "slot": 17, "requester": "data-127.0.0.1:9623-0c1d2e3f4a5b"}),
        ),
        serde_decoder::<data::SyncResponse>(
            "data_sync_response",
            json!({"epoch": 10, "slot": 17, "datums": [{"dataInfoId": ID, "version": 8, "publishers": [publisher()]}], "complete": true}),
        ),
        serde_decoder::<meta::RegisterRequest>(
            "meta_register_request",
            json!({"member": {"id": "data-127.0.0.1:9620-abe9d023ff66", "role": "data",
                "addr": "127.0.0.1:9620", "zone": "default", "registeredAtMs": 0}}),
        ),
        serde_decoder::<meta::RegisterResponse>(
            "meta_register_response",
            json!({"view": view(), "lease": {"renewIntervalMs": 2000, "leaseMs": 10000}}),
        ),
        serde_decoder::<meta::MemberRequest>(
            "meta_member_request",
            json!({"id": "data-127.0.0.1:9620-abe9d023ff66"}),
        ),
        serde_decoder::<meta::NodeRequest>(
            "meta_node_request",
            json!({"nodeId": 4, "addr": "127.0.0.1:9613", "voter": true}),
        ),
        serde_decoder::<registry_common::member::ClusterView>("meta_view", view()),
        serde_decoder::<registry_common::ApiError>(
            "api_error",
            json!({"code": "not_owner", "message": "slot 17", "epoch": 9, "redirect": "127.0.0.1:9622"}),
        ),
    ];
    for (name, sample) in meta_server::raft::decoders::samples() {
        out.push(Decoder {
            name: name.into(),
            sample,
            decode: Box::new(move |b| {
                meta_server::raft::decoders::decode(name, b).unwrap_or(Ok(()))
            }),
        });
    }
    out
}

/// How large one input may grow.
#[derive(Debug)]
struct Scale {
    /// Lengths of a long string.
    long_string: std::ops::Range<usize>,
    /// Depths of deep nesting.
    nesting: std::ops::Range<usize>,
    /// Extra copies when an array is repeated.
    repeats: std::ops::Range<usize>,
}

/// Most inputs: a few hundred bytes.
const SMALL: Scale = Scale {
    long_string: 257..1_024,
    nesting: 50..200,
    repeats: 1..8,
};

/// The few that probe size and depth limits.
const LARGE: Scale = Scale {
    long_string: 257..70_000,
    nesting: 50..400,
    repeats: 1..50,
};

/// One input in this many is drawn at the [`LARGE`] scale.
pub const LARGE_ONE_IN: u32 = 32;

fn hostile_string(rng: &mut Xoshiro256PlusPlus, scale: &Scale) -> String {
    match rng.random_range(0..9) {
        0 => String::new(),
        1 => "#@#".into(),
        2 => "\u{0}\u{1}\n\t\u{7f}".into(),
        3 => "é😀\u{202e}\u{feff}".into(),
        4 => "x".repeat(rng.random_range(scale.long_string.clone())),
        5 => ID.into(),
        6 => "a#@#b#@#c#@#d".into(),
        7 => format!("{}", rng.random::<u64>()),
        _ => (0..rng.random_range(1..40))
            .map(|_| char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('?'))
            .collect(),
    }
}

fn random_value(rng: &mut Xoshiro256PlusPlus, depth: usize, scale: &Scale) -> Value {
    match rng.random_range(0..12) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => json!(u64::MAX),
        3 => json!(i64::MIN),
        4 => json!(-1),
        5 => json!(1e308),
        6 => json!(rng.random::<u32>()),
        7 | 8 => Value::String(hostile_string(rng, scale)),
        9 if depth < 3 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth + 1, scale))
                .collect(),
        ),
        10 if depth < 3 => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.random_range(0..4) {
                m.insert(
                    hostile_string(rng, scale),
                    random_value(rng, depth + 1, scale),
                );
            }
            Value::Object(m)
        }
        _ => {
            // Deep nesting.
            let mut v = json!(0);
            for _ in 0..rng.random_range(scale.nesting.clone()) {
                v = json!([v]);
            }
            v
        }
    }
}

/// How many nodes a tree has.
fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(m) => m.values().map(count).sum(),
        _ => 0,
    }
}

/// Applies `f` to the `n`-th node in pre-order; true once applied.
fn at_nth(v: &mut Value, n: &mut usize, f: &mut dyn FnMut(&mut Value)) -> bool {
    if *n == 0 {
        f(v);
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|c| at_nth(c, n, f)),
        Value::Object(m) => m.values_mut().any(|c| at_nth(c, n, f)),
        _ => false,
    }
}

fn mutate_node(rng: &mut Xoshiro256PlusPlus, node: &mut Value, scale: &Scale) {
    match (rng.random_range(0..6), node) {
        (0, Value::Object(m)) if !m.is_empty() => {
            let k = m.keys().nth(rng.random_range(0..m.len())).cloned();
            if let Some(k) = k {
                m.remove(&k);
            }
        }
        (1, Value::Object(m)) => {
            m.insert(hostile_string(rng, scale), random_value(rng, 0, scale));
        }
        (2, Value::Object(m)) if !m.is_empty() => {
            let k = m.keys().nth(rng.random_range(0..m.len())).cloned();
            if let Some(k) = k {
                if let Some(v) = m.remove(&k) {
                    m.insert(format!("{k}_"), v);
                }
            }
        }
        (3, Value::Array(a)) if !a.is_empty() => {
            if rng.random() {
                a.clear();
            } else {
                let first = a[0].clone();
                for _ in 0..rng.random_range(scale.repeats.clone()) {
                    a.push(first.clone());
                }
            }
        }
        (_, node) => *node = random_value(rng, 0, scale),
    }
}

fn mutate_tree(rng: &mut Xoshiro256PlusPlus, root: &mut Value, scale: &Scale) {
    let mut n = rng.random_range(0..count(root));
    let mut sub = Xoshiro256PlusPlus::seed_from_u64(rng.random());
    at_nth(root, &mut n, &mut |node| mutate_node(&mut sub, node, scale));
}

fn mutate_bytes(rng: &mut Xoshiro256PlusPlus, b: &mut Vec<u8>) {
    if b.is_empty() {
        b.push(rng.random());
        return;
    }
    let i = rng.random_range(0..b.len());
    match rng.random_range(0..5) {
        0 => b[i] ^= 1 << rng.random_range(0..8),
        1 => b.truncate(i),
        2 => b.insert(i, rng.random()),
        3 => {
            let j = rng.random_range(i..b.len());
            let slice = b[i..=j].to_vec();
            b.splice(i..i, slice);
        }
        _ => {
            const SPECIAL: &[u8] = b"{}[]\",:\\0-e.";
            b[i] = SPECIAL[rng.random_range(0..SPECIAL.len())];
        }
    }
}

/// The `seed`-th input derived from `sample`.
pub fn mutate(sample: &[u8], seed: u64) -> Vec<u8> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let scale = if rng.random_range(0..LARGE_ONE_IN) == 0 {
        &LARGE
    } else {
        &SMALL
    };
    let rounds = rng.random_range(1..=4);
    let mut tree: Option<Value> = serde_json::from_slice(sample).ok();
    let mut bytes = None;
    for _ in 0..rounds {
        match (&mut tree, rng.random_range(0..10)) {
            (Some(t), 0..=6) => mutate_tree(&mut rng, t, scale),
            _ => {
                let b = bytes.get_or_insert_with(|| match &tree {
                    Some(t) => serde_json::to_vec(t).unwrap_or_default(),
                    None => sample.to_vec(),
                });
                tree = None;
                mutate_bytes(&mut rng, b);
            }
        }
    }
    match (tree, bytes) {
        (Some(t), _) => serde_json::to_vec(&t).unwrap_or_default(),
        (None, Some(b)) => b,
        (None, None) => sample.to_vec(),
    }
}

/// Outcome of a run over one decoder.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Tally {
    pub name: String,
    pub inputs: u64,
    pub accepted: u64,
    pub refused: u64,
    pub panics: u64,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Bytes of input, summed.
    pub input_bytes: u64,
    /// The longest input.
    pub max_input_bytes: u64,
    /// The first input that panicked, for a regression test.
    pub first_panic: Option<String>,
}

impl Tally {
    pub fn inputs_per_second(&self) -> f64 {
        self.inputs as f64 / self.seconds.max(1e-9)
    }
}

/// Runs `inputs` mutated inputs (seeds `seed..seed + inputs`) through `d`.
pub fn run(d: &Decoder, seed: u64, inputs: u64) -> Tally {
    let started = std::time::Instant::now();
    let mut t = Tally {
        name: d.name.clone(),
        ..Tally::default()
    };
    for s in seed..seed.saturating_add(inputs) {
        let input = mutate(&d.sample, s);
        t.inputs += 1;
        t.input_bytes += input.len() as u64;
        t.max_input_bytes = t.max_input_bytes.max(input.len() as u64);
        match catch_unwind(AssertUnwindSafe(|| d.decode(&input))) {
            Ok(Ok(())) => t.accepted += 1,
            Ok(Err(_)) => t.refused += 1,
            Err(_) => {
                t.panics += 1;
                if t.first_panic.is_none() {
                    t.first_panic = Some(String::from_utf8_lossy(&input).into_owned());
                }
            }
        }
    }
    t.seconds = started.elapsed().as_secs_f64();
    t
}
