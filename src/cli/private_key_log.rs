//! `--nss-keys`: a key log file of the run's own for the program's `SSLKEYLOGFILE`, so that NSS,
//! which writes its TLS keys nowhere else, writes them where the collector reads them.
//!
//! The file lives in a directory only this user can enter (0700, made by `mkdtemp`), is made
//! 0600 before the program starts (NSS opens it to append, and would otherwise make it as the
//! umask allows), and both are removed when the run ends: the keys are in the capture then, and
//! in `--keylog`'s file when one was asked for.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// The private key log file, removed (with its directory) when dropped.
pub struct PrivateKeyLog {
    dir: PathBuf,
    file: PathBuf,
}

impl PrivateKeyLog {
    /// Make the directory and the empty file; the error is a line to print.
    pub fn create() -> Result<PrivateKeyLog, String> {
        let mut template = std::env::temp_dir().join("netintercept-keys.XXXXXX");
        let c = CString::new(template.as_os_str().as_bytes())
            .map_err(|_| "the temporary directory's name holds a NUL byte".to_string())?;
        let mut bytes = c.into_bytes_with_nul();
        // SAFETY: `bytes` is a writable NUL-terminated template ending in XXXXXX, as mkdtemp
        // wants; it replaces the Xs in place.
        let made = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
        if made.is_null() {
            return Err(format!(
                "--nss-keys: cannot make a private directory under '{}': {}",
                std::env::temp_dir().display(),
                std::io::Error::last_os_error()
            ));
        }
        bytes.pop();
        template = PathBuf::from(OsString::from_vec(bytes));
        let keys = PrivateKeyLog {
            file: template.join("sslkeylog.txt"),
            dir: template,
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&keys.file)
            .map_err(|e| {
                format!(
                    "--nss-keys: cannot make '{}': {e}",
                    keys.file.as_path().display()
                )
            })?;
        Ok(keys)
    }

    /// The file's path, for `SSLKEYLOGFILE`.
    pub fn path(&self) -> &std::path::Path {
        &self.file
    }
}

impl Drop for PrivateKeyLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_0600_file_in_a_0700_directory_removed_at_the_end() {
        let keys = PrivateKeyLog::create().expect("made");
        let file = keys.path().to_path_buf();
        let dir = file.parent().expect("dir").to_path_buf();
        let mode = |p: &std::path::Path| {
            std::fs::symlink_metadata(p)
                .expect("meta")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
        drop(keys);
        assert!(!dir.exists());
    }
}
