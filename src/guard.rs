//! Which intercepted call this thread is in, for the records' `call` field.
//!
//! A plain `Cell` read with `try_with`: on a thread whose thread-locals are torn down the answer
//! is simply "none". The recorder itself needs no reentrancy guard: it calls no hooked function
//! and holds no lock, so a signal handler's hook that interrupts it just reserves after it.

use std::cell::Cell;

use crate::record::{call_id as id_of, CALLS};

thread_local! {
    static CALL: Cell<u16> = const { Cell::new(0) };
}

/// Note the intercepted call this thread is in, by number.
#[inline]
pub fn set_call_id(id: u16) {
    let _ = CALL.try_with(|c| c.set(id));
}

/// Note the intercepted call this thread is in, by name (TLS hooks).
pub fn set_call(name: &str) {
    set_call_id(id_of(name));
}

/// The number of the intercepted call this thread is in, or 0.
pub fn call_id() -> u16 {
    CALL.try_with(Cell::get).unwrap_or(0)
}

/// The name of the intercepted call this thread is in, or "".
pub fn call() -> &'static str {
    CALLS.get(call_id() as usize).copied().unwrap_or("")
}
