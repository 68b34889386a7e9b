//! What loading the library costs every exec of a traced program: no extra shared object and no
//! heap of ours (issue 16's exec row). Counted with readelf and strace, never timed.

use std::process::Command;

use crate::support::{self, TempDir};

/// The library's NEEDED entries, as readelf prints them.
fn needed() -> Vec<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(support::library())
        .output()
        .expect("run readelf");
    assert!(out.status.success(), "readelf failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn library_needs_no_shared_unwinder() {
    let needed = needed();
    assert!(needed.iter().any(|l| l.contains("libc.so")), "{needed:?}");
    // Rust's panics (caught in every hook) unwind through the static copy of libgcc's unwinder.
    assert!(!needed.iter().any(|l| l.contains("libgcc_s")), "{needed:?}");
}

/// How many of the system calls that set up a heap (`brk`, and glibc's `getrandom` for its
/// first `malloc`) `/bin/true` makes, run under `prefix`.
fn heap_calls(dir: &TempDir, name: &str, prefix: &[&std::ffi::OsStr]) -> usize {
    let log = dir.join(name);
    let mut cmd = Command::new(prefix[0]);
    cmd.args(&prefix[1..])
        .arg("strace")
        .arg("-qq")
        .arg("-e")
        .arg("trace=brk,getrandom")
        .arg("-o")
        .arg(&log)
        .arg("/bin/true");
    let out = cmd.output().expect("run strace");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&log).expect("strace log");
    text.lines()
        .filter(|l| l.starts_with("brk") || l.starts_with("getrandom"))
        .count()
}

#[test]
fn load_sets_up_no_heap() {
    let dir = TempDir::new("startup-heap");
    let cap = dir.join("cap.pcap");
    let untraced = heap_calls(&dir, "untraced.txt", &["env".as_ref()]);
    let traced = heap_calls(
        &dir,
        "traced.txt",
        &[
            support::cli().as_os_str(),
            // The library's constructor is what is measured (the tracer's CI run sets ptrace).
            "--backend".as_ref(),
            "preload".as_ref(),
            "-q".as_ref(),
            "-w".as_ref(),
            cap.as_os_str(),
            "--".as_ref(),
        ],
    );
    assert_eq!(traced, untraced, "the library's constructor used the heap");
}
