//! What keeps one test's resources apart from every other test's, in this binary and in others running at
//! the same time: random names, free ports, fresh directories.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use std::{env, fs, io};

/// `len` random lowercase hex characters from the OS CSPRNG (the digests of fresh tokens), for key
/// prefixes, schema names and secrets that no other test can pick.
///
/// # Panics
/// When the OS has no randomness.
pub fn random_hex(len: usize) -> String {
    let mut hex = String::with_capacity(len + 64);
    while hex.len() < len {
        let token = sidekey_domain::Token::generate().expect("the OS has randomness");
        hex.push_str(&token.digest().to_hex());
    }
    hex.truncate(len);
    hex
}

/// A loopback TCP port that was free a moment ago. The listener is dropped before returning, so the port
/// is released for a server to bind; another process may take it in between, which is why the private
/// servers retry on a fresh port.
///
/// # Panics
/// When no loopback port can be bound.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port to find a free one");
    listener.local_addr().expect("the bound port").port()
}

/// A fresh directory under the system temp dir, readable by its owner only, removed with its content on
/// drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a new, empty directory whose name no other test (of this or another binary) uses.
    ///
    /// # Panics
    /// When the directory cannot be created.
    pub fn new(label: &str) -> Self {
        Self::try_new(label).unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`TempDir::new`], with the failure as text.
    pub fn try_new(label: &str) -> Result<Self, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.subsec_nanos());
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            // Short: Unix socket paths (the servers' sockets live in these directories) are limited to
            // about 100 bytes.
            let path = env::temp_dir().join(format!("sk-{label}-{}-{n}-{nanos:x}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                        .map_err(|error| format!("cannot restrict {}: {error}", path.display()))?;
                    return Ok(Self(path));
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(format!("cannot create a temp dir at {}: {error}", path.display())),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_hex_has_the_length_asked_for_even_past_one_digest() {
        for len in [0, 12, 64, 100] {
            let hex = random_hex(len);
            assert_eq!(hex.len(), len);
            assert!(hex.bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()), "{hex}");
        }
        assert_ne!(random_hex(32), random_hex(32));
    }

    #[test]
    fn a_temp_dir_is_private_and_gone_after_its_drop() {
        let dir = TempDir::new("unit");
        let path = dir.path().to_owned();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(dir);
        assert!(!path.exists());
    }
}
