//! Unpacking a directory upload's tar stream, entry by entry, refusing
//! whatever could reach outside the destination or is not plain data.
//!
//! The tar stream comes from a worker, which is not trusted. `tar`'s own
//! `unpack` accepts links; here only files and directories are accepted,
//! every name is checked by [`confine::relative`], directories are made by
//! [`confine::make_dirs`] (no link followed), files are created new (a second
//! entry of the same name is refused, not merged), permission bits are cut
//! to `rwxr-xr-x`, and both the bytes and the entries unpacked are counted
//! against limits whatever the headers claim.

use super::confine::{self, PathError};
use moonbot_worker::protocol::Compression;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What an unpacking may produce at most.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of file content, in all.
    pub bytes: u64,
    /// Entries (files and directories).
    pub entries: u64,
}

/// What was unpacked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub files: u64,
    pub bytes: u64,
}

/// Why a tar stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum UntarError {
    #[error("the tar stream is malformed: {0}")]
    Malformed(String),
    #[error("entry {entry:?}: {why}")]
    Refused { entry: String, why: String },
    #[error("entry {entry:?}: {source}")]
    BadPath { entry: String, source: PathError },
    #[error("the directory holds more than {0} bytes")]
    TooLarge(u64),
    #[error("the directory holds more than {0} entries")]
    TooMany(u64),
    #[error("could not write {0}: {1}")]
    Write(String, io::Error),
}

/// Unpack the tar stream `input` (compressed as said) into the existing,
/// empty directory `dest`.
pub fn unpack(
    input: impl Read,
    compress: Option<Compression>,
    dest: &Path,
    limits: Limits,
) -> Result<Unpacked, UntarError> {
    unpack_plain(
        moonbot_worker::transfer::decompressed(input, compress),
        dest,
        limits,
    )
}

fn unpack_plain(input: impl Read, dest: &Path, limits: Limits) -> Result<Unpacked, UntarError> {
    let malformed = |e: io::Error| UntarError::Malformed(e.to_string());
    let mut archive = tar::Archive::new(input);
    let mut done = Unpacked::default();
    let mut entries_seen = 0u64;
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        entries_seen += 1;
        if entries_seen > limits.entries {
            return Err(UntarError::TooMany(limits.entries));
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        let bad_path = |source| UntarError::BadPath {
            entry: name.clone(),
            source,
        };
        if kind.is_dir() {
            match confine::relative(&name) {
                Ok(rel) => {
                    confine::make_dirs(dest, &rel).map_err(bad_path)?;
                }
                // The archive's root (`./`).
                Err(PathError::Empty) => {}
                Err(e) => return Err(bad_path(e)),
            }
            continue;
        }
        if !kind.is_file() {
            return Err(UntarError::Refused {
                entry: name,
                why: format!(
                    "{} entries are refused: only files and directories",
                    kind_name(kind)
                ),
            });
        }
        let rel = confine::relative(&name).map_err(bad_path)?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = confine::make_dirs(dest, parent).map_err(bad_path)?;
        let path = dir.join(rel.file_name().unwrap_or_default());
        let mode = entry.header().mode().unwrap_or(0o644) & 0o755 | 0o600;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc_nofollow())
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => UntarError::Refused {
                    entry: name.clone(),
                    why: "a second entry of the same name".into(),
                },
                _ => UntarError::Write(path.display().to_string(), e),
            })?;
        let room = limits.bytes - done.bytes;
        let copied = io::copy(&mut (&mut entry).take(room + 1), &mut file)
            .map_err(|e| UntarError::Write(path.display().to_string(), e))?;
        if copied > room {
            return Err(UntarError::TooLarge(limits.bytes));
        }
        file.flush()
            .map_err(|e| UntarError::Write(path.display().to_string(), e))?;
        done.bytes += copied;
        done.files += 1;
    }
    Ok(done)
}

