//! Issue 17: what a user reads is true. The checked-in man page and completions are the ones the
//! options' definition makes; every option and every `NETINTERCEPT_*` variable the sources
//! mention is in `--help`, the man page and the README; the README names exactly the Debian
//! packages the scripts install; the man page's paths are where the Debian package puts files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{self, TempDir};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_checked_in_man_page_and_completions_are_the_generated_ones() {
    let dir = TempDir::new("docs");
    let out = Command::new(support::cli())
        .arg("--generate-docs")
        .arg(dir.path())
        .output()
        .expect("cli");
    assert!(out.status.success(), "{out:?}");
    let generated = files_under(dir.path());
    assert!(
        generated.contains(&PathBuf::from("man/netintercept.1"))
            && generated
                .iter()
                .filter(|p| p.starts_with("completions"))
                .count()
                == 3,
        "{generated:?}"
    );
    let stale: Vec<&PathBuf> = generated
        .iter()
        .filter(|p| std::fs::read(root().join(p)).ok() != std::fs::read(dir.path().join(p)).ok())
        .collect();
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what the options make: run `cargo run -q -- --generate-docs .`"
    );
    let checked_in = files_under(&root().join("completions"));
    assert_eq!(
        checked_in.len(),
        3,
        "completions/ holds only generated files: {checked_in:?}"
    );
}

/// The `NETINTERCEPT_*` names in the sources of the library, the CLI and the collector.
fn variables_in_sources() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for dir in ["src", "hooks/src", "pcapfilter/src", "synth/src"] {
        for file in files_under(&root().join(dir)) {
            let Ok(text) = std::fs::read_to_string(root().join(dir).join(&file)) else {
                continue;
            };
            for (at, _) in text.match_indices("NETINTERCEPT_") {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if name.len() > "NETINTERCEPT_".len() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

/// Whether `text` has `token` as a word of its own (`-w` is not in `-with`, NETINTERCEPT_FILE is
/// not in NETINTERCEPT_FILTER).
fn mentions(text: &str, token: &str) -> bool {
    let word =
        |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    text.match_indices(token).any(|(at, _)| {
        !word(text[..at].chars().next_back()) && !word(text[at + token.len()..].chars().next())
    })
}

/// The man page as text: roff's escaped hyphens and font changes undone.
fn man_text() -> String {
    let mut text = read("man/netintercept.1").replace("\\-", "-");
    for font in ["\\fB", "\\fI", "\\fR", "\\fP"] {
        text = text.replace(font, "");
    }
    text
}

#[test]
fn every_option_and_variable_is_in_help_man_page_and_readme() {
    let help = Command::new(support::cli())
        .arg("--help")
        .output()
        .expect("cli");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let docs = [
        ("--help", help),
        ("the man page", man_text()),
        ("README.md", read("README.md")),
    ];
    let flags = netintercept_core::cli::flags();
    let variables = variables_in_sources();
    // The lists come from the code: make sure they were found at all.
    for known in ["-w", "-f", "--no-follow", "--keylog", "-q", "--quiet"] {
        assert!(flags.iter().any(|f| f == known), "{known} in {flags:?}");
    }
    for known in ["NETINTERCEPT_FILE", "NETINTERCEPT_TLS", "NETINTERCEPT_RING"] {
        assert!(variables.contains(known), "{known} in {variables:?}");
    }
    let mut missing = Vec::new();
    for token in flags.iter().chain(&variables) {
        for (name, text) in &docs {
            if !mentions(text, token) {
                missing.push(format!("{token} is not in {name}"));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// The packages scripts/install-deps installs.
fn listed_packages() -> BTreeSet<String> {
    read("scripts/packages")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect()
}

#[test]
fn the_readme_names_exactly_the_packages_the_scripts_install() {
    let readme = read("README.md");
    let (_, rest) = readme
        .split_once("<!-- packages -->")
        .expect("README marks its package list with <!-- packages -->");
    let (list, _) = rest
        .split_once("<!-- /packages -->")
        .expect("the list's end");
    // The list names each package in backquotes.
    let named: BTreeSet<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|s| s.split_whitespace().map(str::to_owned))
        .collect();
    let listed = listed_packages();
    assert!(listed.contains("libpcap-dev") && listed.contains("tshark"));
    assert_eq!(named, listed, "README's list against scripts/packages");
}

/// `[source, dest, mode]` of each asset in Cargo.toml's `[package.metadata.deb]`.
fn deb_assets() -> Vec<(String, String)> {
    let toml = read("Cargo.toml");
    let (_, deb) = toml
        .split_once("[package.metadata.deb]")
        .expect("Cargo.toml has [package.metadata.deb]");
    deb.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("[\""))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split('"').skip(1).step_by(2).collect();
            Some((fields.first()?.to_string(), fields.get(1)?.to_string()))
        })
        .collect()
}

#[test]
fn the_man_page_names_the_paths_the_package_installs() {
    let installed: BTreeSet<String> = deb_assets()
        .into_iter()
        .map(|(source, dest)| match dest.strip_suffix('/') {
            Some(dir) => {
                let name = Path::new(&source).file_name().expect("a file name");
                format!("/{dir}/{}", name.to_string_lossy())
            }
            None => format!("/{dest}"),
        })
        .collect();
    for expected in [
        "/usr/bin/netintercept",
        "/usr/lib/netintercept/libnetintercept.so",
        "/usr/lib/netintercept/libnetintercept_pcapfilter.so",
        "/usr/share/man/man1/netintercept.1",
        "/usr/share/bash-completion/completions/netintercept",
    ] {
        assert!(installed.contains(expected), "{expected} in {installed:?}");
    }
    let man = man_text();
    let named: Vec<&str> = man
        .split_whitespace()
        .filter(|w| w.starts_with("/usr/"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .collect();
    assert!(named.len() >= 3, "{named:?}");
    for path in named {
        assert!(
            installed.contains(path),
            "the man page names {path}, which the package does not install"
        );
    }
}
