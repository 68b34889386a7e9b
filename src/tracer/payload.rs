//! A record's payload as the tracer knows it before copying it: where the bytes are in the
//! stopped tracee (or in the file it sends from). The sink copies them once, straight from
//! there into the ring's reservation: no intermediate buffer, no zero fill.
//!
//! Memory the kernel just read or wrote for the call is readable unless the program unmapped
//! it meanwhile (another of its threads): then the bytes that cannot be read are zeros and the
//! record keeps the length the kernel reported, which the capture's sequence numbers follow.

use super::tracee::Tracee;
use crate::record::Record;

/// Remote pieces handed to the tracee per read: bounds the stack array that holds them.
const PIECES: usize = 64;

/// Where a record's payload comes from.
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    /// The record's own `data`.
    Inline,
    /// The first `len` bytes through the tracee's buffers `iov` (base, length).
    Memory {
        t: &'a dyn Tracee,
        iov: &'a [(u64, u64)],
        len: usize,
    },
    /// `len` bytes of the tracee's file `fd` from `offset` (sendfile's source).
    File {
        t: &'a dyn Tracee,
        fd: i32,
        offset: i64,
        len: usize,
    },
}

impl<'a> Payload<'a> {
    /// The first `total` bytes through `iov`, or all of them when the buffers hold fewer (an
    /// array cut at 1,024 entries).
    pub fn memory(t: &'a dyn Tracee, iov: &'a [(u64, u64)], total: usize) -> Payload<'a> {
        let held = iov
            .iter()
            .fold(0usize, |s, v| s.saturating_add(v.1 as usize));
        Payload::Memory {
            t,
            iov,
            len: total.min(held),
        }
    }

    /// The payload's length for record `r`.
    pub fn len(&self, r: &Record) -> usize {
        match *self {
            Payload::Inline => r.data.len(),
            Payload::Memory { len, .. } | Payload::File { len, .. } => len,
        }
    }

    /// Fill `dst` with the payload's bytes from `skip` on (`skip + dst.len()` at most its
    /// length): every byte of `dst` is written, zero where the source could not be read.
    pub fn fill(&self, r: &Record, skip: usize, dst: &mut [u8]) {
        match *self {
            Payload::Inline => {
                let src = r.data.get(skip..skip + dst.len()).unwrap_or_default();
                dst[..src.len()].copy_from_slice(src);
                dst[src.len()..].fill(0);
            }
            Payload::Memory { t, iov, .. } => fill_memory(t, iov, skip, dst),
            Payload::File { t, fd, offset, .. } => {
                let got = t.file_bytes(fd, offset.saturating_add(skip as i64), dst);
                // A file that shrank meanwhile: the missing tail stays zero.
                let got = got.min(dst.len());
                dst[got..].fill(0);
            }
        }
    }
}

/// `dst.len()` bytes through `iov` from byte `skip` on, read in batches of pieces.
fn fill_memory(t: &dyn Tracee, iov: &[(u64, u64)], mut skip: usize, dst: &mut [u8]) {
    let mut pieces = [(0u64, 0u64); PIECES];
    let (mut n, mut batch_start, mut at) = (0usize, 0usize, 0usize);
    for &(base, len) in iov {
        if at == dst.len() {
            break;
        }
        let len = len as usize;
        if skip >= len {
            skip -= len;
            continue;
        }
        let take = (len - skip).min(dst.len() - at);
        pieces[n] = (base.wrapping_add(skip as u64), take as u64);
        skip = 0;
        n += 1;
        at += take;
        if n == PIECES {
            read_pieces(t, &pieces[..n], &mut dst[batch_start..at]);
            (n, batch_start) = (0, at);
        }
    }
    if n > 0 {
        read_pieces(t, &pieces[..n], &mut dst[batch_start..at]);
    }
    // Buffers that end before the payload does (cannot happen with `Payload::memory`'s length).
    dst[at..].fill(0);
}

