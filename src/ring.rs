//! The shared-memory region between traced processes and the collector: a header, a table of
//! producer slots, and one ring of frames per slot.
//!
//! Each traced process claims a slot of its own (a fork child claims a fresh one), and every
//! thread of it writes frames into that slot's ring, LTTng-UST style: reserve space with a
//! compare-and-swap on the ring's head, copy, then publish the frame with a release store of its
//! state word. No lock, no allocation, no system call (except while the ring is full, when the
//! producer's `wait` callback decides how to wait). A signal handler that interrupts a producer
//! between reserve and commit simply reserves after it. The collector reads committed frames at
//! the tail, in reservation order, and hands the space back by advancing the tail.
//!
//! A frame is a 16-byte header (state, length, absolute position) and its bytes, padded to 16.
//! The absolute position in the header is what makes a frame valid at the tail: a stale header
//! from an earlier lap names an older position, so it is never mistaken for a new frame, and the
//! consumer can find the next frame after one whose writer died (see [`Ring::skip_stuck`]).
//!
//! Everything here works on raw memory that other processes change concurrently: only atomics
//! are read or written where another process may write at the same time.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// Identifies a region and its layout version.
pub const MAGIC: u64 = u64::from_ne_bytes(*b"NIRING01");
const HEADER_BYTES: usize = 4096;
const SLOT_BYTES: usize = 256;
const FRAME_HEADER: u64 = 16;
const ALIGN: u64 = 16;

/// Frame states.
const FRAME_COMMITTED: u32 = u32::from_ne_bytes(*b"COMT");
const FRAME_PADDING: u32 = u32::from_ne_bytes(*b"PADD");

/// Slot states.
pub const SLOT_FREE: u32 = 0;
const SLOT_CLAIMING: u32 = 1;
pub const SLOT_ACTIVE: u32 = 2;

/// The total size of a region with `slots` rings of `ring_bytes` each.
pub fn region_len(slots: u32, ring_bytes: u64) -> usize {
    rings_offset(slots) + slots as usize * ring_bytes as usize
}

fn rings_offset(slots: u32) -> usize {
    (HEADER_BYTES + slots as usize * SLOT_BYTES).next_multiple_of(4096)
}

/// A mapped region. Copying the handle is free; the memory belongs to whoever mapped it.
#[derive(Clone, Copy)]
pub struct Region {
    base: *mut u8,
    len: usize,
}

// SAFETY: the region is shared memory accessed only through atomics, and through frame bytes
// that the reservation protocol gives to one writer at a time.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

mod head {
    pub const MAGIC: usize = 0;
    pub const SLOTS: usize = 8;
    pub const RING_BYTES: usize = 16;
    pub const COLLECTOR_PID: usize = 24;
    pub const DISABLED: usize = 28;
    pub const CLAIMS: usize = 32;
    pub const START_REALTIME_NS: usize = 40;
    pub const START_MONO_NS: usize = 48;
    /// The collector's monotonic clock, stored before each look at the rings (see `clock_floor`).
    pub const COLLECTOR_NOW_NS: usize = 64;
    /// The last timestamp handed out by `stamp_without_clock`.
    pub const LAST_STAMP_NS: usize = 72;
}

mod slot {
    pub const STATE: usize = 0;
    pub const OWNER: usize = 4;
    pub const CLAIM_SEQ: usize = 8;
    pub const EXIT_ACK: usize = 16;
    pub const LOST: usize = 24;
    /// Head and tail on cache lines of their own: producers write one, the collector the other.
    pub const HEAD: usize = 64;
    pub const TAIL: usize = 128;
}

impl Region {
    /// Lay out a fresh region over zeroed memory of [`region_len`] bytes.
    ///
    /// # Safety
    /// `base` is valid for `len` bytes, zeroed, 4096-aligned, and lives as long as any copy of the
    /// returned handle.
    pub unsafe fn init(base: *mut u8, len: usize, slots: u32, ring_bytes: u64) -> Option<Region> {
        if !ring_bytes.is_multiple_of(4096) || len < region_len(slots, ring_bytes) || slots == 0 {
            return None;
        }
        let r = Region { base, len };
        r.u64_at(head::SLOTS).store(slots as u64, Ordering::Relaxed);
        r.u64_at(head::RING_BYTES)
            .store(ring_bytes, Ordering::Relaxed);
        r.u64_at(head::MAGIC).store(MAGIC, Ordering::Release);
        Some(r)
    }

