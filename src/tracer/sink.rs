//! Writing the tracer's records into the rings the collector reads: one ring per traced
//! process, claimed by the tracer under that process's pid, so the collector files its records
//! exactly as if the process had written them itself.

use std::time::Duration;

use crate::record::{Record, HEADER_LEN};
use crate::ring::Ring;

/// A payload larger than this is recorded as several consecutive records (as the recorder does).
const MAX_CHUNK: usize = 1 << 20;

/// Append `rec` (with its `data`) to `ring`, stamped now. The tracee is stopped meanwhile, so
/// waiting for room costs the program time but never a record.
pub fn emit(ring: Ring, rec: &Record) {
    let mut r = *rec;
    let data = rec.data;
    if data.len() <= MAX_CHUNK {
        write(ring, &mut r, data);
        return;
    }
    for chunk in data.chunks(MAX_CHUNK) {
        r.ret = chunk.len() as i64;
        write(ring, &mut r, chunk);
    }
}

fn write(ring: Ring, r: &mut Record, data: &[u8]) {
    let mut wait = |attempt: u32| {
        // Ten seconds without room: the collector has stopped reading; the record goes.
        if attempt > 100_000 {
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
        true
    };
    let Some(mut res) = ring.reserve(HEADER_LEN + data.len(), &mut wait) else {
        return;
    };
    // Stamped after the reservation, as the collector's merge requires (see recorder::start).
    r.ts_ns = crate::recorder::now_ns();
    let mut head = [0u8; HEADER_LEN];
    r.encode_header(data.len(), &mut head);
    res.write(&head);
    res.write(data);
    res.commit();
}
