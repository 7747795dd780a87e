//! File transfers on the worker's side: uploads (a file's bytes, or a
//! directory as a tar stream) sent as output, and downloads written from the
//! master's input.
//!
//! An upload is a command whose output is data: its bytes go through the same
//! buffer as a shell command's output, so they are acknowledged, held back when
//! the master is slow, and re-sent from the right byte after a reconnect. The
//! worker honours `max_size` to save the network, but the master counts the
//! bytes itself: it never relies on what this side says.
//!
//! A download is written to a temporary file beside its destination and
//! renamed only when every byte arrived, so a broken connection never leaves a
//! half-written file where a build expects a whole one.

use crate::command_io::{CommandEvent, Input};
use crate::protocol::{CommandOutcome, Compression, OUTPUT_CHUNK};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Send the file at `path` as data events.
pub async fn upload_file(
    path: &Path,
    max_size: Option<u64>,
    events: mpsc::Sender<CommandEvent>,
    interrupt: oneshot::Receiver<String>,
) -> CommandOutcome {
    let path = path.to_path_buf();
    run_blocking(interrupt, move |cancel| {
        let mut file = std::fs::File::open(&path)
            .map_err(|e| format!("could not open {}: {e}", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("could not read {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a file", path.display()));
        }
        let mut out = DataWriter::new(events, max_size, cancel);
        io::copy(&mut file, &mut out).map_err(|e| out.describe(e, &path))?;
        out.finish().map_err(|e| out.describe(e, &path))
    })
    .await
}

/// Send the directory at `path` as a tar stream of data events (compressed
/// as asked). Symbolic links are followed: the master accepts only files and
/// directories.
pub async fn upload_directory(
    path: &Path,
    compress: Option<Compression>,
    max_size: Option<u64>,
    events: mpsc::Sender<CommandEvent>,
    interrupt: oneshot::Receiver<String>,
) -> CommandOutcome {
    let path = path.to_path_buf();
    run_blocking(interrupt, move |cancel| {
        if !path.is_dir() {
            return Err(format!("{} is not a directory", path.display()));
        }
        let mut out = DataWriter::new(events, max_size, cancel);
        let written = write_tree(&path, compress, &mut out);
        written.map_err(|e| out.describe(e, &path))?;
        out.finish().map_err(|e| out.describe(e, &path))
    })
    .await
}

/// Write the tree at `dir` to `out` as a tar stream, compressed as asked;
/// symbolic links are followed (the stream holds files and directories
/// only). The master sends a directory download the same way.
pub fn write_tree(dir: &Path, compress: Option<Compression>, out: impl Write) -> io::Result<()> {
    match compress {
        None => write_tar(dir, out),
        Some(Compression::Gz) => {
            let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            write_tar(dir, &mut gz)?;
            gz.finish().map(drop)
        }
        Some(Compression::Bz2) => {
            let mut bz = bzip2::write::BzEncoder::new(out, bzip2::Compression::default());
            write_tar(dir, &mut bz)?;
            bz.finish().map(drop)
        }
    }
}

fn write_tar<W: Write>(dir: &Path, out: W) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(true);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(".", dir)?;
    tar.into_inner()?.flush()
}

/// `input` decompressed as said (the reading side of [`write_tree`]).
pub fn decompressed<'a>(
    input: impl Read + 'a,
    compress: Option<Compression>,
) -> Box<dyn Read + 'a> {
    match compress {
        None => Box::new(input),
        Some(Compression::Gz) => Box::new(flate2::read::GzDecoder::new(input)),
        Some(Compression::Bz2) => Box::new(bzip2::read::BzDecoder::new(input)),
    }
}

