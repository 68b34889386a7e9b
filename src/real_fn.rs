//! Real libc (or libssl, libnspr) functions, resolved with `dlsym(RTLD_NEXT, …)` once and cached.

use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// A lazily resolved next definition of a symbol.
///
/// The cache is an `AtomicPtr`: a race between two first calls resolves twice to the same address,
/// which is harmless, so Relaxed loads are not enough only because the pointer must be published
/// after `dlsym`'s writes; Acquire/Release pairs them.
pub struct RealFn {
    name: &'static CStr,
    ptr: AtomicPtr<c_void>,
}

impl RealFn {
    /// A symbol to resolve on first use.
    pub const fn new(name: &'static CStr) -> Self {
        Self {
            name,
            ptr: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The next definition's address, or null when no later object defines it.
    #[inline]
    pub fn get(&self) -> *mut c_void {
        let p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            self.resolve()
        } else {
            p
        }
    }

    #[cold]
    fn resolve(&self) -> *mut c_void {
        // SAFETY: `name` is a NUL-terminated string that outlives the call; RTLD_NEXT is valid
        // from a shared object.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        if !p.is_null() {
            self.ptr.store(p, Ordering::Release);
        }
        p
    }
}