    /// A handle to a region someone else laid out; `None` when it is not one.
    ///
    /// # Safety
    /// `base` is valid for `len` bytes, 4096-aligned, and lives as long as any copy of the handle.
    pub unsafe fn attach(base: *mut u8, len: usize) -> Option<Region> {
        if len < HEADER_BYTES {
            return None;
        }
        let r = Region { base, len };
        if r.u64_at(head::MAGIC).load(Ordering::Acquire) != MAGIC {
            return None;
        }
        let (slots, ring) = (r.slot_count(), r.ring_bytes());
        let fits = slots > 0
            && slots <= 1 << 16
            && ring.is_multiple_of(4096)
            && ring > 0
            && region_len(slots, ring) <= len;
        fits.then_some(r)
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: `off` is 8-aligned inside the region (the base is page-aligned), and the region
        // lives as long as `self`.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // SAFETY: as in `u64_at`, for a 4-aligned offset.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    fn i32_at(&self, off: usize) -> &AtomicI32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // SAFETY: as in `u64_at`, for a 4-aligned offset.
        unsafe { &*(self.base.add(off) as *const AtomicI32) }
    }

    pub fn slot_count(&self) -> u32 {
        self.u64_at(head::SLOTS).load(Ordering::Relaxed) as u32
    }

    pub fn ring_bytes(&self) -> u64 {
        self.u64_at(head::RING_BYTES).load(Ordering::Relaxed)
    }

    /// The collector's pid (0 until it has started).
    pub fn collector_pid(&self) -> i32 {
        self.i32_at(head::COLLECTOR_PID).load(Ordering::Acquire)
    }

    pub fn set_collector_pid(&self, pid: i32) {
        // Observable side-effect: producers waiting on a full ring start checking this pid.
        self.i32_at(head::COLLECTOR_PID)
            .store(pid, Ordering::Release);
    }

    /// Whether recording has stopped for the whole run (the collector is gone).
    pub fn disabled(&self) -> bool {
        self.u32_at(head::DISABLED).load(Ordering::Relaxed) != 0
    }

    pub fn disable(&self) {
        // Observable side-effect: every producer of the run stops recording.
        self.u32_at(head::DISABLED).store(1, Ordering::Relaxed);
    }

    /// The collector is about to look at the rings: from now on every record must be stamped
    /// at least `now_ns`.
    pub fn set_clock_floor(&self, now_ns: u64) {
        // Observable side-effect: threads that cannot read the clock stamp from here on.
        self.u64_at(head::COLLECTOR_NOW_NS)
            .fetch_max(now_ns, Ordering::AcqRel);
    }

    /// The collector's clock at its last look at the rings (0 before it started): its
    /// heartbeat.
    pub fn heartbeat_ns(&self) -> u64 {
        self.u64_at(head::COLLECTOR_NOW_NS).load(Ordering::Relaxed)
    }

