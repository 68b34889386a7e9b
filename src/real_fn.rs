//! Real libc (or libssl, libnspr) functions, resolved with `dlsym(RTLD_NEXT, …)` once and cached.

use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// What the cache holds once a symbol is known to be missing: address 1 (`c_void`'s alignment),
/// where no function lives.
const ABSENT: *mut c_void = ptr::dangling_mut::<c_void>();

/// A lazily resolved next definition of a symbol.
///
/// The cache is an `AtomicPtr`: a race between two first calls resolves twice to the same address,
/// which is harmless, so Relaxed loads are not enough only because the pointer must be published
/// after `dlsym`'s writes; Acquire/Release pairs them. A symbol found missing is remembered too
/// ([`ABSENT`]): each call would otherwise search every loaded object again, under the loader's
/// lock. Missing is final when the search covered where the symbol can live: the objects after
/// ours for a plain symbol (libc's functions, loaded before us), or a library of `libs` that is
/// loaded and lacks it (an older version). While none of `libs` is loaded the symbol is not
/// remembered as missing: the program may still load one with dlopen (Python's `_ssl`).
pub struct RealFn {
    name: &'static CStr,
    /// Libraries to look in when RTLD_NEXT finds nothing: one loaded later with dlopen and
    /// RTLD_LOCAL (Python's `_ssl` loads libssl so) is not in the global scope RTLD_NEXT searches.
    libs: &'static [&'static CStr],
    ptr: AtomicPtr<c_void>,
}

/// The OpenSSL libraries whose exports have the same names.
pub const LIBSSL: &[&CStr] = &[c"libssl.so.3", c"libssl.so.1.1", c"libssl.so"];
/// OpenSSL's libcrypto (BIOs).
pub const LIBCRYPTO: &[&CStr] = &[c"libcrypto.so.3", c"libcrypto.so.1.1", c"libcrypto.so"];
/// NSPR.
pub const LIBNSPR: &[&CStr] = &[c"libnspr4.so"];
/// GnuTLS 3.
pub const LIBGNUTLS: &[&CStr] = &[c"libgnutls.so.30"];

impl RealFn {
    /// A symbol to resolve on first use.
    pub const fn new(name: &'static CStr) -> Self {
        Self {
            name,
            libs: &[],
            ptr: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// A symbol that may live in one of `libs`, already loaded by the program.
    pub const fn in_libs(name: &'static CStr, libs: &'static [&'static CStr]) -> Self {
        Self {
            name,
            libs,
            ptr: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The next definition's address, or null when no later object defines it.
    #[inline]
    pub fn get(&self) -> *mut c_void {
        let p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            self.resolve()
        } else if p == ABSENT {
            ptr::null_mut()
        } else {
            p
        }
    }

    #[cold]
    fn resolve(&self) -> *mut c_void {
        // SAFETY: `name` is a NUL-terminated string that outlives the call; RTLD_NEXT is valid
        // from a shared object.
        let mut p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        // Where the symbol can live was searched: nothing may be loaded later that has it.
        let mut final_answer = self.libs.is_empty();
        for lib in self.libs {
            if !p.is_null() {
                break;
            }
            // SAFETY: RTLD_NOLOAD only returns a handle to a library already loaded; it never
            // runs a new library's constructors.
            let h = unsafe { libc::dlopen(lib.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
            if !h.is_null() {
                final_answer = true;
                // SAFETY: `h` is a valid handle and `name` NUL-terminated.
                p = unsafe { libc::dlsym(h, self.name.as_ptr()) };
            }
        }
        if !p.is_null() {
            self.ptr.store(p, Ordering::Release);
        } else if final_answer {
            // Release as above; a racing first call that stores the same answer is harmless.
            self.ptr.store(ABSENT, Ordering::Release);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing symbol is looked for once; while its library is not loaded, it is looked for
    /// again; a symbol found is found at once.
    #[test]
    fn missing_is_remembered_when_final() {
        let plain = RealFn::new(c"netintercept_no_such_symbol");
        assert!(plain.get().is_null());
        assert_eq!(plain.ptr.load(Ordering::Acquire), ABSENT, "remembered");
        assert!(plain.get().is_null());
        let in_loaded = RealFn::in_libs(c"netintercept_no_such_symbol", &[c"libc.so.6"]);
        assert!(in_loaded.get().is_null());
        assert_eq!(
            in_loaded.ptr.load(Ordering::Acquire),
            ABSENT,
            "libc is loaded"
        );
        let not_loaded = RealFn::in_libs(
            c"netintercept_no_such_symbol",
            &[c"libnetintercept-none.so"],
        );
        assert!(not_loaded.get().is_null());
        assert!(
            not_loaded.ptr.load(Ordering::Acquire).is_null(),
            "its library may be loaded later"
        );
        let found = RealFn::new(c"getpid");
        let p = found.get();
        assert!(!p.is_null() && p != ABSENT);
        assert_eq!(found.get(), p);
    }
}
