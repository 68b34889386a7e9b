//! Compiles the one C file of the library: the printf-family hooks, which are variadic in C and
//! cannot be defined in stable Rust.

fn main() {
    println!("cargo:rerun-if-changed=src/stdio_shim.c");
    cc::Build::new()
        .file("src/stdio_shim.c")
        // Our own calls to the real v*printf must not be turned into __*_chk calls behind our back
        // (the _chk hooks call the real _chk functions explicitly).
        .flag("-U_FORTIFY_SOURCE")
        .flag("-D_FORTIFY_SOURCE=0")
        // Reached only through the Rust trampolines, which are the exported names.
        .flag("-fvisibility=hidden")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .compile("netintercept_stdio_shim");
    link_unwinder_statically();
}

/// Rust's std unwinds panics (caught in every hook) through libgcc's unwinder, which it links
/// as the shared `libgcc_s.so.1`. Loading that library costs every exec of every traced program
/// an extra object to map and relocate, and its constructor runs `cpuid` (slow in VMs). The
/// static copy of the same unwinder (`libgcc_eh.a`, what `gcc -static-libgcc` uses) is linked
/// in whole, ahead of std, so every `_Unwind_*` reference resolves inside the library (hidden by
/// rustc's version script) and `--as-needed` drops the `libgcc_s.so.1` entry.
fn link_unwinder_statically() {
    let compiler = cc::Build::new().get_compiler();
    let out = std::process::Command::new(compiler.path())
        .arg("-print-file-name=libgcc_eh.a")
        .output();
    let Ok(out) = out else { return };
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // A bare name back means the compiler has no such archive: keep the shared unwinder.
    let Some(dir) = path
        .parent()
        .filter(|d| path.is_file() && !d.as_os_str().is_empty())
    else {
        return;
    };
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=gcc_eh");
}
