//! Publisher payloads: `p<publisher>|<seq>|<send time in us>|` padded to the payload size, so
//! a subscriber can tell which change of which publisher it got and how long it took.

use registry_common::time::now_us;

/// Builds the payload of change `seq` of publisher `publisher`, sent now.
pub fn encode(publisher: usize, seq: u64, size: usize) -> String {
    let mut s = format!("p{publisher}|{seq}|{}|", now_us());
    if s.len() < size {
        s.extend(std::iter::repeat_n('x', size - s.len()));
    }
    s
}

/// (publisher, seq, send time in us) of a payload.
pub fn decode(s: &str) -> Option<(usize, u64, u64)> {
    let mut parts = s.split('|');
    let publisher = parts.next()?.strip_prefix('p')?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((publisher, seq, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let s = encode(1234, 7, 128);
        assert_eq!(s.len(), 128);
        let (p, seq, sent) = decode(&s).unwrap();
        assert_eq!((p, seq), (1234, 7));
        assert!(sent > 0);
        assert!(decode("garbage").is_none());
    }
}
