//! Creating a run's shared region, and starting a detached collector for a program traced with
//! plain `LD_PRELOAD` (the CLI is its own collector).

use std::ffi::{CStr, CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::layout;
use crate::recorder::{RING_BYTES, SLOTS};
use crate::ring::{region_len, Region};
use crate::sys;

/// Create a fresh region file (0600, never through a symlink) and lay it out. Returns its path
/// and a mapping of it.
pub fn create_region() -> Result<(PathBuf, Region), String> {
    let dir = ["/dev/shm", "/tmp"]
        .into_iter()
        .map(PathBuf::from)
        .find(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let len = region_len(SLOTS, RING_BYTES);
    for attempt in 0..16u32 {
        let path = dir.join(format!(
            "netintercept-{}-{}-{attempt}",
            sys::getpid(),
            sys::now().as_nanos() % 1_000_000_000
        ));
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| "bad path")?;
        let fd = match sys::open(
            &c,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        ) {
            Ok(fd) => fd,
            Err(libc::EEXIST) => continue,
            Err(e) => {
                return Err(format!(
                    "cannot create the run's region in {}: {}",
                    dir.display(),
                    sys::strerror(e)
                ))
            }
        };
        let mapped = sys::ftruncate(fd, len as i64)
            .ok()
            .and_then(|()| map_shared(fd, len));
        sys::close(fd);
        let Some(base) = mapped else {
            let _ = std::fs::remove_file(&path);
            return Err("cannot map the run's region".into());
        };
        // SAFETY: a fresh file maps as zeroes, page-aligned, `len` bytes, never unmapped.
        let region = unsafe { Region::init(base, len, SLOTS, RING_BYTES) }.ok_or("bad layout")?;
        let mono = crate::recorder::now_ns();
        region.set_start_clocks(sys::now().as_nanos() as u64, mono);
        return Ok((path, region));
    }
    Err("cannot create the run's region: no free name".into())
}

/// Map an existing region file, shared, whole; its descriptor is closed at once. Returns the
/// mapping's address and length (the recorder keeps them; the collector attaches).
pub fn map_region_file(path: &CStr) -> Result<(*mut u8, usize), String> {
    let fd = sys::open(path, libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW, 0)
        .map_err(|e| format!("cannot open the run's region: {}", sys::strerror(e)))?;
    let len = sys::fstat(fd).map(|st| st.st_size as usize).unwrap_or(0);
    let mapped = (len > 0).then(|| map_shared(fd, len)).flatten();
    sys::close(fd);
    let base = mapped.ok_or("cannot map the run's region")?;
    // SAFETY: just mapped, `len` bytes, never unmapped.
    if unsafe { Region::attach(base, len) }.is_none() {
        return Err("the run's region has another layout (mixed versions?)".into());
    }
    Ok((base, len))
}

/// Map an existing region file (the collector side).
pub fn map_region(path: &Path) -> Result<Region, String> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| "bad region path")?;
    let (base, len) = map_region_file(&c)?;
    // SAFETY: `map_region_file` mapped `len` bytes at `base` and checked the layout; the
    // mapping is never unmapped.
    unsafe { Region::attach(base, len) }.ok_or_else(|| "not a netintercept region".into())
}

/// `mmap` the first `len` bytes of `fd`, shared, read-write.
fn map_shared(fd: i32, len: usize) -> Option<*mut u8> {
    // SAFETY: mapping a regular file the caller opened read-write, shared; the kernel checks
    // the arguments.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as *mut u8)
}

/// The directory this library (or program) was loaded from.
pub fn own_dir() -> Option<PathBuf> {
    // SAFETY: an all-zero Dl_info (null pointers) is valid.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr reads the address of one of our own functions and fills `info`.
    let found = unsafe { libc::dladdr(own_dir as *const libc::c_void, &mut info) } != 0;
    if !found || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr gives a NUL-terminated path that lives as long as the object.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()));
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    path.parent().map(Path::to_path_buf)
}

/// The collector program: `NETINTERCEPT_COLLECTOR`, else `netintercept` beside the library, in
/// `../bin` (CMake's install) or in `../../bin` (the Debian package's `/usr/lib/netintercept`):
/// see [`crate::layout`].
fn collector_program(lib_dir: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NETINTERCEPT_COLLECTOR").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    layout::find(lib_dir, &layout::CLI_DIRS_FROM_LIB, "netintercept")
}

/// First traced process of a run without the CLI: create the region and start a collector that
/// is not our child (it must never show up in the program's `wait`). Returns the region's path.
pub fn start_detached() -> Result<PathBuf, String> {
    let lib_dir = own_dir().ok_or("cannot locate libnetintercept.so")?;
    let program = collector_program(&lib_dir).ok_or_else(|| {
        format!(
            "no collector: 'netintercept' is neither beside {} nor in ../bin or ../../bin \
             (set NETINTERCEPT_COLLECTOR)",
            lib_dir.display()
        )
    })?;
    let (path, _region) = create_region()?;
    // Everything the grandchild needs is built before forking: after fork only async-signal-safe
    // calls are made.
    let cstr = |s: &[u8]| CString::new(s).map_err(|_| "NUL in a path".to_string());
    let prog = cstr(program.as_os_str().as_bytes())?;
    let argv_owned = [
        prog.clone(),
        cstr(b"--collect")?,
        cstr(path.as_os_str().as_bytes())?,
        cstr(lib_dir.as_os_str().as_bytes())?,
    ];
    let env_owned: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != "LD_PRELOAD")
        .filter_map(|(k, v)| {
            let mut kv: OsString = k;
            kv.push("=");
            kv.push(v);
            CString::new(kv.as_bytes()).ok()
        })
        .collect();
    let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env_owned.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let devnull = c"/dev/null";
    // A raw fork: no atfork handlers (the program's or ours) run for this helper.
    // SAFETY: clone with only SIGCHLD is fork; the child below makes only async-signal-safe
    // system calls and never returns.
    let child =
        unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
    if child < 0 {
        return Err(format!(
            "cannot start the collector: {}",
            sys::strerror(sys::errno())
        ));
    }
    if child == 0 {
        // SAFETY: raw system calls with valid arguments prepared before the fork; both children
        // end in execve or exit.
        unsafe {
            libc::syscall(libc::SYS_setsid);
            let grandchild =
                libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0);
            if grandchild == 0 {
                let null = libc::syscall(libc::SYS_open, devnull.as_ptr(), libc::O_RDWR, 0);
                if null >= 0 {
                    libc::syscall(libc::SYS_dup2, null, 0);
                    libc::syscall(libc::SYS_dup2, null, 1);
                }
                // Nothing else of the program's stays open in the collector (a pipe it holds
                // would keep the program's reader waiting); stderr stays for its one line.
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                libc::syscall(
                    libc::SYS_execve,
                    prog.as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                );
                libc::syscall(libc::SYS_exit, 127);
            }
            libc::syscall(libc::SYS_exit, 0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the intermediate child we just made.
    unsafe { libc::waitpid(child as i32, &mut status, libc::__WALL) };
    Ok(path)
}