/// Read `pieces` (whose lengths add up to `dst.len()`) into `dst`. A piece that cannot be read
/// whole keeps what was read and zeros for the rest; the pieces after it are still read (as a
/// read of each on its own would).
fn read_pieces(t: &dyn Tracee, pieces: &[(u64, u64)], dst: &mut [u8]) {
    let (mut i, mut at) = (0usize, 0usize);
    while i < pieces.len() {
        let mut left = t.read_pieces(&pieces[i..], &mut dst[at..]);
        while i < pieces.len() && left >= pieces[i].1 as usize {
            left -= pieces[i].1 as usize;
            at += pieces[i].1 as usize;
            i += 1;
        }
        if i == pieces.len() {
            break;
        }
        let len = pieces[i].1 as usize;
        dst[at + left..at + len].fill(0);
        at += len;
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Kind;
    use crate::tracer::tracee::SockInfo;

    /// Memory from 0x1000 to 0x1100 holding its address's low byte; nothing else.
    struct Pages;

    impl Tracee for Pages {
        fn read(&self, addr: u64, buf: &mut [u8]) -> usize {
            let n = if (0x1000..0x1100).contains(&addr) {
                buf.len().min((0x1100 - addr) as usize)
            } else {
                0
            };
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = (addr as usize + i) as u8;
            }
            n
        }
        fn socket(&self, _: i32) -> Option<SockInfo> {
            None
        }
        fn local(&self, _: i32) -> Option<std::net::SocketAddr> {
            None
        }
        fn file_bytes(&self, _: i32, offset: i64, out: &mut [u8]) -> usize {
            let n = out.len().min(10usize.saturating_sub(offset as usize));
            out[..n].fill(b'f');
            n
        }
        fn file_offset(&self, _: i32) -> Option<i64> {
            None
        }
    }

    fn bytes(p: &Payload, skip: usize, n: usize) -> Vec<u8> {
        // Garbage where the ring's earlier laps left bytes: every one must be overwritten.
        let mut v = vec![0xee; n];
        p.fill(&Record::new(Kind::Send), skip, &mut v);
        v
    }

    #[test]
    fn a_live_process_is_read_in_one_pass_up_to_its_first_unreadable_buffer() {
        use crate::tracer::tracee::Process;
        // Our own memory, through process_vm_readv: more pieces than one batch holds.
        let me = Process::open(std::process::id() as i32);
        let src: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let base = src.as_ptr() as u64;
        let mut pieces: Vec<(u64, u64)> = (0..150).map(|i| (base + 2 * i, 2)).collect();
        let mut dst = vec![0u8; 300];
        assert_eq!(me.read_pieces(&pieces, &mut dst), 300);
        assert_eq!(dst, src);
        pieces[100] = (8, 2);
        let p = Payload::memory(&me, &pieces, 300);
        let got = bytes(&p, 0, 300);
        assert_eq!(got[..200], src[..200]);
        assert_eq!(got[200..202], [0, 0], "the unmapped piece is zeros");
        assert_eq!(got[202..], src[202..], "the pieces after it are read");
    }

    #[test]
    fn a_payload_is_read_across_buffers_from_any_offset() {
        let t = Pages;
        let iov = [(0x1000, 4), (0x1010, 0), (0x1020, 6)];
        let p = Payload::memory(&t, &iov, 100);
        assert_eq!(
            p.len(&Record::new(Kind::Send)),
            10,
            "no more than the buffers hold"
        );
        assert_eq!(
            bytes(&p, 0, 10),
            [0, 1, 2, 3, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25]
        );
        assert_eq!(
            bytes(&p, 3, 4),
            [3, 0x20, 0x21, 0x22],
            "a chunk in the middle"
        );
        assert_eq!(bytes(&p, 6, 4), [0x22, 0x23, 0x24, 0x25]);
    }

    #[test]
    fn unreadable_memory_is_zeros_and_the_buffers_after_it_are_still_read() {
        let t = Pages;
        // The second buffer runs off the mapping after 2 bytes; the third is not mapped.
        let iov = [(0x10f0, 4), (0x10fe, 4), (0x5000, 3), (0x1000, 2)];
        let p = Payload::memory(&t, &iov, 13);
        assert_eq!(
            bytes(&p, 0, 13),
            [0xf0, 0xf1, 0xf2, 0xf3, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn many_buffers_are_read_in_batches_and_a_file_short_of_bytes_ends_in_zeros() {
        let t = Pages;
        let iov: Vec<(u64, u64)> = (0..200).map(|i| (0x1000 + i, 1)).collect();
        let p = Payload::memory(&t, &iov, 200);
        let want: Vec<u8> = (0..200).map(|i| i as u8).collect();
        assert_eq!(bytes(&p, 0, 200), want);
        let f = Payload::File {
            t: &t,
            fd: 3,
            offset: 4,
            len: 8,
        };
        assert_eq!(bytes(&f, 0, 8), b"ffffff\0\0");
        assert_eq!(
            bytes(&f, 5, 3),
            b"f\0\0",
            "a later chunk reads from its own offset"
        );
        let inline = Record {
            data: b"abcdef",
            ..Record::new(Kind::Send)
        };
        let mut v = [0u8; 3];
        Payload::Inline.fill(&inline, 2, &mut v);
        assert_eq!(&v, b"cde");
    }
}
