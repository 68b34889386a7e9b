//! Hash maps keyed by pids, descriptors, inodes and slots, for the collector and the tracer: a
//! multiply-rotate hash instead of std's SipHash, which cost about a third of the collector's
//! instructions per packet and was paid again at every stop of the tracer. SipHash resists
//! keys chosen to collide; these keys come from the kernel and the traced programs of one
//! user's run, and a collision only costs a longer probe.

use std::hash::{BuildHasherDefault, Hasher};

pub type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<WordHasher>>;
pub type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<WordHasher>>;

/// Folds each word in with a rotate, an xor and a multiply (the scheme of Firefox's and rustc's
/// "Fx" hash), so the high bits hashbrown uses depend on every input bit. The multiplier is
/// 2^64 divided by the golden ratio (Fibonacci hashing): consecutive numbers, the usual keys
/// here, land as far apart in the high bits as any constant can put them.
#[derive(Default, Clone, Copy)]
pub struct WordHasher {
    hash: u64,
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl WordHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_ne_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length too, so that "ab" and "ab\0" differ.
            self.add(u64::from_ne_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash>(t: T) -> u64 {
        BuildHasherDefault::<WordHasher>::default().hash_one(t)
    }

    #[test]
    fn nearby_keys_spread_over_the_high_bits() {
        // hashbrown picks a group from the low bits and tags entries with the top 7: keys that
        // differ only in their low bits (consecutive descriptors, pids) must spread over both
        // (random hashes give about 81 tags for 128 keys; an identity hash gives 1).
        let top: HashSet<u64> = (0..128i32).map(|fd| hash((1234, fd)) >> 57).collect();
        assert!(top.len() >= 48, "only {} tags for 128 keys", top.len());
        let low: HashSet<u64> = (0..128u64).map(|i| hash(i) & 127).collect();
        assert!(low.len() >= 48, "only {} groups for 128 keys", low.len());
    }

    #[test]
    fn neighbouring_numbers_differ_in_the_high_bits() {
        // The tracer's keys: descriptors, pids and thread ids alone.
        let tops: HashSet<u64> = (0..128i32).map(|n| hash(n) >> 57).collect();
        assert!(tops.len() > 64, "{} distinct top-7-bit values", tops.len());
        let mut m: HashMap<i32, i32> = HashMap::default();
        for n in 0..10_000 {
            m.insert(n, -n);
        }
        assert!((0..10_000).all(|n| m.get(&n) == Some(&-n)));
    }

    #[test]
    fn byte_strings_of_other_lengths_differ() {
        assert_ne!(hash(b"ab".as_slice()), hash(b"ab\0".as_slice()));
        assert_ne!(hash("x"), hash("x\0"));
    }

    #[test]
    fn maps_work_as_std_maps() {
        let mut m: HashMap<(i32, i32), u64> = HashMap::default();
        for pid in 0..50 {
            for fd in 0..50 {
                m.insert((pid, fd), (pid * 100 + fd) as u64);
            }
        }
        assert_eq!(m.len(), 2500);
        assert_eq!(m.get(&(7, 9)), Some(&709));
    }
}
