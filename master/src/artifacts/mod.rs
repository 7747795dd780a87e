//! Artifacts: what builds upload to the master, where it lies, and how it
//! arrives.
//!
//! The master, not the worker, decides where uploaded bytes go. A build's
//! uploads live under `ARTIFACTS/BUILDID/`, at the destination the step named
//! (checked by [`confine`]); the worker only ever sends bytes on the stream of
//! an upload the master asked for. A file arrives in a temporary file under
//! `ARTIFACTS/.incoming/` and is renamed into place only when whole; a
//! directory's tar stream is unpacked ([`untar`]) into a fresh staging
//! directory on a blocking thread, fed through a small channel, so memory
//! stays flat however large the upload. Sizes are the bytes actually
//! received, never what the worker claims.
//!
//! This module knows files only; the rows that list artifacts are the data
//! layer's, and the janitor removes expired ones with [`ArtifactStore::remove`].

pub mod confine;
pub mod untar;

use confine::PathError;
use moonbot_worker::protocol::Compression;
use moonbot_worker::transfer::ChunkReader;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Why an upload was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("bad destination: {0}")]
    Path(#[from] PathError),
    #[error("the upload is larger than its limit of {0} bytes")]
    TooLarge(u64),
    #[error("the directory upload was refused: {0}")]
    Untar(#[from] untar::UntarError),
    #[error("{0}")]
    Io(String),
}

/// Where artifacts live on the master.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

/// A finished upload: where it lies (relative to the store) and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub path: String,
    pub size: u64,
    pub files: u64,
}

impl ArtifactStore {
    /// The store at `root` (made when the first upload arrives).
    pub fn new(root: PathBuf) -> ArtifactStore {
        ArtifactStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The checked place of `name` among build `buildid`'s artifacts.
    fn place(&self, buildid: i64, name: &str) -> Result<(PathBuf, String), ArtifactError> {
        let rel = Path::new(&buildid.to_string()).join(confine::relative(name)?);
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = confine::make_dirs(&self.root, parent)?;
        let dest = dir.join(rel.file_name().unwrap_or_default());
        confine::not_a_symlink(&dest)?;
        Ok((dest, rel.to_string_lossy().into_owned()))
    }

    /// A new path under `.incoming/` (made if missing).
    fn staging(&self, what: &str) -> Result<PathBuf, ArtifactError> {
        let incoming = self.root.join(".incoming");
        std::fs::create_dir_all(&incoming)
            .map_err(|e| ArtifactError::Io(format!("{}: {e}", incoming.display())))?;
        Ok(incoming.join(format!(
            "{what}-{}-{}",
            std::process::id(),
            STAGING.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )))
    }

    /// Start receiving a file for build `buildid` at `name`, refusing more
    /// than `max` bytes.
    pub async fn receive_file(
        &self,
        buildid: i64,
        name: &str,
        max: u64,
    ) -> Result<IncomingFile, ArtifactError> {
        let temp = self.staging("file")?;
        let (dest, path) = self.place(buildid, name)?;
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| ArtifactError::Io(format!("{}: {e}", temp.display())))?;
        Ok(IncomingFile {
            file,
            temp,
            dest,
            path,
            received: 0,
            max,
        })
    }

    /// Start receiving a directory's tar stream for build `buildid` at
    /// `name`, refusing more than `max` bytes received or unpacked.
    pub async fn receive_tree(
        &self,
        buildid: i64,
        name: &str,
        compress: Option<Compression>,
        max: u64,
    ) -> Result<IncomingTree, ArtifactError> {
        let staging = self.staging("tree")?;
        let (dest, path) = self.place(buildid, name)?;
        std::fs::create_dir(&staging)
            .map_err(|e| ArtifactError::Io(format!("{}: {e}", staging.display())))?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>(TREE_QUEUE);
        let limits = untar::Limits {
            bytes: max,
            entries: MAX_TREE_ENTRIES,
        };
        let target = staging.clone();
        let unpacking = tokio::task::spawn_blocking(move || {
            let mut reader = ChunkReader::new(rx);
            let unpacked = untar::unpack(&mut reader, compress, &target, limits)?;
            // The archive ends before the stream may (its second end block,
            // a compressor's trailer): read the rest, which the writer caps.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
            Ok(unpacked)
        });
        Ok(IncomingTree {
            tx: Some(tx),
            unpacking,
            staging,
            dest,
            path,
            received: 0,
            max,
        })
    }

    /// The file of an artifact, or of `sub` inside a directory artifact;
    /// `None` when it is not there (expired) or `sub` is no plain path.
    pub fn file(&self, path: &str, sub: Option<&str>) -> Option<PathBuf> {
        let mut at = self.root.join(confine::relative(path).ok()?);
        if let Some(sub) = sub {
            at.push(confine::relative(sub).ok()?);
        }
        let meta = std::fs::symlink_metadata(&at).ok()?;
        meta.is_file().then_some(at)
    }