/// Unpack the tar stream the master sends into `path` (through a staging
/// directory beside it that replaces `path` when the stream is whole).
pub async fn download_directory(
    path: &Path,
    compress: Option<Compression>,
    mut input: mpsc::Receiver<Input>,
    mut interrupt: oneshot::Receiver<String>,
) -> CommandOutcome {
    let part = part_path(path);
    let _ = tokio::fs::remove_dir_all(&part).await;
    let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
    let target = part.clone();
    let unpacking = tokio::task::spawn_blocking(move || -> io::Result<()> {
        std::fs::create_dir_all(&target)?;
        let mut reader = ChunkReader::new(rx);
        tar::Archive::new(decompressed(&mut reader, compress)).unpack(&target)?;
        io::copy(&mut reader, &mut io::sink()).map(drop)
    });
    let received = async {
        let mut tx = Some(tx);
        let mut got = 0u64;
        loop {
            match input.recv().await {
                Some(Input::Data(bytes)) => {
                    got += bytes.len() as u64;
                    if let Some(sender) = &tx
                        && sender.send(bytes).await.is_err()
                    {
                        // The unpacking stopped; its error says why.
                        tx = None;
                    }
                }
                Some(Input::End { size: sent }) if sent == got => return Ok(()),
                Some(Input::End { .. }) => return Err("the directory arrived incomplete".into()),
                None => return Err("the connection to the master broke during the download".into()),
            }
        }
    };
    let received = tokio::select! {
        r = received => r,
        _ = &mut interrupt => Err("interrupted".to_string()),
    };
    let unpacked = unpacking
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
        .map_err(|e| format!("could not unpack: {e}"));
    let placed = match (received, unpacked) {
        (Ok(()), Ok(())) => replace_dir(&part, path).await,
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match placed {
        Ok(()) => done(),
        Err(why) => {
            let _ = tokio::fs::remove_dir_all(&part).await;
            failed(format!("could not download to {}: {why}", path.display()))
        }
    }
}

async fn replace_dir(part: &Path, path: &Path) -> Result<(), String> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(meta) if meta.is_dir() => tokio::fs::remove_dir_all(path)
            .await
            .map_err(|e| e.to_string())?,
        Ok(_) => tokio::fs::remove_file(path)
            .await
            .map_err(|e| e.to_string())?,
        Err(_) => {}
    }
    tokio::fs::rename(part, path)
        .await
        .map_err(|e| e.to_string())
}

/// A blocking `Read` over the chunks a channel carries (a tar stream fed
/// from async code to a blocking unpacker); the channel's end is the
/// stream's end. The master unpacks uploads with it too.
pub struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    pub fn new(rx: mpsc::Receiver<Vec<u8>>) -> ChunkReader {
        ChunkReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Write what the master sends to `path` (through a temporary file beside
/// it), with permission bits `mode`.
pub async fn download_file(
    path: &Path,
    mode: Option<u32>,
    size: u64,
    mut input: mpsc::Receiver<Input>,
    mut interrupt: oneshot::Receiver<String>,
) -> CommandOutcome {
    let part = part_path(path);
    let written = tokio::select! {
        written = receive(&part, size, &mut input) => written,
        _ = &mut interrupt => Err("interrupted".to_string()),
    };
    let finished = match written {
        Ok(()) => place(&part, path, mode.unwrap_or(0o644)).await,
        Err(e) => Err(e),
    };
    match finished {
        Ok(()) => done(),
        Err(why) => {
            let _ = tokio::fs::remove_file(&part).await;
            failed(format!("could not download to {}: {why}", path.display()))
        }
    }
}

/// `DIR/.NAME.moonbot-part`: where a download is written until it is whole.
fn part_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.moonbot-part"))
}

async fn receive(part: &Path, size: u64, input: &mut mpsc::Receiver<Input>) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    if let Some(parent) = part.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut file = tokio::fs::File::create(part)
        .await
        .map_err(|e| e.to_string())?;
    let mut written = 0u64;
    loop {
        match input.recv().await {
            Some(Input::Data(bytes)) => {
                written += bytes.len() as u64;
                if written > size {
                    return Err(format!(
                        "the master sent more than the {size} bytes announced"
                    ));
                }
                file.write_all(&bytes).await.map_err(|e| e.to_string())?;
            }
            Some(Input::End { size: sent }) if sent == written && written == size => break,
            Some(Input::End { size: sent }) => {
                return Err(format!(
                    "the master announced {size} bytes, said it sent {sent}, and {written} arrived"
                ));
            }
            None => return Err("the connection to the master broke during the download".into()),
        }
    }
    file.flush().await.map_err(|e| e.to_string())?;
    file.sync_all().await.map_err(|e| e.to_string())
}

