//! Every decoder (client frames, inter-server bodies, Raft log entries, votes, snapshots)
//! takes structure-aware random inputs without panicking; the short version of
//! `decoder-fuzz`.

use integration::fuzz::{decoders, mutate};
use proptest::prelude::*;

#[test]
fn every_sample_is_valid() {
    for d in decoders() {
        assert!(
            d.decode(&d.sample).is_ok(),
            "the sample of {} does not decode: {:?}",
            d.name,
            d.decode(&d.sample)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_decoder_panics(seed in any::<u64>()) {
        for d in decoders() {
            let input = mutate(&d.sample, seed);
            let _ = d.decode(&input);
        }
    }
}