    /// The files of a directory artifact, relative to it, sorted, at most `max`.
    pub fn list(&self, path: &str, max: usize) -> Vec<(String, u64)> {
        let Ok(rel) = confine::relative(path) else {
            return Vec::new();
        };
        let root = self.root.join(rel);
        let mut out = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    dirs.push(entry.path());
                } else if kind.is_file() && out.len() < max {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    let name = entry.path();
                    let name = name.strip_prefix(&root).unwrap_or(&name);
                    out.push((name.to_string_lossy().into_owned(), size));
                }
            }
        }
        out.sort();
        out
    }

    /// The builds that have a directory here.
    pub fn build_dirs(&self) -> Vec<i64> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Remove an artifact's file or tree (nothing when it is gone already).
    pub fn remove(&self, path: &str) -> Result<(), ArtifactError> {
        let at = self.root.join(confine::relative(path)?);
        let result = match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&at),
            Ok(_) => std::fs::remove_file(&at),
            Err(_) => Ok(()),
        };
        result.map_err(|e| ArtifactError::Io(format!("{}: {e}", at.display())))?;
        // The build's directory goes with its last artifact.
        if let Some(parent) = at.parent()
            && parent != self.root
        {
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    }
}

/// An upload arriving: a file, a directory's tar stream, or a file the
/// master reads itself (a test report) kept in memory up to a limit.
pub enum Incoming {
    File(IncomingFile),
    Tree(IncomingTree),
    Memory { bytes: Vec<u8>, max: u64 },
}

impl Incoming {
    pub async fn write(&mut self, bytes: Vec<u8>) -> Result<(), ArtifactError> {
        match self {
            Incoming::File(file) => file.write(&bytes).await,
            Incoming::Tree(tree) => tree.write(bytes).await,
            Incoming::Memory { bytes: kept, max } => {
                if (kept.len() + bytes.len()) as u64 > *max {
                    return Err(ArtifactError::TooLarge(*max));
                }
                kept.extend_from_slice(&bytes);
                Ok(())
            }
        }
    }

    /// Every byte arrived: put it in place (`mode`: a file's permission bits).
    pub async fn finish(self, mode: Option<u32>) -> Result<Stored, ArtifactError> {
        match self {
            Incoming::File(file) => file.finish(mode).await,
            Incoming::Tree(tree) => tree.finish().await,
            Incoming::Memory { bytes, .. } => Ok(Stored {
                path: String::new(),
                size: bytes.len() as u64,
                files: 1,
            }),
        }
    }

    /// Give up: nothing of it stays.
    pub async fn abandon(self) {
        match self {
            Incoming::File(file) => file.abandon().await,
            Incoming::Tree(tree) => tree.abandon().await,
            Incoming::Memory { .. } => {}
        }
    }
}

/// What the master sends a download after its request.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Bytes(Vec<u8>),
    /// A file on the master, read as it is sent.
    File(PathBuf),
    /// A directory on the master, sent as a tar stream made as it is sent.
    Tree {
        dir: PathBuf,
        compress: Option<Compression>,
    },
}

static STAGING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Chunks queued between the stream and the unpacking thread.
const TREE_QUEUE: usize = 8;
/// Most entries a directory upload may hold.
pub const MAX_TREE_ENTRIES: u64 = 1_000_000;

/// A file upload arriving.
pub struct IncomingFile {
    file: tokio::fs::File,
    temp: PathBuf,
    dest: PathBuf,
    path: String,
    received: u64,
    max: u64,
}

impl IncomingFile {
    /// Take the next bytes; more than the limit in all is refused.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ArtifactError> {
        self.received += bytes.len() as u64;
        if self.received > self.max {
            return Err(ArtifactError::TooLarge(self.max));
        }
        self.file
            .write_all(bytes)
            .await
            .map_err(|e| ArtifactError::Io(format!("{}: {e}", self.temp.display())))
    }

    /// Every byte arrived: put the file in place with permission bits `mode`.
    pub async fn finish(mut self, mode: Option<u32>) -> Result<Stored, ArtifactError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |e: std::io::Error| ArtifactError::Io(e.to_string());
        self.file.flush().await.map_err(io)?;
        let mode = mode.unwrap_or(0o644) & 0o755;
        tokio::fs::set_permissions(&self.temp, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(io)?;
        confine::not_a_symlink(&self.dest)?;
        if self.dest.is_dir() {
            return Err(ArtifactError::Io(format!(
                "{} is a directory on the master",
                self.dest.display()
            )));
        }
        tokio::fs::rename(&self.temp, &self.dest)
            .await
            .map_err(io)?;
        Ok(Stored {
            path: self.path.clone(),
            size: self.received,
            files: 1,
        })
    }

    /// Give up: the partial file is removed.
    pub async fn abandon(self) {
        let _ = tokio::fs::remove_file(&self.temp).await;
    }
}