async fn place(part: &Path, path: &Path, mode: u32) -> Result<(), String> {
    tokio::fs::set_permissions(part, std::fs::Permissions::from_mode(mode & 0o7777))
        .await
        .map_err(|e| e.to_string())?;
    tokio::fs::rename(part, path)
        .await
        .map_err(|e| e.to_string())
}

/// Run `work` on a blocking thread; an interrupt sets the flag it checks
/// between writes.
async fn run_blocking(
    mut interrupt: oneshot::Receiver<String>,
    work: impl FnOnce(Arc<AtomicBool>) -> Result<(), String> + Send + 'static,
) -> CommandOutcome {
    let cancel = Arc::new(AtomicBool::new(false));
    let task = tokio::task::spawn_blocking({
        let cancel = cancel.clone();
        move || work(cancel)
    });
    tokio::pin!(task);
    let mut interrupted = false;
    let result = loop {
        tokio::select! {
            result = &mut task => break result,
            _ = &mut interrupt, if !interrupted => {
                interrupted = true;
                cancel.store(true, Ordering::Relaxed);
            }
        }
    };
    match result {
        _ if interrupted => CommandOutcome {
            interrupted: true,
            ..CommandOutcome::default()
        },
        Ok(Ok(())) => done(),
        Ok(Err(why)) => failed(why),
        Err(e) => failed(format!("the transfer stopped: {e}")),
    }
}

fn done() -> CommandOutcome {
    CommandOutcome {
        rc: Some(0),
        ..CommandOutcome::default()
    }
}

fn failed(why: String) -> CommandOutcome {
    CommandOutcome {
        rc: Some(1),
        failure: Some(why),
        ..CommandOutcome::default()
    }
}

/// A `Write` that hands what it is given to `send` in chunks of
/// [`OUTPUT_CHUNK`] bytes (the last one on `flush`): how a tar stream made on
/// a blocking thread reaches async code, on the worker (uploads) and on the
/// master (directory downloads).
pub struct ChunkWriter<S> {
    send: S,
    pending: Vec<u8>,
}

impl<S: FnMut(Vec<u8>) -> io::Result<()>> ChunkWriter<S> {
    pub fn new(send: S) -> Self {
        ChunkWriter {
            send,
            pending: Vec::with_capacity(OUTPUT_CHUNK),
        }
    }
}

impl<S: FnMut(Vec<u8>) -> io::Result<()>> Write for ChunkWriter<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(OUTPUT_CHUNK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == OUTPUT_CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(OUTPUT_CHUNK));
        (self.send)(chunk)
    }
}

/// Where an upload's chunks go: the command's data events.
type SendData = Box<dyn FnMut(Vec<u8>) -> io::Result<()> + Send>;

/// An upload's [`ChunkWriter`]: data events, stopped by an interrupt,
/// refusing to go past `max_size`.
struct DataWriter {
    chunks: ChunkWriter<SendData>,
    sent: u64,
    max_size: Option<u64>,
    too_large: bool,
}

