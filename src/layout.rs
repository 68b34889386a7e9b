//! Where the CLI and the libraries find each other, in each way netintercept is laid out:
//!
//! - side by side: a cargo build's `target/release/`, CMake's build folder;
//! - the Debian package: `/usr/bin/netintercept`, `/usr/lib/netintercept/lib*.so`;
//! - CMake's install: `PREFIX/bin/netintercept`, `PREFIX/lib/lib*.so`.
//!
//! Each side looks from its own canonical folder, so the two lists are each other's inverse.
//! `../bin` is tried before `../../bin` so that a CMake install under `PREFIX` never picks the
//! CLI of a Debian package in `PREFIX/..` (a CLI of another version: its region layout may
//! differ).

use std::path::{Path, PathBuf};

/// Folders, relative to the CLI's folder, where the libraries may be, in order.
pub const LIB_DIRS_FROM_CLI: [&str; 3] = [".", "../lib/netintercept", "../lib"];

/// Folders, relative to the libraries' folder, where the CLI may be, in order.
pub const CLI_DIRS_FROM_LIB: [&str; 3] = [".", "../bin", "../../bin"];

/// The first of `dirs` (relative to `from`) that holds a regular file `name`.
pub fn find(from: &Path, dirs: &[&str], name: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| from.join(d).join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each layout, built in a scratch folder: the CLI finds the library and the library finds
    /// that same CLI back.
    #[test]
    fn each_layout_finds_its_own_pair() {
        let root = std::env::temp_dir().join(format!("ni-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (bin, lib) in [
            ("side", "side"),
            ("deb/usr/bin", "deb/usr/lib/netintercept"),
            ("cmake/bin", "cmake/lib"),
        ] {
            let (bin, lib) = (root.join(bin), root.join(lib));
            std::fs::create_dir_all(&bin).expect("bin dir");
            std::fs::create_dir_all(&lib).expect("lib dir");
            std::fs::write(bin.join("netintercept"), b"").expect("cli");
            std::fs::write(lib.join("libnetintercept.so"), b"").expect("lib");
            let found_lib = find(&bin, &LIB_DIRS_FROM_CLI, "libnetintercept.so").expect("lib");
            let found_cli = find(&lib, &CLI_DIRS_FROM_LIB, "netintercept").expect("cli");
            assert_eq!(
                found_lib.canonicalize().ok(),
                lib.join("libnetintercept.so").canonicalize().ok()
            );
            assert_eq!(
                found_cli.canonicalize().ok(),
                bin.join("netintercept").canonicalize().ok()
            );
        }
        // A CMake install in PREFIX beside a package's CLI in PREFIX/..: its own CLI first.
        let prefix = root.join("usr/local");
        std::fs::create_dir_all(prefix.join("lib")).expect("lib");
        std::fs::create_dir_all(prefix.join("bin")).expect("bin");
        std::fs::create_dir_all(root.join("usr/bin")).expect("bin");
        std::fs::write(prefix.join("bin/netintercept"), b"").expect("cli");
        std::fs::write(root.join("usr/bin/netintercept"), b"").expect("cli");
        let found = find(&prefix.join("lib"), &CLI_DIRS_FROM_LIB, "netintercept").expect("cli");
        assert_eq!(
            found.canonicalize().ok(),
            prefix.join("bin/netintercept").canonicalize().ok()
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
