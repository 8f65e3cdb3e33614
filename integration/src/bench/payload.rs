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
///
/// Reads the three numbers byte by byte and stops at the third `|`: the driver decodes
/// every publisher's payload of every push, on the cores the servers run on.
pub fn decode(s: &str) -> Option<(usize, u64, u64)> {
    let rest = s.as_bytes().strip_prefix(b"p")?;
    let (publisher, rest) = number(rest)?;
    let (seq, rest) = number(rest)?;
    let (sent, _) = number(rest)?;
    Some((usize::try_from(publisher).ok()?, seq, sent))
}

/// The decimal number that starts `s` and ends at a `|`, and what follows the `|`.
fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let end = s.iter().position(|b| *b == b'|')?;
    let (digits, rest) = s.split_at(end);
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((n, &rest[1..]))
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
        assert!(decode("p1|2|").is_none(), "no send time");
        assert!(decode("p1||3|").is_none(), "an empty number");
        assert!(decode("p1|x|3|").is_none(), "not a number");
        assert!(decode("p1|99999999999999999999|3|").is_none(), "past u64");
        assert_eq!(decode("p12|34|56|xxxx"), Some((12, 34, 56)));
    }
}
