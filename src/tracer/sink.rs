//! Writing the tracer's records into the rings the collector reads: one ring per traced
//! process, claimed by the tracer under that process's pid, so the collector files its records
//! exactly as if the process had written them itself.

use std::time::Duration;

use super::payload::Payload;
use crate::record::{Record, HEADER_LEN};
use crate::ring::Ring;

/// A payload larger than this is recorded as several consecutive records (as the recorder does).
const MAX_CHUNK: usize = 1 << 20;

/// Append `rec` to `ring`, stamped now, with its payload `data` copied straight from where it
/// is into the ring. The tracee is stopped meanwhile, so waiting for room costs the program time
/// but never a record.
pub fn emit(ring: Ring, rec: &Record, data: &Payload) {
    let mut r = *rec;
    let total = data.len(rec);
    if total <= MAX_CHUNK {
        write(ring, &mut r, data, 0, total);
        return;
    }
    let mut off = 0;
    while off < total {
        let n = (total - off).min(MAX_CHUNK);
        r.ret = n as i64;
        write(ring, &mut r, data, off, n);
        off += n;
    }
}

/// One record of bytes `off..off + n` of `data`.
fn write(ring: Ring, r: &mut Record, data: &Payload, off: usize, n: usize) {
    let mut wait = |attempt: u32| {
        // Ten seconds without room: the collector has stopped reading; the record goes.
        if attempt > 100_000 {
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
        true
    };
    let Some(mut res) = ring.reserve(HEADER_LEN + n, &mut wait) else {
        return;
    };
    // Stamped after the reservation, as the collector's merge requires (see recorder::start).
    r.ts_ns = crate::recorder::now_ns();
    let mut head = [0u8; HEADER_LEN];
    r.encode_header(n, &mut head);
    res.write(&head);
    // Every byte of the frame is written: what cannot be read is zeros (see `payload`).
    data.fill(r, off, res.unwritten());
    res.advance(n);
    res.commit();
}
