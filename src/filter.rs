//! `NETINTERCEPT_FILTER`: a tcpdump/libpcap filter run on every synthesized packet.
//!
//! The compiler and matcher live in `libnetintercept_pcapfilter.so` (crate `pcapfilter`), loaded
//! with `dlopen` from beside this library only when a filter is set: libpcap and the dozen
//! libraries it needs are then mapped into the traced program, and never otherwise. The filter is
//! compiled once per process, at load (before any sandbox closes the file system, and so that a
//! bad expression is reported before the program runs). A bad expression, or a filter library that
//! cannot be loaded, is reported once and then nothing is written: a user who asked for less never
//! gets more.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;

/// The filter library's file name, installed beside `libnetintercept.so`.
pub const LIBRARY: &str = "libnetintercept_pcapfilter.so";

type CompileFn = unsafe extern "C" fn(*const c_char, *mut u8, usize) -> *const c_void;
type MatchesFn = unsafe extern "C" fn(*const c_void, *const u8, usize) -> c_int;

/// A compiled filter inside the loaded filter library.
pub struct Filter {
    matches: MatchesFn,
    program: *const c_void,
}

// SAFETY: the program is never changed after compilation nor freed, and matching only reads it
// (pcapfilter's `Filter` is `Sync` for the same reason).
unsafe impl Sync for Filter {}
// SAFETY: as above; nothing is tied to the compiling thread.
unsafe impl Send for Filter {}

impl Filter {
    /// Compile `expr` with the filter library in `dir`; libpcap's message, or why the library
    /// could not be loaded, on error.
    pub fn compile_with(dir: &Path, expr: &str) -> Result<Filter, String> {
        let (compile, matches) = load(&dir.join(LIBRARY))?;
        let c_expr = CString::new(expr).map_err(|_| "NUL byte in the expression".to_string())?;
        let mut err = [0u8; 512];
        // SAFETY: `compile` has pcapfilter's signature; `c_expr` is a C string and `err` holds
        // the length passed.
        let program = unsafe { compile(c_expr.as_ptr(), err.as_mut_ptr(), err.len()) };
        if program.is_null() {
            let msg = CStr::from_bytes_until_nul(&err)
                .map(|m| m.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(msg);
        }
        Ok(Filter { matches, program })
    }

    /// Whether `packet` (raw IP bytes) passes.
    pub fn matches(&self, packet: &[u8]) -> bool {
        // SAFETY: `program` came from the same library's compile; `packet` is a live slice.
        unsafe { (self.matches)(self.program, packet.as_ptr(), packet.len()) != 0 }
    }
}

/// dlopen the filter library at `path` and find its two functions.
fn load(path: &Path) -> Result<(CompileFn, MatchesFn), String> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| "NUL byte in the library path".to_string())?;
    // SAFETY: a valid C string; RTLD_LOCAL keeps libpcap's symbols out of the program's scope.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("cannot load {}: {}", path.display(), dl_error()));
    }
    let sym = |name: &CStr| {
        // SAFETY: a live handle and a C string.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        (!p.is_null())
            .then_some(p)
            .ok_or_else(|| format!("{} lacks {}", path.display(), name.to_string_lossy()))
    };
    let compile = sym(c"netintercept_filter_compile")?;
    let matches = sym(c"netintercept_filter_matches")?;
    // SAFETY: pcapfilter defines both symbols with exactly these signatures.
    unsafe {
        Ok((
            std::mem::transmute::<*mut c_void, CompileFn>(compile),
            std::mem::transmute::<*mut c_void, MatchesFn>(matches),
        ))
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns null or a C string valid until the next dl call on this thread.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        return "unknown error".into();
    }
    // SAFETY: non-null, per above.
    unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
}
