//! Which source of records a run uses (`--backend`): the preload library where it can enter
//! the program, the system-call tracer where it cannot. Judged from the executable's ELF
//! headers alone (a few reads at known offsets, never the whole file: browsers are hundreds
//! of megabytes).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::options::Backend;

/// The source `asked` for `exe`, and when `auto` chose the tracer, why (said once on stderr).
pub fn choose(asked: Backend, exe: Option<&Path>) -> (Backend, Option<String>) {
    if asked != Backend::Auto {
        return (asked, None);
    }
    let Some(elf) = exe.and_then(Elf::read) else {
        return (Backend::Preload, None);
    };
    let why = if elf.go {
        "it is a Go program (Go makes its system calls itself, past libc)"
    } else if elf.is_static {
        "it is statically linked (no dynamic loader runs in it to preload a library)"
    } else {
        return (Backend::Preload, None);
    };
    let name = exe.map(|p| p.display().to_string()).unwrap_or_default();
    (
        Backend::Ptrace,
        Some(format!(
            "tracing '{name}' through its system calls (--backend ptrace): {why}"
        )),
    )
}

/// `NETINTERCEPT_BACKEND`'s value (unset or empty: auto); `Err` holds the line to say.
pub fn from_env(value: Option<std::ffi::OsString>) -> Result<Backend, String> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(Backend::Auto);
    };
    match v.as_encoded_bytes() {
        b"auto" => Ok(Backend::Auto),
        b"preload" => Ok(Backend::Preload),
        b"ptrace" => Ok(Backend::Ptrace),
        b"both" => Ok(Backend::Both),
        other => Err(format!(
            "NETINTERCEPT_BACKEND {} is not auto, preload, ptrace or both",
            crate::quoted::quoted(other, crate::quoted::PATH_CHARS)
        )),
    }
}

/// What the headers of an executable say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Elf {
    /// No program interpreter: nothing can be preloaded.
    pub is_static: bool,
    /// A Go build (its build-id note or build-info section).
    pub go: bool,
}

impl Elf {
    /// The headers of the 64-bit little-endian ELF file at `path` (`None` for anything else:
    /// scripts and other formats are left to the preload library).
    pub fn read(path: &Path) -> Option<Elf> {
        let f = File::open(path).ok()?;
        let at = |off: u64, len: usize| -> Option<Vec<u8>> {
            let mut b = vec![0u8; len];
            f.read_exact_at(&mut b, off).ok()?;
            Some(b)
        };
        let head = at(0, 64)?;
        if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
            return None;
        }
        let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
        let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at =
            |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let (phoff, phentsize, phnum) = (u64_at(&head, 32), u16_at(&head, 54), u16_at(&head, 56));
        let (shoff, shentsize, shnum, shstrndx) = (
            u64_at(&head, 40),
            u16_at(&head, 58),
            u16_at(&head, 60),
            u16_at(&head, 62),
        );
        const PT_INTERP: u32 = 3;
        let ph = at(phoff, (phentsize * phnum).min(64 * 1024) as usize)?;
        let is_static =
            (0..phnum as usize).all(|i| u32_at(&ph, i * phentsize as usize) != PT_INTERP);
        let go = (|| {
            if shentsize < 64 || shnum == 0 || shstrndx >= shnum {
                return None;
            }
            let sh = at(shoff, (shentsize * shnum).min(1 << 20) as usize)?;
            let sec = |i: u64| &sh[(i * shentsize) as usize..];
            let names = sec(shstrndx);
            let names = at(u64_at(names, 24), u64_at(names, 32).min(1 << 20) as usize)?;
            Some((0..shnum).any(|i| {
                let off = u32_at(sec(i), 0) as usize;
                let name = names.get(off..).unwrap_or_default();
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                name == b".go.buildinfo" || name == b".note.go.buildid"
            }))
        })()
        .unwrap_or(false);
        Some(Elf { is_static, go })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_c_program_is_for_the_preload_library() {
        let sh = Elf::read(Path::new("/bin/sh")).expect("/bin/sh is ELF");
        assert_eq!(sh, Elf::default());
        assert_eq!(
            choose(Backend::Auto, Some(Path::new("/bin/sh"))).0,
            Backend::Preload
        );
        assert_eq!(Elf::read(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn the_variable_names_a_backend_or_is_refused() {
        assert_eq!(from_env(None), Ok(Backend::Auto));
        assert_eq!(from_env(Some("".into())), Ok(Backend::Auto));
        assert_eq!(from_env(Some("ptrace".into())), Ok(Backend::Ptrace));
        let e = from_env(Some("strace\n".into())).expect_err("refused");
        assert!(e.starts_with("NETINTERCEPT_BACKEND 'strace\\n'"), "{e}");
    }

    #[test]
    fn an_explicit_choice_stands() {
        let (b, why) = choose(Backend::Ptrace, Some(Path::new("/bin/sh")));
        assert_eq!((b, why), (Backend::Ptrace, None));
    }
}
