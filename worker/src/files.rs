//! The filesystem commands: `mkdir`, `rmdir`, `rmfile`, `cpdir`, `stat`,
//! `glob` and `listdir` (Buildbot's worker commands of the same names).
//!
//! They run on the worker's own files, under its build directory; each answers
//! with a [`CommandOutcome`] whose `rc` is 0 on success, and whose `failure`
//! says what went wrong in words a build log can show.

use crate::protocol::{CommandOutcome, StatResult};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Most paths a `glob` or `listdir` answers with: the answer is one frame.
pub const MAX_LISTED: usize = 10_000;

pub async fn mkdir(path: &Path) -> CommandOutcome {
    outcome(
        tokio::fs::create_dir_all(path).await,
        "could not create directory",
        path,
    )
}

pub async fn rmdir(path: &Path) -> CommandOutcome {
    let target = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || remove_tree(&target))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
    outcome(result, "could not remove directory", path)
}

pub async fn rmfile(path: &Path) -> CommandOutcome {
    let result = match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    outcome(result, "could not remove file", path)
}

/// Copy the tree at `from` into `to` (symbolic links copied as links).
pub async fn cpdir(from: &Path, to: &Path) -> CommandOutcome {
    let (src, dest) = (from.to_path_buf(), to.to_path_buf());
    let result = tokio::task::spawn_blocking(move || copy_tree(&src, &dest))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
    outcome(result, &format!("could not copy {} to", from.display()), to)
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            from.display()
        )));
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &dest)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src)?;
            let _ = std::fs::remove_file(&dest);
            std::os::unix::fs::symlink(target, &dest)?;
        } else {
            std::fs::copy(&src, &dest)?;
        }
    }
    std::fs::set_permissions(to, meta.permissions())
}

/// The paths matching `pattern` (made absolute under `builds_dir`), sorted,
/// given back relative to `builds_dir` when they are under it.
pub async fn glob(builds_dir: &Path, pattern: &str) -> CommandOutcome {
    let full = builds_dir.join(pattern).to_string_lossy().into_owned();
    let base = builds_dir.to_path_buf();
    let found = tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
        let paths = ::glob::glob(&full).map_err(|e| format!("bad glob pattern: {e}"))?;
        let mut out = Vec::new();
        for path in paths.flatten().take(MAX_LISTED) {
            out.push(relative_to(&base, path));
        }
        out.sort();
        Ok(out)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    listed(found)
}

fn relative_to(base: &Path, path: PathBuf) -> String {
    match path.strip_prefix(base) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

/// The names in the directory `path`, sorted.
pub async fn listdir(path: &Path) -> CommandOutcome {
    let dir = path.to_path_buf();
    let found = tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| format!("could not list {}: {e}", dir.display()))?;
        let mut names: Vec<String> = entries
            .flatten()
            .take(MAX_LISTED)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    listed(found)
}

fn listed(found: Result<Vec<String>, String>) -> CommandOutcome {
    match found {
        Ok(files) => CommandOutcome {
            rc: Some(0),
            files: Some(files),
            ..CommandOutcome::default()
        },
        Err(why) => CommandOutcome {
            rc: Some(1),
            failure: Some(why),
            ..CommandOutcome::default()
        },
    }
}

fn outcome(result: io::Result<()>, what: &str, path: &Path) -> CommandOutcome {
    match result {
        Ok(()) => CommandOutcome {
            rc: Some(0),
            ..CommandOutcome::default()
        },
        Err(e) => CommandOutcome {
            rc: Some(1),
            failure: Some(format!("{what} {}: {e}", path.display())),
            ..CommandOutcome::default()
        },
    }
}

/// Remove a directory tree; a missing one is fine. Read-only directories inside
/// the tree (Go's module cache, `chmod -w` test fixtures) are made writable and
/// the removal is retried once.
fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path);
            match std::fs::remove_dir_all(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
        Err(e) => Err(e),
    }
}

/// Give the owner rwx on every directory of the tree (symlinks not followed);
/// best effort, the retried removal reports what still fails.
fn make_dirs_writable(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mut perms = meta.permissions();
    perms.set_mode(perms.mode() | 0o700);
    let _ = std::fs::set_permissions(path, perms);
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            make_dirs_writable(&entry.path());
        }
    }
}

pub async fn stat(path: &Path) -> CommandOutcome {
    let result = match tokio::fs::metadata(path).await {
        Ok(meta) => StatResult {
            exists: true,
            is_dir: meta.is_dir(),
            is_file: meta.is_file(),
            size: meta.len(),
            mtime: Some(meta.mtime()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => StatResult {
            exists: false,
            is_dir: false,
            is_file: false,
            size: 0,
            mtime: None,
        },
        Err(e) => {
            return CommandOutcome {
                rc: Some(1),
                failure: Some(format!("could not stat {}: {e}", path.display())),
                ..CommandOutcome::default()
            };
        }
    };
    CommandOutcome {
        rc: Some(0),
        stat: Some(result),
        ..CommandOutcome::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cpdir_copies_a_tree_and_glob_and_listdir_find_it() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir_all(base.join("src/sub")).unwrap();
        std::fs::write(base.join("src/a.xml"), "a").unwrap();
        std::fs::write(base.join("src/sub/b.xml"), "b").unwrap();
        std::os::unix::fs::symlink("a.xml", base.join("src/link")).unwrap();
        assert!(
            cpdir(&base.join("src"), &base.join("copy"))
                .await
                .succeeded()
        );
        assert_eq!(std::fs::read(base.join("copy/sub/b.xml")).unwrap(), b"b");
        assert_eq!(
            std::fs::read_link(base.join("copy/link")).unwrap(),
            Path::new("a.xml")
        );
        let found = glob(base, "copy/**/*.xml").await;
        assert_eq!(
            found.files.unwrap(),
            vec!["copy/a.xml".to_string(), "copy/sub/b.xml".to_string()]
        );
        let names = listdir(&base.join("copy")).await.files.unwrap();
        assert_eq!(names, vec!["a.xml", "link", "sub"]);
        assert!(rmfile(&base.join("copy/a.xml")).await.succeeded());
        assert!(
            rmfile(&base.join("copy/a.xml")).await.succeeded(),
            "a missing file is fine"
        );
        assert!(!base.join("copy/a.xml").exists());
        let missing = listdir(&base.join("nope")).await;
        assert_eq!(missing.rc, Some(1));
        assert!(missing.failure.unwrap().contains("could not list"));
    }
}
