//! Maps keyed by small integers the kernel hands out (descriptors, pids, thread ids), looked
//! up at every stop of a traced call: a multiplicative hash instead of the default SipHash,
//! which guards against keys chosen by an attacker (these are not) at several times the cost.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Fibonacci hashing: the multiplication spreads consecutive numbers over the high bits,
/// which the map's probing reads first.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only for keys other than integers (none here): fold the bytes in.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_i32(&mut self, n: i32) {
        self.0 = (self.0 ^ u64::from(n as u32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn neighbouring_numbers_differ_in_the_high_bits() {
        let b = BuildHasherDefault::<IdHasher>::default();
        let tops: IdSet<u64> = (0..128i32).map(|n| b.hash_one(n) >> 57).collect();
        assert!(tops.len() > 64, "{} distinct top-7-bit values", tops.len());
        let mut m: IdMap<i32, i32> = IdMap::default();
        for n in 0..10_000 {
            m.insert(n, -n);
        }
        assert!((0..10_000).all(|n| m.get(&n) == Some(&-n)));
    }
}