    /// A timestamp for a thread that cannot read the clock (seccomp strict mode, or
    /// `PR_SET_TSC` forbidding the instruction the vDSO uses): later than every stamp handed out
    /// this way before, later than `last_own` (the thread's previous stamp), and not earlier
    /// than the collector's last look at the rings, which keeps the merge's order exact.
    pub fn stamp_without_clock(&self, last_own: u64) -> u64 {
        let floor = self
            .u64_at(head::COLLECTOR_NOW_NS)
            .load(Ordering::Acquire)
            .max(last_own);
        let last = self.u64_at(head::LAST_STAMP_NS);
        let mut cur = last.load(Ordering::Relaxed);
        loop {
            let next = (cur + 1).max(floor + 1);
            match last.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(now) => cur = now,
            }
        }
    }

    /// The run's clocks at its start: (realtime, monotonic) nanoseconds.
    pub fn start_clocks(&self) -> (u64, u64) {
        (
            self.u64_at(head::START_REALTIME_NS).load(Ordering::Relaxed),
            self.u64_at(head::START_MONO_NS).load(Ordering::Relaxed),
        )
    }

    pub fn set_start_clocks(&self, realtime_ns: u64, mono_ns: u64) {
        self.u64_at(head::START_REALTIME_NS)
            .store(realtime_ns, Ordering::Relaxed);
        self.u64_at(head::START_MONO_NS)
            .store(mono_ns, Ordering::Relaxed);
    }

    fn slot_off(&self, i: u32) -> usize {
        HEADER_BYTES + i as usize * SLOT_BYTES
    }

    /// Slot `i`'s ring (`i` < [`Region::slot_count`]).
    pub fn ring(&self, i: u32) -> Ring {
        let cap = self.ring_bytes();
        Ring {
            region: *self,
            ctl: self.slot_off(i),
            data: rings_offset(self.slot_count()) + i as usize * cap as usize,
            cap,
        }
    }

    /// Claim a free slot for process `pid`; `None` when every slot is taken.
    pub fn claim(&self, pid: i32) -> Option<Ring> {
        for i in 0..self.slot_count() {
            let ring = self.ring(i);
            let state = ring.state_word();
            if state
                .compare_exchange(
                    SLOT_FREE,
                    SLOT_CLAIMING,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            let seq = self.u64_at(head::CLAIMS).fetch_add(1, Ordering::Relaxed) + 1;
            ring.region
                .i32_at(ring.ctl + slot::OWNER)
                .store(pid, Ordering::Relaxed);
            ring.ctl_u64(slot::CLAIM_SEQ).store(seq, Ordering::Relaxed);
            ring.ctl_u64(slot::EXIT_ACK).store(0, Ordering::Relaxed);
            // Observable side-effect: the collector starts reading this slot.
            state.store(SLOT_ACTIVE, Ordering::Release);
            return Some(ring);
        }
        None
    }
}

/// One slot's ring.
#[derive(Clone, Copy)]
pub struct Ring {
    region: Region,
    /// Offset of the slot's control block.
    ctl: usize,
    /// Offset of the ring's bytes.
    data: usize,
    cap: u64,
}

/// What the collector finds at the tail.
pub enum Peek<'r> {
    /// Nothing reserved.
    Empty,
    /// A frame is reserved and not yet committed.
    InFlight,
    /// A committed frame: its bytes, and the position to release up to once read.
    Frame { bytes: &'r [u8], next: u64 },
}

impl Ring {
    fn ctl_u64(&self, off: usize) -> &AtomicU64 {
        self.region.u64_at(self.ctl + off)
    }

    fn state_word(&self) -> &AtomicU32 {
        self.region.u32_at(self.ctl + slot::STATE)
    }

    /// The slot's state: [`SLOT_FREE`] or [`SLOT_ACTIVE`] (or claiming).
    pub fn state(&self) -> u32 {
        self.state_word().load(Ordering::Acquire)
    }

    /// The process that claimed the slot.
    pub fn owner(&self) -> i32 {
        self.region
            .i32_at(self.ctl + slot::OWNER)
            .load(Ordering::Relaxed)
    }

    /// The order in which slots were claimed (a later exec's slot has a higher number).
    pub fn claim_seq(&self) -> u64 {
        self.ctl_u64(slot::CLAIM_SEQ).load(Ordering::Relaxed)
    }

    /// Frames the collector skipped because their writer never committed them.
    pub fn lost(&self) -> u64 {
        self.ctl_u64(slot::LOST).load(Ordering::Relaxed)
    }

    /// The collector has handled this process's Exit record: its packets are written.
    pub fn exit_acked(&self) -> bool {
        self.ctl_u64(slot::EXIT_ACK).load(Ordering::Acquire) != 0
    }

    pub fn ack_exit(&self) {
        // Observable side-effect: the exiting process stops waiting.
        self.ctl_u64(slot::EXIT_ACK).store(1, Ordering::Release);
    }

