//! The program's own key-log callbacks, by TLS object, for the hooks that put theirs in its
//! place: ours records each key line, then calls the program's, so the program's works exactly
//! as before (chained, never replaced).
//!
//! OpenSSL keeps one callback per `SSL_CTX` and GnuTLS one function per session, and neither
//! passes the callback anything of ours, so the program's is found here by the object's address.
//! Hooks take no lock and allocate nothing: a fixed table in our own memory, open addressing, a
//! slot claimed by a compare-and-swap on its key. A slot is never given back, only its value
//! changed: the allocator hands a freed object's address to the next object, whose creation
//! resets the value ([`Callbacks::reset`]), so the addresses held are the live objects' plus a
//! few reused ones. Only objects whose program set a callback of its own take a slot. When the
//! table is full, [`Callbacks::set`] says so and the hook installs the program's callback
//! itself: that object's keys are missed, the program is not.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Slots per table: far more objects with a callback of their own than any program keeps.
const SLOTS: usize = 1024;

/// The program's callbacks, by object address. Values are the hook's business (a function
/// address, or a marker); 0 means none was set.
pub struct Callbacks {
    slots: [Slot; SLOTS],
}

struct Slot {
    /// The object's address; 0 while the slot is free.
    key: AtomicUsize,
    value: AtomicUsize,
}

impl Callbacks {
    /// An empty table (for a `static`).
    pub const fn new() -> Self {
        Callbacks {
            slots: [const {
                Slot {
                    key: AtomicUsize::new(0),
                    value: AtomicUsize::new(0),
                }
            }; SLOTS],
        }
    }

    /// Remember `value` for `object`; false when there is no room (or `object` is null).
    pub fn set(&self, object: usize, value: usize) -> bool {
        if object == 0 {
            return false;
        }
        for slot in self.probe(object) {
            // Acquire pairs with the claim below: a slot seen holding `object` is ours to write.
            let key = slot.key.load(Ordering::Acquire);
            let mine = key == object
                || key == 0
                    && match slot.key.compare_exchange(
                        0,
                        object,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => true,
                        // Another thread claimed it meanwhile, perhaps for the same object.
                        Err(now) => now == object,
                    };
            if mine {
                // Release: a thread that sees this value also sees what the program's callback
                // needs (it was set up before the program handed it over).
                slot.value.store(value, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// The value set for `object`, or 0.
    pub fn get(&self, object: usize) -> usize {
        if object == 0 {
            return 0;
        }
        for slot in self.probe(object) {
            match slot.key.load(Ordering::Acquire) {
                0 => return 0,
                key if key == object => return slot.value.load(Ordering::Acquire),
                _ => {}
            }
        }
        0
    }

    /// `object` is new (just created at an address that may have held an old one): no callback.
    pub fn reset(&self, object: usize) {
        if object == 0 {
            return;
        }
        for slot in self.probe(object) {
            match slot.key.load(Ordering::Acquire) {
                0 => return,
                key if key == object => return slot.value.store(0, Ordering::Release),
                _ => {}
            }
        }
    }

    /// Every slot, starting at `object`'s own (linear probing, wrapping around once).
    fn probe(&self, object: usize) -> impl Iterator<Item = &Slot> {
        // Allocations are 16-byte aligned: the low bits say nothing; Fibonacci hashing spreads
        // the rest.
        let start = ((object >> 4) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54;
        let start = start as usize % SLOTS;
        self.slots[start..].iter().chain(&self.slots[..start])
    }
}

impl Default for Callbacks {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_reset() {
        let t = Callbacks::new();
        assert_eq!(t.get(0x1000), 0);
        assert!(t.set(0x1000, 7));
        assert!(t.set(0x2000, 8));
        assert_eq!((t.get(0x1000), t.get(0x2000), t.get(0x3000)), (7, 8, 0));
        assert!(t.set(0x1000, 9), "a new value for the same object");
        assert_eq!(t.get(0x1000), 9);
        t.reset(0x1000);
        assert_eq!((t.get(0x1000), t.get(0x2000)), (0, 8));
        t.reset(0x3000);
        assert!(!t.set(0, 1), "no null object");
    }

    /// A full table refuses new objects but keeps serving and updating the ones it holds.
    #[test]
    fn full_table_says_so() {
        let t = Callbacks::new();
        for i in 1..=SLOTS {
            assert!(t.set(i << 4, i));
        }
        assert!(!t.set((SLOTS + 1) << 4, 1));
        assert_eq!(t.get(5 << 4), 5);
        assert!(t.set(5 << 4, 50));
        assert_eq!(t.get(5 << 4), 50);
        assert_eq!(t.get((SLOTS + 1) << 4), 0);
    }

    /// Threads setting callbacks for their own objects at once each find theirs again.
    #[test]
    fn concurrent_claims() {
        let t = Callbacks::new();
        std::thread::scope(|s| {
            for th in 0..4usize {
                let t = &t;
                s.spawn(move || {
                    for i in 0..200usize {
                        let object = (th * 1000 + i + 1) << 4;
                        assert!(t.set(object, object + 1));
                    }
                });
            }
        });
        for th in 0..4usize {
            for i in 0..200usize {
                let object = (th * 1000 + i + 1) << 4;
                assert_eq!(t.get(object), object + 1);
            }
        }
    }
}
