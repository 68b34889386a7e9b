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
        } else {
            p
        }
    }

    #[cold]
    fn resolve(&self) -> *mut c_void {
        // SAFETY: `name` is a NUL-terminated string that outlives the call; RTLD_NEXT is valid
        // from a shared object.
        let mut p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        for lib in self.libs {
            if !p.is_null() {
                break;
            }
            // SAFETY: RTLD_NOLOAD only returns a handle to a library already loaded; it never
            // runs a new library's constructors.
            let h = unsafe { libc::dlopen(lib.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
            if !h.is_null() {
                // SAFETY: `h` is a valid handle and `name` NUL-terminated.
                p = unsafe { libc::dlsym(h, self.name.as_ptr()) };
            }
        }
        if !p.is_null() {
            self.ptr.store(p, Ordering::Release);
        }
        p
    }
}
