//! TCP sequence numbers: 32-bit values that wrap.

/// A TCP sequence or acknowledgment number; all arithmetic wraps modulo 2^32 (RFC 9293 §3.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// The number `len` octets further on (lengths past 4 GiB wrap, as on the wire).
    pub fn add(self, len: usize) -> SeqNumber {
        // Truncating is the wrap: only the length modulo 2^32 moves a sequence number.
        SeqNumber(self.0.wrapping_add(len as u32))
    }

    /// Octets from `earlier` up to `self`, assuming `earlier` is not ahead of `self`.
    pub fn since(self, earlier: SeqNumber) -> u32 {
        self.0.wrapping_sub(earlier.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_since_wrap() {
        let near_end = SeqNumber(u32::MAX - 1);
        let wrapped = near_end.add(5);
        assert_eq!(wrapped, SeqNumber(3));
        assert_eq!(wrapped.since(near_end), 5);
    }
}