    /// Hand the slot back for another process (collector only, once drained).
    ///
    /// Head and tail keep their positions: the ring still holds the last owner's frame
    /// headers, each stamped with its absolute position, and only positions that never repeat
    /// keep a new owner's reserved-but-uncommitted frame from looking like an old committed one.
    pub fn free(&self) {
        self.ctl_u64(slot::LOST).store(0, Ordering::Relaxed);
        self.region
            .i32_at(self.ctl + slot::OWNER)
            .store(0, Ordering::Relaxed);
        // Observable side-effect: a new process may claim the slot.
        self.state_word().store(SLOT_FREE, Ordering::Release);
    }

    fn frame_header(&self, pos: u64) -> (&AtomicU32, &AtomicU32, &AtomicU64) {
        let off = self.data + (pos % self.cap) as usize;
        (
            self.region.u32_at(off),
            self.region.u32_at(off + 4),
            self.region.u64_at(off + 8),
        )
    }

    /// Reserve a frame for `len` bytes. While the ring is full, `wait(attempt)` is called and
    /// decides: true to look again, false to give up (the frame is then not written).
    pub fn reserve(&self, len: usize, wait: &mut dyn FnMut(u32) -> bool) -> Option<Reservation> {
        let frame = (FRAME_HEADER + len as u64).next_multiple_of(ALIGN);
        if frame > self.cap {
            return None;
        }
        let head = self.ctl_u64(slot::HEAD);
        let tail = self.ctl_u64(slot::TAIL);
        let mut attempt = 0u32;
        let mut pos = head.load(Ordering::Relaxed);
        loop {
            let room = self.cap - pos % self.cap;
            let pad = if room < frame { room } else { 0 };
            let end = pos + pad + frame;
            // A stale `pos` may lie behind the tail already; the CAS below then refreshes it.
            if end.saturating_sub(tail.load(Ordering::Acquire)) > self.cap {
                if !wait(attempt) {
                    return None;
                }
                attempt = attempt.saturating_add(1);
                pos = head.load(Ordering::Relaxed);
                continue;
            }
            match head.compare_exchange_weak(pos, end, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    if pad > 0 {
                        let (state, plen, ppos) = self.frame_header(pos);
                        plen.store((pad - FRAME_HEADER) as u32, Ordering::Relaxed);
                        ppos.store(pos, Ordering::Relaxed);
                        // Observable side-effect: the collector skips to the ring's start.
                        state.store(FRAME_PADDING, Ordering::Release);
                    }
                    let at = pos + pad;
                    return Some(Reservation {
                        ring: *self,
                        pos: at,
                        len,
                        written: 0,
                    });
                }
                Err(now) => pos = now,
            }
        }
    }

    /// The frame at the tail, if committed.
    pub fn peek(&self) -> Peek<'_> {
        let tail = self.ctl_u64(slot::TAIL).load(Ordering::Relaxed);
        let head = self.ctl_u64(slot::HEAD).load(Ordering::Acquire);
        if head == tail {
            return Peek::Empty;
        }
        let (state, len, pos) = self.frame_header(tail);
        let st = state.load(Ordering::Acquire);
        if pos.load(Ordering::Relaxed) != tail {
            return Peek::InFlight;
        }
        let len = (len.load(Ordering::Relaxed) as u64).min(self.cap - FRAME_HEADER);
        let next = tail + (FRAME_HEADER + len).next_multiple_of(ALIGN);
        match st {
            FRAME_COMMITTED => {
                let off = self.data + (tail % self.cap) as usize + FRAME_HEADER as usize;
                let len = (len as usize).min(self.data + self.cap as usize - off);
                // SAFETY: a committed frame's bytes lie inside the ring (reserve never lets a
                // frame wrap; the length is clamped to the ring anyway) and no producer writes
                // them until the tail passes them.
                let bytes = unsafe { std::slice::from_raw_parts(self.region.base.add(off), len) };
                Peek::Frame { bytes, next }
            }
            FRAME_PADDING => {
                self.release(next);
                self.peek()
            }
            _ => Peek::InFlight,
        }
    }

    /// The collector is done with everything before `pos`.
    pub fn release(&self, pos: u64) {
        // Observable side-effect: producers waiting on a full ring may reserve this space.
        self.ctl_u64(slot::TAIL).store(pos, Ordering::Release);
    }

    /// Bytes reserved and not yet released.
    pub fn pending(&self) -> u64 {
        let head = self.ctl_u64(slot::HEAD).load(Ordering::Acquire);
        head.saturating_sub(self.ctl_u64(slot::TAIL).load(Ordering::Relaxed))
    }

    /// The frame at the tail will never be committed (its writer died, or is stuck): move the
    /// tail to the next frame that is whole, or to the head. Returns the bytes skipped.
    pub fn skip_stuck(&self) -> u64 {
        let tail = self.ctl_u64(slot::TAIL).load(Ordering::Relaxed);
        let head = self.ctl_u64(slot::HEAD).load(Ordering::Acquire);
        let mut p = tail + ALIGN;
        while p < head {
            let (state, _, pos) = self.frame_header(p);
            let st = state.load(Ordering::Acquire);
            if (st == FRAME_COMMITTED || st == FRAME_PADDING) && pos.load(Ordering::Relaxed) == p {
                break;
            }
            p += ALIGN;
        }
        let p = p.min(head);
        self.ctl_u64(slot::LOST).fetch_add(1, Ordering::Relaxed);
        self.release(p);
        p - tail
    }
}