impl DataWriter {
    fn new(
        events: mpsc::Sender<CommandEvent>,
        max_size: Option<u64>,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        let send = move |chunk| {
            if cancel.load(Ordering::Relaxed) {
                return Err(io::Error::other("interrupted"));
            }
            events
                .blocking_send(CommandEvent::Data(chunk))
                .map_err(|_| io::Error::other("the command's output was closed"))
        };
        DataWriter {
            chunks: ChunkWriter::new(Box::new(send)),
            sent: 0,
            max_size,
            too_large: false,
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.chunks.flush()
    }

    /// An error of the transfer of `path`, said plainly.
    fn describe(&self, e: io::Error, path: &Path) -> String {
        match self.max_size {
            Some(max) if self.too_large => {
                format!("{} is larger than max_size ({max} bytes)", path.display())
            }
            _ => format!("could not send {}: {e}", path.display()),
        }
    }
}

impl Write for DataWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(max) = self.max_size
            && self.sent + buf.len() as u64 > max
        {
            self.too_large = true;
            return Err(io::Error::other("larger than max_size"));
        }
        let n = self.chunks.write(buf)?;
        self.sent += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.chunks.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn read_all(mut r: impl Read) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    }

    async fn collect(mut rx: mpsc::Receiver<CommandEvent>) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(event) = rx.recv().await {
            match event {
                CommandEvent::Data(bytes) => {
                    assert!(bytes.len() <= OUTPUT_CHUNK);
                    all.extend(bytes)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        all
    }

    #[tokio::test]
    async fn a_file_is_sent_whole_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let (tx, rx) = mpsc::channel(4);
        let (_stop, interrupt) = oneshot::channel();
        let reader = tokio::spawn(collect(rx));
        let outcome = upload_file(&path, None, tx, interrupt).await;
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(reader.await.unwrap(), content);
    }

    #[tokio::test]
    async fn a_file_over_max_size_fails_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let (tx, rx) = mpsc::channel(4);
        let (_stop, interrupt) = oneshot::channel();
        let reader = tokio::spawn(collect(rx));
        let outcome = upload_file(&path, Some(9_999), tx, interrupt).await;
        assert_eq!(outcome.rc, Some(1));
        assert!(
            outcome
                .failure
                .unwrap()
                .contains("larger than max_size (9999 bytes)")
        );
        assert!(reader.await.unwrap().len() <= 9_999);
    }

    #[tokio::test]
    async fn a_directory_is_a_compressed_tar_stream() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("out/sub")).unwrap();
        std::fs::write(dir.path().join("out/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("out/sub/b.txt"), "bb").unwrap();
        for compress in [None, Some(Compression::Gz), Some(Compression::Bz2)] {
            let (tx, rx) = mpsc::channel(4);
            let (_stop, interrupt) = oneshot::channel();
            let reader = tokio::spawn(collect(rx));
            let outcome =
                upload_directory(&dir.path().join("out"), compress, None, tx, interrupt).await;
            assert!(outcome.succeeded(), "{outcome:?}");
            let bytes = reader.await.unwrap();
            let plain = match compress {
                None => bytes,
                Some(Compression::Gz) => read_all(flate2::read::GzDecoder::new(&bytes[..])),
                Some(Compression::Bz2) => read_all(bzip2::read::BzDecoder::new(&bytes[..])),
            };
            let mut names: Vec<String> = tar::Archive::new(&plain[..])
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect();
            names.sort();
            assert_eq!(names, ["./", "a.txt", "sub", "sub/b.txt"]);
        }
    }

    #[tokio::test]
    async fn a_directory_download_replaces_its_destination_when_whole() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/tool.txt"), "tool").unwrap();
        let mut tar = Vec::new();
        write_tree(&src, Some(Compression::Gz), &mut tar).unwrap();
        let dest = dir.path().join("tools");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("old.txt"), "old").unwrap();
        let (tx, rx) = mpsc::channel(4);
        let (_stop, interrupt) = oneshot::channel();
        let size = tar.len() as u64;
        let feed = tokio::spawn(async move {
            for chunk in tar.chunks(100) {
                tx.send(Input::Data(chunk.to_vec())).await.unwrap();
            }
            tx.send(Input::End { size }).await.unwrap();
        });
        let outcome = download_directory(&dest, Some(Compression::Gz), rx, interrupt).await;
        feed.await.unwrap();
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(std::fs::read(dest.join("sub/tool.txt")).unwrap(), b"tool");
        assert!(!dest.join("old.txt").exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no part left"
        );
    }

    #[tokio::test]
    async fn a_download_appears_only_when_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/tool.sh");
        // Whole: the file is there, with its mode.
        let (tx, rx) = mpsc::channel(4);
        let (_stop, interrupt) = oneshot::channel();
        tx.send(Input::Data(b"#!/bin/sh\n".to_vec())).await.unwrap();
        tx.send(Input::End { size: 10 }).await.unwrap();
        let outcome = download_file(&dest, Some(0o755), 10, rx, interrupt).await;
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"#!/bin/sh\n");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // Cut short: nothing replaces the file, no part file is left.
        let (tx, rx) = mpsc::channel(4);
        let (_stop, interrupt) = oneshot::channel();
        tx.send(Input::Data(b"half".to_vec())).await.unwrap();
        drop(tx);
        let outcome = download_file(&dest, None, 10, rx, interrupt).await;
        assert!(!outcome.succeeded());
        assert!(
            outcome
                .failure
                .unwrap()
                .contains("broke during the download")
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            std::fs::read_dir(dest.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