/// `O_NOFOLLOW`: never open through a link made meanwhile.
fn libc_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "special",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        bytes: 1 << 20,
        entries: 1000,
    };

    /// A tar with raw headers, so names the `tar` builder would refuse to
    /// write (`../x`, `/etc/x`) can be made, as a hostile worker would.
    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data, link) in entries {
            let mut header = tar::Header::new_old();
            {
                let bytes = header.as_old_mut();
                bytes.name[..name.len()].copy_from_slice(name.as_bytes());
                bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o4777);
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn unpack_into(tar: &[u8]) -> (tempfile::TempDir, Result<Unpacked, UntarError>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("dest")).unwrap();
        let result = unpack(tar, None, &dir.path().join("dest"), LIMITS);
        (dir, result)
    }

    #[test]
    fn files_and_directories_are_unpacked_with_safe_modes() {
        use std::os::unix::fs::PermissionsExt;
        let tar = raw_tar(&[
            ("./", tar::EntryType::Directory, b"", ""),
            ("./sub/", tar::EntryType::Directory, b"", ""),
            ("./sub/a.txt", tar::EntryType::Regular, b"hello", ""),
            ("b.txt", tar::EntryType::Regular, b"", ""),
        ]);
        let (dir, result) = unpack_into(&tar);
        assert_eq!(result.unwrap(), Unpacked { files: 2, bytes: 5 });
        let a = dir.path().join("dest/sub/a.txt");
        assert_eq!(std::fs::read(&a).unwrap(), b"hello");
        // setuid and world-writable bits are gone.
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn hostile_entries_are_refused_and_write_nothing_outside() {
        let cases: &[(&str, tar::EntryType, &str)] = &[
            ("../escape.txt", tar::EntryType::Regular, "goes up"),
            ("sub/../../escape.txt", tar::EntryType::Regular, "goes up"),
            ("/tmp/escape.txt", tar::EntryType::Regular, "is absolute"),
            ("link", tar::EntryType::Symlink, "symbolic link"),
            ("hard", tar::EntryType::Link, "hard link"),
            ("dev", tar::EntryType::Char, "character device"),
            ("blk", tar::EntryType::Block, "block device"),
            ("fifo", tar::EntryType::Fifo, "FIFO"),
        ];
        for (name, kind, why) in cases {
            let tar = raw_tar(&[(name, *kind, b"x", "/etc/passwd")]);
            let (dir, result) = unpack_into(&tar);
            let err = result.expect_err(name).to_string();
            assert!(err.contains(why), "{name}: {err}");
            assert!(!dir.path().join("escape.txt").exists());
            assert_eq!(
                std::fs::read_dir(dir.path().join("dest")).unwrap().count(),
                0,
                "{name}"
            );
        }
    }

    #[test]
    fn a_second_entry_of_a_name_and_a_file_under_a_file_are_refused() {
        let twice = raw_tar(&[
            ("a", tar::EntryType::Regular, b"1", ""),
            ("a", tar::EntryType::Regular, b"2", ""),
        ]);
        let err = unpack_into(&twice).1.unwrap_err().to_string();
        assert!(err.contains("second entry"), "{err}");
        let under = raw_tar(&[
            ("a", tar::EntryType::Regular, b"1", ""),
            ("a/b", tar::EntryType::Regular, b"2", ""),
        ]);
        let err = unpack_into(&under).1.unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn sizes_are_counted_whatever_the_headers_say() {
        let big = vec![0u8; 2 << 20];
        let tar = raw_tar(&[("big", tar::EntryType::Regular, &big, "")]);
        let err = unpack_into(&tar).1.unwrap_err();
        assert!(matches!(err, UntarError::TooLarge(_)), "{err}");
        let many: Vec<(String, tar::EntryType, &[u8], &str)> = (0..1001)
            .map(|i| (format!("f{i}"), tar::EntryType::Regular, &b""[..], ""))
            .collect();
        let many: Vec<_> = many
            .iter()
            .map(|(n, k, d, l)| (n.as_str(), *k, *d, *l))
            .collect();
        let err = unpack_into(&raw_tar(&many)).1.unwrap_err();
        assert!(matches!(err, UntarError::TooMany(1000)), "{err}");
        let garbage = unpack_into(&[7u8; 1500]).1.unwrap_err();
        assert!(matches!(garbage, UntarError::Malformed(_)), "{garbage}");
    }
}
