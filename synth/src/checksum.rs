//! The Internet checksum (RFC 1071), summed 64 bits at a time.
//!
//! RFC 1071 §2(B): the ones' complement sum does not depend on byte order, so the words are
//! added in the machine's own order (one unaligned 8-byte load each) and the folded sum is turned
//! into network order once, at the end. Every piece added must start at an even offset of the
//! checksummed bytes (only the last may have an odd length): the IP pseudo-header, the transport
//! header and the payload all do.

/// A running ones' complement sum, in the machine's byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Checksum(u64);

impl Checksum {
    /// The sum with `bytes` added as 16-bit big-endian words (a last odd byte padded with zero).
    pub(crate) fn add_bytes(self, bytes: &[u8]) -> Checksum {
        // A u128 holds the plain sum of 2^64 words: no carry to fold inside the loop, which
        // compiles to one add and one add-with-carry per 8 bytes.
        let mut wide = u128::from(self.0);
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            wide += u128::from(<[u8; 8]>::try_from(word).map_or(0, u64::from_ne_bytes));
        }
        let rest = words.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        wide += u128::from(u64::from_ne_bytes(last));
        Checksum(add_carry(wide as u64, (wide >> 64) as u64))
    }

    /// The sum with the 16-bit word `word` (in the host's numeric value) added.
    pub(crate) fn add_u16(self, word: u16) -> Checksum {
        Checksum(add_carry(self.0, u64::from(word.to_be())))
    }

    /// The ones' complement of the sum, as a value to write big-endian into a header.
    pub(crate) fn finish(self) -> u16 {
        let x = self.0;
        let x = (x & 0xffff_ffff) + (x >> 32);
        let x = (x & 0xffff_ffff) + (x >> 32);
        let x = (x & 0xffff) + (x >> 16);
        let x = (x & 0xffff) + (x >> 16);
        // The folded sum is in the machine's order; `from_be` turns it into the numeric value
        // whose big-endian bytes are these.
        u16::from_be(!(x as u16))
    }
}

/// `a + b` with the carry out of bit 63 added back in (end-around carry).
fn add_carry(a: u64, b: u64) -> u64 {
    let (sum, carry) = a.overflowing_add(b);
    // No overflow here: with a carry out, `sum` is at most 2^64 - 2.
    sum + u64::from(carry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::internet_checksum;

    /// A reproducible byte stream (xorshift), so failures can be replayed.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn equals_the_plain_sum_over_random_lengths_and_offsets() {
        let data = bytes(0x5eed, 70_000);
        let mut seed = 1u64;
        for round in 0..2_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Every offset (so unaligned loads), every length up to a few words and some long ones.
            let start = (seed >> 33) as usize % 64;
            let len = if round % 4 == 0 {
                (seed >> 20) as usize % (data.len() - 64)
            } else {
                round % 80
            };
            let piece = &data[start..start + len];
            assert_eq!(
                Checksum::default().add_bytes(piece).finish(),
                internet_checksum(piece),
                "start {start} len {len}"
            );
        }
    }

    #[test]
    fn pieces_at_even_offsets_add_up_to_the_whole() {
        let data = bytes(7, 3_001);
        for cut in (0..data.len()).step_by(2) {
            let (a, b) = data.split_at(cut);
            let pieces = Checksum::default().add_bytes(a).add_bytes(b).finish();
            assert_eq!(pieces, internet_checksum(&data), "cut {cut}");
        }
        let words = Checksum::default().add_u16(0x1234).add_u16(0xabcd).finish();
        assert_eq!(words, internet_checksum(&[0x12, 0x34, 0xab, 0xcd]));
    }

    #[test]
    fn equals_etherparse_tcp_checksums() {
        use etherparse::TcpHeader;
        let data = bytes(99, 66_000);
        for (i, len) in [0, 1, 2, 7, 8, 9, 63, 100, 1_001, 65_495]
            .into_iter()
            .enumerate()
        {
            let payload = &data[i..i + len];
            let mut tcp = TcpHeader::new(40_000 + i as u16, 80, 0xdead_beef, 65_535);
            tcp.acknowledgment_number = 0x0102_0304 * i as u32;
            tcp.psh = i % 2 == 0;
            let src = [10, 0, 0, i as u8];
            let dst = [192, 168, 255, 254];
            let ours = Checksum::default()
                .add_bytes(&src)
                .add_bytes(&dst)
                .add_u16(6)
                .add_u16((20 + len) as u16)
                .add_bytes(&tcp.to_bytes())
                .add_bytes(payload)
                .finish();
            assert_eq!(
                ours,
                tcp.calc_checksum_ipv4_raw(src, dst, payload).unwrap(),
                "len {len}"
            );
        }
    }

    #[test]
    fn all_zero_bytes_sum_to_ffff() {
        assert_eq!(Checksum::default().add_bytes(&[0; 13]).finish(), 0xffff);
        // A sum of all ones (negative zero) stays as it is: its complement is 0.
        assert_eq!(Checksum::default().add_bytes(&[0xff; 6]).finish(), 0);
    }
}