/// A directory upload arriving: its bytes go to the unpacking thread.
pub struct IncomingTree {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    unpacking: tokio::task::JoinHandle<Result<untar::Unpacked, untar::UntarError>>,
    staging: PathBuf,
    dest: PathBuf,
    path: String,
    received: u64,
    max: u64,
}

impl IncomingTree {
    /// Take the next bytes of the tar stream. An unpacking that refused the
    /// stream refuses these too (with its reason, from [`Self::finish`]).
    pub async fn write(&mut self, bytes: Vec<u8>) -> Result<(), ArtifactError> {
        self.received += bytes.len() as u64;
        if self.received > self.max {
            return Err(ArtifactError::TooLarge(self.max));
        }
        let Some(tx) = &self.tx else {
            return Err(ArtifactError::Io("the upload has ended".into()));
        };
        if tx.send(bytes).await.is_err() {
            // The unpacking stopped: say why.
            self.tx = None;
            return Err(self.outcome().await.err().unwrap_or_else(|| {
                ArtifactError::Io("the tar stream ended before the upload did".into())
            }));
        }
        Ok(())
    }

    async fn outcome(&mut self) -> Result<untar::Unpacked, ArtifactError> {
        self.tx = None;
        match (&mut self.unpacking).await {
            Ok(result) => Ok(result?),
            Err(e) => Err(ArtifactError::Io(format!("the unpacking stopped: {e}"))),
        }
    }

    /// Every byte arrived: the unpacked directory replaces `dest`.
    pub async fn finish(mut self) -> Result<Stored, ArtifactError> {
        let unpacked = match self.outcome().await {
            Ok(unpacked) => unpacked,
            Err(e) => {
                self.discard().await;
                return Err(e);
            }
        };
        let io = |e: std::io::Error| ArtifactError::Io(e.to_string());
        confine::not_a_symlink(&self.dest)?;
        match tokio::fs::symlink_metadata(&self.dest).await {
            Ok(meta) if meta.is_dir() => tokio::fs::remove_dir_all(&self.dest).await.map_err(io)?,
            Ok(_) => tokio::fs::remove_file(&self.dest).await.map_err(io)?,
            Err(_) => {}
        }
        tokio::fs::rename(&self.staging, &self.dest)
            .await
            .map_err(io)?;
        Ok(Stored {
            path: self.path.clone(),
            size: unpacked.bytes,
            files: unpacked.files,
        })
    }

    /// Give up: the staging directory is removed.
    pub async fn abandon(mut self) {
        let _ = self.outcome().await;
        self.discard().await;
    }

    async fn discard(&self) {
        let _ = tokio::fs::remove_dir_all(&self.staging).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_lands_whole_at_its_destination_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path().join("artifacts"));
        let mut incoming = store.receive_file(7, "dist/app.bin", 10).await.unwrap();
        incoming.write(b"12345").await.unwrap();
        let stored = incoming.finish(Some(0o4755)).await.unwrap();
        assert_eq!(
            stored,
            Stored {
                path: "7/dist/app.bin".into(),
                size: 5,
                files: 1
            }
        );
        assert_eq!(
            store.file("7/dist/app.bin", None).unwrap(),
            store.root().join("7/dist/app.bin")
        );
        let mut incoming = store.receive_file(7, "big.bin", 10).await.unwrap();
        incoming.write(b"123456").await.unwrap();
        assert!(matches!(
            incoming.write(b"7890a").await,
            Err(ArtifactError::TooLarge(10))
        ));
        incoming.abandon().await;
        assert!(store.file("7/big.bin", None).is_none());
        assert_eq!(
            std::fs::read_dir(store.root().join(".incoming"))
                .unwrap()
                .count(),
            0
        );
        assert!(matches!(
            store.receive_file(7, "../8/x", 10).await,
            Err(ArtifactError::Path(PathError::Parent(_)))
        ));
    }

    #[tokio::test]
    async fn a_tree_is_unpacked_beside_and_moved_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path().join("artifacts"));
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "docs/index.html", &b"<p>"[..])
            .unwrap();
        let bytes = tar.into_inner().unwrap();
        let mut incoming = store.receive_tree(3, "html", None, 1 << 20).await.unwrap();
        for chunk in bytes.chunks(100) {
            incoming.write(chunk.to_vec()).await.unwrap();
        }
        let stored = incoming.finish().await.unwrap();
        assert_eq!(
            stored,
            Stored {
                path: "3/html".into(),
                size: 3,
                files: 1
            }
        );
        assert_eq!(
            store.list("3/html", 10),
            vec![("docs/index.html".to_string(), 3)]
        );
        assert!(store.file("3/html", Some("docs/index.html")).is_some());
        assert!(
            store
                .file("3/html", Some("../html/docs/index.html"))
                .is_none()
        );
        store.remove("3/html").unwrap();
        assert!(!store.root().join("3").exists());
    }
}