/// Space reserved in a ring, written in order and then committed.
pub struct Reservation {
    ring: Ring,
    pos: u64,
    len: usize,
    written: usize,
}

impl Reservation {
    /// Append `bytes` (never beyond the reserved length; the excess is dropped).
    pub fn write(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.len - self.written);
        let off = self.ring.data
            + (self.pos % self.ring.cap) as usize
            + FRAME_HEADER as usize
            + self.written;
        // SAFETY: the reservation owns [pos, pos + frame) of the ring exclusively until commit,
        // and `written + n` stays within its `len` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ring.region.base.add(off), n);
        }
        self.written += n;
    }

    /// The reserved bytes not written yet, for a caller that fills them in place (the tracer's
    /// `process_vm_readv` reads a payload straight into them): one slice, because `reserve`
    /// never lets a frame wrap (it pads to the ring's end and starts the frame at its start).
    /// Its bytes are whatever an earlier lap left there; [`Reservation::advance`] says how many
    /// the caller wrote.
    pub fn unwritten(&mut self) -> &mut [u8] {
        let off = self.ring.data
            + (self.pos % self.ring.cap) as usize
            + FRAME_HEADER as usize
            + self.written;
        // SAFETY: the reservation owns [pos, pos + frame) of the ring exclusively until commit
        // (the collector reads no byte of it before the commit's release store), the frame lies
        // inside the ring without wrapping, and `written` never exceeds `len`. The borrow of
        // `self` keeps a second slice from being handed out meanwhile.
        unsafe {
            std::slice::from_raw_parts_mut(self.ring.region.base.add(off), self.len - self.written)
        }
    }

    /// The next `n` bytes of [`Reservation::unwritten`] are written (clamped to the rest).
    pub fn advance(&mut self, n: usize) {
        self.written += n.min(self.len - self.written);
    }

    /// Publish the frame to the collector.
    pub fn commit(self) {
        let (state, len, pos) = self.ring.frame_header(self.pos);
        len.store(self.len as u32, Ordering::Relaxed);
        pos.store(self.pos, Ordering::Relaxed);
        // Observable side-effect: the collector may read the frame from now on.
        state.store(FRAME_COMMITTED, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zeroed, page-aligned heap region standing in for the shared mapping.
    struct Mem {
        ptr: *mut u8,
        layout: std::alloc::Layout,
    }

    impl Mem {
        fn new(len: usize) -> Mem {
            let layout = std::alloc::Layout::from_size_align(len, 4096).expect("layout");
            // SAFETY: the layout has a non-zero size.
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!ptr.is_null());
            Mem { ptr, layout }
        }
    }

    impl Drop for Mem {
        fn drop(&mut self) {
            // SAFETY: allocated above with this layout.
            unsafe { std::alloc::dealloc(self.ptr, self.layout) }
        }
    }

    fn region(mem: &Mem, slots: u32, ring: u64) -> Region {
        // SAFETY: the memory is zeroed, aligned, large enough, and outlives the test.
        unsafe { Region::init(mem.ptr, mem.layout.size(), slots, ring) }.expect("init")
    }

    fn write(ring: &Ring, bytes: &[u8]) -> bool {
        match ring.reserve(bytes.len(), &mut |_| false) {
            Some(mut r) => {
                r.write(bytes);
                r.commit();
                true
            }
            None => false,
        }
    }

    fn read(ring: &Ring) -> Option<Vec<u8>> {
        match ring.peek() {
            Peek::Frame { bytes, next } => {
                let v = bytes.to_vec();
                ring.release(next);
                Some(v)
            }
            _ => None,
        }
    }

    #[test]
    fn frames_come_out_in_order_across_laps() {
        let mem = Mem::new(region_len(2, 4096));
        let r = region(&mem, 2, 4096);
        let ring = r.claim(42).expect("slot");
        assert_eq!(ring.owner(), 42);
        for i in 0..1000u32 {
            let msg = vec![i as u8; (i % 300) as usize];
            assert!(write(&ring, &msg), "frame {i}");
            assert_eq!(read(&ring).as_deref(), Some(&msg[..]), "frame {i}");
        }
        assert!(matches!(ring.peek(), Peek::Empty));
    }

    #[test]
    fn a_full_ring_asks_to_wait_and_a_large_frame_is_refused() {
        let mem = Mem::new(region_len(1, 4096));
        let r = region(&mem, 1, 4096);
        let ring = r.claim(1).expect("slot");
        assert!(ring.reserve(5000, &mut |_| false).is_none());
        let mut n = 0;
        while write(&ring, &[7u8; 100]) {
            n += 1;
        }
        assert_eq!(n, 4096 / 128);
        let mut waited = 0;
        assert!(ring
            .reserve(100, &mut |_| {
                waited += 1;
                waited < 3
            })
            .is_none());
        assert_eq!(waited, 3);
        assert!(read(&ring).is_some());
        assert!(write(&ring, &[8u8; 100]));
    }

    #[test]
    fn a_frame_filled_in_place_is_one_slice_even_where_the_ring_wraps() {
        let mem = Mem::new(region_len(1, 4096));
        let r = region(&mem, 1, 4096);
        let ring = r.claim(1).expect("slot");
        // 3,008 of 4,096 bytes used: a frame of 1,100 no longer fits before the ring's end.
        for _ in 0..47 {
            assert!(write(&ring, &[1u8; 48]));
            assert!(read(&ring).is_some());
        }
        let mut res = ring
            .reserve(1100, &mut |_| false)
            .expect("room after padding");
        res.write(b"head");
        let rest = res.unwritten();
        assert_eq!(
            rest.len(),
            1096,
            "the whole rest of the frame, in one slice"
        );
        let start = mem.ptr as usize + rings_offset(1);
        let at = rest.as_ptr() as usize - start;
        assert_eq!(
            at,
            16 + 4,
            "the frame starts at the ring's start, after its header"
        );
        for (i, b) in rest.iter_mut().enumerate() {
            *b = i as u8;
        }
        res.advance(5000);
        assert!(
            res.unwritten().is_empty(),
            "advance stops at the reserved length"
        );
        res.commit();
        let want: Vec<u8> = b"head"
            .iter()
            .copied()
            .chain((0..1096).map(|i| i as u8))
            .collect();
        assert_eq!(
            read(&ring),
            Some(want),
            "the padding is skipped, the frame whole"
        );
        assert!(matches!(ring.peek(), Peek::Empty));
    }

    #[test]
    fn an_uncommitted_frame_holds_back_the_ones_after_it_until_skipped() {
        let mem = Mem::new(region_len(1, 4096));
        let r = region(&mem, 1, 4096);
        let ring = r.claim(1).expect("slot");
        let stuck = ring.reserve(40, &mut |_| false).expect("room");
        assert!(write(&ring, b"after"));
        assert!(matches!(ring.peek(), Peek::InFlight));
        assert_eq!(ring.skip_stuck(), 64);
        assert_eq!(ring.lost(), 1);
        assert_eq!(read(&ring).as_deref(), Some(&b"after"[..]));
        let _never_committed = stuck;
    }

    #[test]
    fn slots_are_claimed_once_and_freed_for_reuse() {
        let mem = Mem::new(region_len(2, 4096));
        let r = region(&mem, 2, 4096);
        let a = r.claim(10).expect("a");
        let b = r.claim(11).expect("b");
        assert!(r.claim(12).is_none());
        assert!(b.claim_seq() > a.claim_seq());
        write(&a, b"x");
        read(&a);
        a.free();
        let c = r.claim(12).expect("reused");
        assert_eq!(c.owner(), 12);
        assert!(matches!(c.peek(), Peek::Empty));
    }

    #[test]
    fn a_reused_slot_never_shows_the_last_owners_frames() {
        let mem = Mem::new(region_len(1, 4096));
        let r = region(&mem, 1, 4096);
        let a = r.claim(10).expect("a");
        write(&a, b"old");
        assert_eq!(read(&a).as_deref(), Some(&b"old"[..]));
        a.free();
        let b = r.claim(11).expect("reused");
        // Reserved, not yet committed: the frame header at the tail is still the old owner's.
        let res = b.reserve(3, &mut |_| false).expect("room");
        assert!(matches!(b.peek(), Peek::InFlight));
        let _ = res;
    }

    #[test]
    fn stamps_without_a_clock_only_grow_and_respect_the_floor() {
        let mem = Mem::new(region_len(1, 4096));
        let r = region(&mem, 1, 4096);
        let a = r.stamp_without_clock(0);
        let b = r.stamp_without_clock(0);
        assert!(b > a);
        r.set_clock_floor(1_000);
        assert_eq!(r.stamp_without_clock(0), 1_001);
        assert_eq!(r.stamp_without_clock(5_000), 5_001);
        r.set_clock_floor(10);
        assert_eq!(r.stamp_without_clock(0), 5_002, "the floor never goes back");
    }

    #[test]
    fn attach_checks_the_layout() {
        let mem = Mem::new(region_len(2, 8192));
        region(&mem, 2, 8192);
        // SAFETY: same memory as above.
        let again = unsafe { Region::attach(mem.ptr, mem.layout.size()) }.expect("attach");
        assert_eq!((again.slot_count(), again.ring_bytes()), (2, 8192));
        // SAFETY: a shorter view of the same memory.
        assert!(unsafe { Region::attach(mem.ptr, 5000) }.is_none());
    }

    #[test]
    fn many_threads_write_whole_frames() {
        const THREADS: u32 = 4;
        const EACH: u32 = 20_000;
        let mem = Mem::new(region_len(1, 16384));
        let r = region(&mem, 1, 16384);
        let ring = r.claim(1).expect("slot");
        let consumer = std::thread::spawn(move || {
            let mut next = [0u32; THREADS as usize];
            let mut got = 0;
            while got < THREADS * EACH {
                match read(&ring) {
                    Some(v) => {
                        let t = v[0] as usize;
                        let n = u32::from_ne_bytes([v[1], v[2], v[3], v[4]]);
                        assert_eq!(n, next[t], "thread {t} in order");
                        assert!(v[5..].iter().all(|&b| b == t as u8), "whole frame");
                        next[t] += 1;
                        got += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        });
        let producers: Vec<_> = (0..THREADS)
            .map(|t| {
                std::thread::spawn(move || {
                    for n in 0..EACH {
                        let mut msg = vec![t as u8; 5 + (n % 50) as usize];
                        msg[1..5].copy_from_slice(&n.to_ne_bytes());
                        let mut r = ring
                            .reserve(msg.len(), &mut |_| {
                                std::thread::yield_now();
                                true
                            })
                            .expect("waits until room");
                        r.write(&msg);
                        r.commit();
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().expect("producer");
        }
        consumer.join().expect("consumer");
    }
}
