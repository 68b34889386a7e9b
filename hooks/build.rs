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
}
