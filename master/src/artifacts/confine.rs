//! Paths on the master that a build names: checked before anything is
//! written, and walked without following a symbolic link.
//!
//! An upload's destination comes from master.lua, but may be rendered from
//! properties a change author controls, and a directory upload's entry names
//! come from the worker. Neither may reach outside the build's own artifact
//! directory: a name is a relative path of plain components, and every
//! directory on the way is made here or was made here before.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Longest name accepted, in bytes.
pub const MAX_NAME: usize = 1024;
/// Most components a name may have.
pub const MAX_DEPTH: usize = 64;

/// Why a path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("the path is empty")]
    Empty,
    #[error("the path {0:?} is absolute")]
    Absolute(String),
    #[error("the path {0:?} goes up with '..'")]
    Parent(String),
    #[error("the path {0:?} is longer than {MAX_NAME} bytes or {MAX_DEPTH} levels")]
    TooLong(String),
    #[error("the path {0:?} holds a NUL byte")]
    Nul(String),
    #[error("{0} is a symbolic link on the master; refusing to write through it")]
    Symlink(String),
    #[error("{0} exists on the master and is not a directory")]
    NotADirectory(String),
    #[error("{0}: {1}")]
    Io(String, String),
}

/// `name` as a relative path of plain components (`.` dropped); refuses
/// absolute paths, `..`, NUL and overlong names.
pub fn relative(name: &str) -> Result<PathBuf, PathError> {
    if name.contains('\0') {
        return Err(PathError::Nul(name.to_string()));
    }
    if name.len() > MAX_NAME {
        return Err(PathError::TooLong(name.to_string()));
    }
    let mut out = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(PathError::Parent(name.to_string())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(PathError::Absolute(name.to_string()));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(PathError::Empty);
    }
    if out.components().count() > MAX_DEPTH {
        return Err(PathError::TooLong(name.to_string()));
    }
    Ok(out)
}

/// Make `root/rel` a directory, creating what is missing, refusing a
/// symbolic link or a file anywhere on the way. `root` itself is trusted.
pub fn make_dirs(root: &Path, rel: &Path) -> Result<PathBuf, PathError> {
    let mut at = root.to_path_buf();
    for component in rel.components() {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(PathError::Symlink(at.display().to_string()));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(PathError::NotADirectory(at.display().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(&at) {
                Ok(()) => {}
                // Made meanwhile by another upload: look again.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let meta = std::fs::symlink_metadata(&at).map_err(|e| io_error(&at, e))?;
                    if !meta.is_dir() || meta.file_type().is_symlink() {
                        return Err(PathError::NotADirectory(at.display().to_string()));
                    }
                }
                Err(e) => return Err(io_error(&at, e)),
            },
            Err(e) => return Err(io_error(&at, e)),
        }
    }
    Ok(at)
}

/// Refuse to replace `path` when it is a symbolic link (`rename` would
/// replace the link, but a reader could have followed it meanwhile).
pub fn not_a_symlink(path: &Path) -> Result<(), PathError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            Err(PathError::Symlink(path.display().to_string()))
        }
        _ => Ok(()),
    }
}

pub fn io_error(path: &Path, e: io::Error) -> PathError {
    PathError::Io(path.display().to_string(), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_relative_paths() {
        assert_eq!(
            relative("dist/app.tar.gz").unwrap(),
            Path::new("dist/app.tar.gz")
        );
        assert_eq!(relative("./a/./b").unwrap(), Path::new("a/b"));
        assert_eq!(
            relative("with space/ü.txt").unwrap(),
            Path::new("with space/ü.txt")
        );
        assert!(matches!(
            relative("../etc/passwd"),
            Err(PathError::Parent(_))
        ));
        assert!(matches!(relative("a/../../b"), Err(PathError::Parent(_))));
        assert!(matches!(
            relative("/etc/passwd"),
            Err(PathError::Absolute(_))
        ));
        assert!(matches!(relative(""), Err(PathError::Empty)));
        assert!(matches!(relative("./."), Err(PathError::Empty)));
        assert!(matches!(relative("a\0b"), Err(PathError::Nul(_))));
        assert!(matches!(
            relative(&"a/".repeat(65)),
            Err(PathError::TooLong(_))
        ));
    }

    #[test]
    fn directories_are_made_without_following_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let made = make_dirs(&root, Path::new("a/b")).unwrap();
        assert!(made.is_dir());
        std::os::unix::fs::symlink(dir.path(), root.join("escape")).unwrap();
        assert!(matches!(
            make_dirs(&root, Path::new("escape/x")),
            Err(PathError::Symlink(_))
        ));
        assert!(!dir.path().join("x").exists());
        std::fs::write(root.join("file"), "").unwrap();
        assert!(matches!(
            make_dirs(&root, Path::new("file/x")),
            Err(PathError::NotADirectory(_))
        ));
    }
}
