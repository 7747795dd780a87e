//! A running command that outlives its stream.
//!
//! A volunteer's network flaps. If a broken connection killed the commands it
//! carried, every Wi-Fi hiccup would cost a build. So each command runs in its
//! own task that owns the process and an [`OutputBuffer`] of everything the
//! master has not acknowledged yet. The task is *attached* to at most one
//! command stream at a time: output goes out from the buffer, acknowledgements
//! and interrupts come in. When the stream breaks the task detaches and keeps
//! running; when the master opens a `Resume` stream (see [`crate::protocol`]),
//! [`CommandTable::attach`] hands that stream to the task, which re-sends from
//! the byte the master asks for. A command nobody re-attaches within the grace
//! period is stopped.

use crate::command_io::Input;
use crate::protocol::{
    CommandControl, CommandOutcome, CommandRequest, Frame, MAX_BUFFERED_OUTPUT, RemoteCommand,
};
use crate::runner::{CommandEvent, run_command};
use crate::transport::{FrameReader, StreamError};
use quinn::{SendStream, WriteError};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};

/// Output events queued between a command and its task.
const OUTPUT_QUEUE: usize = 16;
/// Download frames queued between the stream and the command.
const INPUT_QUEUE: usize = 16;
/// Most bytes written to the stream in one write (several frames together).
const WRITE_BATCH: usize = 256 * 1024;

/// A command stream handed to a command task, with how much output the master
/// already has (0 for a new command).
pub struct Attachment {
    pub send: SendStream,
    pub reader: FrameReader,
    pub received: u64,
}

/// How long a detached command waits, once the worker is connected again, for
/// the master to re-attach it. A master that still wants a command re-attaches
/// it as soon as the worker is back; one that gave up (its grace period ended
/// first) never will, and its command must not go on beside the build that
/// replaces it.
pub const REATTACH_AFTER_RECONNECT: Duration = Duration::from_secs(5);

/// The commands this worker runs, by id, so a `Resume` stream finds its command.
#[derive(Clone)]
pub struct CommandTable {
    commands: Arc<Mutex<HashMap<u64, mpsc::Sender<Attachment>>>>,
    /// Bumped each time the master welcomes this worker.
    connections: watch::Sender<u64>,
}

impl Default for CommandTable {
    fn default() -> Self {
        CommandTable {
            commands: Arc::default(),
            connections: watch::Sender::new(0),
        }
    }
}

impl CommandTable {
    /// Start `request` attached to `stream`. The returned future is the command's
    /// whole life; the caller spawns it. `keep` is how long a detached command
    /// waits to be re-attached (zero: it is stopped at once, as before
    /// re-attaching existed). `stop` turning true stops the command now (the
    /// worker is shutting down).
    pub fn start(
        &self,
        request: CommandRequest,
        stream: Attachment,
        builds_dir: PathBuf,
        keep: Duration,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (attach_tx, attach_rx) = mpsc::channel(1);
        // A command with the same id from an earlier master is replaced: its
        // task sees its channel close and gives up.
        self.commands
            .lock()
            .expect("command table lock")
            .insert(request.id, attach_tx.clone());
        let table = self.clone();
        let connections = self.connections.subscribe();
        async move {
            let id = request.id;
            let ends = Ends { stop, connections };
            drive(request, stream, attach_rx, builds_dir, keep, ends).await;
            table.forget(id, &attach_tx);
        }
    }

    /// Hand a `Resume` stream to command `id`. Gives the stream back when this
    /// worker does not have that command (any more).
    pub async fn attach(&self, id: u64, stream: Attachment) -> Result<(), Attachment> {
        let sender = self
            .commands
            .lock()
            .expect("command table lock")
            .get(&id)
            .cloned();
        match sender {
            Some(sender) => sender.send(stream).await.map_err(|e| e.0),
            None => Err(stream),
        }
    }

    /// The master welcomed this worker again: detached commands it does not
    /// re-attach soon are stopped (see [`REATTACH_AFTER_RECONNECT`]).
    pub fn reconnected(&self) {
        self.connections.send_modify(|n| *n += 1);
    }

    /// Commands running or waiting to be re-attached.
    pub fn len(&self) -> usize {
        self.commands.lock().expect("command table lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn forget(&self, id: u64, ours: &mpsc::Sender<Attachment>) {
        let mut map = self.commands.lock().expect("command table lock");
        if map.get(&id).is_some_and(|s| s.same_channel(ours)) {
            map.remove(&id);
        }
    }
}

/// Output the master has not acknowledged, as whole frames with the output
/// offset each starts at.
#[derive(Debug, Default)]
pub struct OutputBuffer {
    frames: VecDeque<(u64, Frame)>,
    /// Offset just past the last frame (all output produced so far).
    end: u64,
    /// Offset of the first frame kept (everything before was acknowledged).
    start: u64,
    /// Payload bytes held.
    bytes: usize,
}

impl OutputBuffer {
    pub fn push(&mut self, frame: Frame) {
        let len = frame.output_len() as u64;
        self.bytes += len as usize;
        self.frames.push_back((self.end, frame));
        self.end += len;
    }

    /// Forget frames that end at or before `received`.
    pub fn acknowledge(&mut self, received: u64) {
        while let Some((offset, frame)) = self.frames.front() {
            let end = offset + frame.output_len() as u64;
            if end > received {
                break;
            }
            self.bytes -= frame.output_len();
            self.frames.pop_front();
            self.start = end;
        }
        self.start = self.start.max(received.min(self.end));
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Offset just past the last frame.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Can output be sent from `offset` on (it is a frame boundary the buffer
    /// still holds, or the end)?
    pub fn can_resume_at(&self, offset: u64) -> bool {
        offset == self.end
            || self
                .frames
                .binary_search_by_key(&offset, |(o, _)| *o)
                .is_ok()
    }

    /// Encode frames from `offset` on, up to about `max` bytes; returns the
    /// bytes and the offset after them.
    pub fn encode_from(&self, offset: u64, max: usize) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        let mut next = offset;
        // Frames are in offset order: start at the first one at `offset`.
        let first = self.frames.partition_point(|(o, _)| *o < offset);
        for (o, frame) in self.frames.range(first..) {
            if !out.is_empty() && out.len() + frame.output_len() > max {
                break;
            }
            frame.encode_into(&mut out);
            next = o + frame.output_len() as u64;
        }
        (out, next)
    }
}

type WriteFuture = Pin<Box<dyn Future<Output = (SendStream, Result<(), WriteError>)> + Send>>;

/// The stream a command is attached to.
struct Link {
    /// What the master sends; `None` once it finished its side.
    reader: Option<FrameReader>,
    /// The send half, when no write is in flight.
    send: Option<SendStream>,
    /// The write in flight; it gives the stream back when done.
    writing: Option<WriteFuture>,
    /// Output offset the next write starts at.
    next: u64,
    /// The outcome has been written on this stream.
    outcome_sent: bool,
}

impl Link {
    fn new(attachment: Attachment) -> Link {
        Link {
            reader: Some(attachment.reader),
            send: Some(attachment.send),
            writing: None,
            next: attachment.received,
            outcome_sent: false,
        }
    }

    fn write(&mut self, bytes: Vec<u8>) {
        let mut send = self.send.take().expect("no write in flight");
        self.writing = Some(Box::pin(async move {
            let result = send.write_all(&bytes).await;
            (send, result)
        }));
    }
}

async fn next_write(writing: Option<&mut WriteFuture>) -> (SendStream, Result<(), WriteError>) {
    match writing {
        Some(writing) => writing.await,
        None => std::future::pending().await,
    }
}

async fn next_control(reader: Option<&mut FrameReader>) -> Result<Option<Frame>, StreamError> {
    match reader {
        Some(reader) => reader.next().await,
        None => std::future::pending().await,
    }
}

/// Answer a `Resume` for a command this worker does not have.
pub async fn refuse_resume(mut stream: Attachment, id: u64) {
    let outcome = CommandOutcome {
        lost: true,
        failure: Some(format!(
            "the worker no longer has command {id} (it was restarted, or the command was \
             stopped because nobody re-attached it in time)"
        )),
        ..CommandOutcome::default()
    };
    let _ = stream.send.write_all(&Frame::json(&outcome).encode()).await;
    let _ = stream.send.finish();
}

/// What ends a command from outside: the worker stopping, and reconnections.
struct Ends {
    stop: watch::Receiver<bool>,
    connections: watch::Receiver<u64>,
}

/// The life of one command: run it, keep its output until acknowledged, move
/// between streams, stop it when nobody comes back for it.
async fn drive(
    request: CommandRequest,
    first: Attachment,
    mut attach_rx: mpsc::Receiver<Attachment>,
    builds_dir: PathBuf,
    keep: Duration,
    ends: Ends,
) {
    let Ends {
        mut stop,
        mut connections,
    } = ends;
    let id = request.id;
    tracing::info!("command {id}: {}", describe_command(&request.command));
    let (events_tx, mut events_rx) = mpsc::channel(OUTPUT_QUEUE);
    let (interrupt_tx, interrupt_rx) = oneshot::channel();
    // Dropping this unsent stops the command.
    let mut interrupt_tx = Some(interrupt_tx);
    // A download's bytes; dropped (the download fails) when its stream breaks.
    let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
    let mut input_tx = Some(input_tx);
    let run = run_command(
        &request.command,
        &builds_dir,
        events_tx,
        input_rx,
        interrupt_rx,
    );
    tokio::pin!(run);

    let mut buffer = OutputBuffer::default();
    let mut outcome: Option<CommandOutcome> = None;
    let mut events_open = true;
    let mut link = Some(Link::new(first));
    // When detached: the moment the command is given up.
    let mut give_up_at: Option<Instant> = None;
    let mut given_up = false;
    let mut stopping = *stop.borrow();
    if stopping {
        interrupt_tx = None;
    }

    loop {
        let finished = outcome.is_some() && !events_open;
        if finished && (stopping || given_up) {
            break;
        }
        // Start the next write when the stream is free.
        if let Some(l) = link.as_mut()
            && l.writing.is_none()
            && !l.outcome_sent
        {
            if l.next < buffer.end() {
                let (bytes, next) = buffer.encode_from(l.next, WRITE_BATCH);
                l.next = next;
                l.write(bytes);
            } else if finished && let Some(outcome) = &outcome {
                l.outcome_sent = true;
                l.write(Frame::json(outcome).encode());
            }
        }
        let room = buffer.bytes() < MAX_BUFFERED_OUTPUT;
        let detached = link.is_none();
        let (writing, reader) = match link.as_mut() {
            Some(l) => (l.writing.as_mut(), l.reader.as_mut()),
            None => (None, None),
        };
        tokio::select! {
            done = &mut run, if outcome.is_none() => {
                tracing::info!("command {id}: {}", describe_outcome(&done));
                outcome = Some(done);
            }
            event = events_rx.recv(), if events_open && room => match event {
                Some(CommandEvent::Stdout(bytes)) => buffer.push(Frame::Stdout(bytes)),
                Some(CommandEvent::Stderr(bytes)) => buffer.push(Frame::Stderr(bytes)),
                Some(CommandEvent::LogFile { name, bytes }) => {
                    buffer.push(Frame::log_file(&name, &bytes))
                }
                Some(CommandEvent::Data(bytes)) => buffer.push(Frame::Data(bytes)),
                None => events_open = false,
            },
            (mut send, written) = next_write(writing) => {
                let l = link.as_mut().expect("a write implies a link");
                l.writing = None;
                match written {
                    Ok(()) => {
                        if l.outcome_sent {
                            let _ = send.finish();
                        }
                        l.send = Some(send);
                    }
                    Err(e) => {
                        input_tx = None;
                        detach(id, &mut link, &mut give_up_at, keep, &e.to_string())
                    }
                }
            }
            frame = next_control(reader) => match frame {
                Ok(Some(Frame::Data(bytes))) => {
                    if let Some(tx) = &input_tx {
                        // A command that reads no input has dropped its end.
                        let _ = tx.send(Input::Data(bytes)).await;
                    }
                }
                Ok(Some(frame)) => match frame.parse::<CommandControl>() {
                    Ok(CommandControl::EndOfData { size }) => {
                        if let Some(tx) = input_tx.take() {
                            let _ = tx.send(Input::End { size }).await;
                        }
                    }
                    Ok(CommandControl::Ack { received }) => buffer.acknowledge(received),
                    Ok(CommandControl::Interrupt { reason }) => {
                        tracing::info!("command {id}: interrupted by the master: {reason}");
                        if let Some(tx) = interrupt_tx.take() {
                            let _ = tx.send(reason);
                        }
                    }
                    Err(e) => tracing::warn!("command {id}: ignoring a malformed control message: {e}"),
                },
                Ok(None) => {
                    // The master finishes its side once it has read the outcome.
                    if link.as_ref().is_some_and(|l| l.outcome_sent && l.writing.is_none()) {
                        break;
                    }
                    // Otherwise it only has nothing more to say; output still
                    // goes out on this stream (a download it did not end fails).
                    input_tx = None;
                    if let Some(l) = link.as_mut() {
                        l.reader = None;
                    }
                }
                Err(e) => {
                    input_tx = None;
                    detach(id, &mut link, &mut give_up_at, keep, &e.to_string())
                }
            },
            attached = attach_rx.recv() => match attached {
                Some(attachment) => {
                    let received = attachment.received;
                    if received > buffer.end() || !buffer.can_resume_at(received) {
                        tracing::warn!(
                            "command {id}: the master asks to resume at byte {received}, which this worker no longer holds (it holds {}..{})",
                            buffer.start, buffer.end()
                        );
                        refuse_resume(attachment, id).await;
                        continue;
                    }
                    tracing::info!("command {id}: re-attached at output byte {received}");
                    buffer.acknowledge(received);
                    link = Some(Link::new(attachment));
                    give_up_at = None;
                    given_up = false;
                }
                None => {
                    tracing::info!("command {id}: replaced by a new command with the same id; stopping it");
                    interrupt_tx = None;
                    stopping = true;
                    link = None;
                }
            },
            _ = sleep_until(give_up_at.unwrap_or_else(Instant::now)), if give_up_at.is_some() && !given_up => {
                given_up = true;
                if outcome.is_none() {
                    tracing::warn!("command {id}: nobody re-attached it in time; stopping it");
                    interrupt_tx = None;
                }
            }
            changed = connections.changed(), if detached && !given_up => {
                if changed.is_ok() {
                    let soon = Instant::now() + REATTACH_AFTER_RECONNECT;
                    give_up_at = Some(give_up_at.map_or(soon, |t| t.min(soon)));
                }
            }
            _ = stop.changed(), if !stopping => {
                if *stop.borrow() {
                    tracing::info!("command {id}: stopping it, the worker is shutting down");
                    stopping = true;
                    interrupt_tx = None;
                }
            }
        }
    }
    drop(interrupt_tx);
}

fn detach(
    id: u64,
    link: &mut Option<Link>,
    give_up_at: &mut Option<Instant>,
    keep: Duration,
    why: &str,
) {
    if link.take().is_none() {
        return;
    }
    if keep.is_zero() {
        tracing::warn!("command {id}: its stream broke ({why}); stopping it");
    } else {
        tracing::warn!(
            "command {id}: its stream broke ({why}); keeping it running for {} s for the master to re-attach",
            keep.as_secs()
        );
    }
    *give_up_at = Some(Instant::now() + keep);
}

pub(crate) fn describe_command(command: &RemoteCommand) -> String {
    match command {
        RemoteCommand::Shell(shell) => {
            format!("shell `{}` in {}", shell.command.display(), shell.workdir)
        }
        RemoteCommand::Mkdir { path } => format!("mkdir {path}"),
        RemoteCommand::Rmdir { path } => format!("rmdir {path}"),
        RemoteCommand::Stat { path } => format!("stat {path}"),
        RemoteCommand::Rmfile { path } => format!("rmfile {path}"),
        RemoteCommand::Cpdir { from, to } => format!("cpdir {from} {to}"),
        RemoteCommand::Glob { pattern } => format!("glob {pattern}"),
        RemoteCommand::Listdir { path } => format!("listdir {path}"),
        RemoteCommand::UploadFile { path, .. } => format!("upload {path}"),
        RemoteCommand::UploadDirectory { path, .. } => format!("upload directory {path}"),
        RemoteCommand::DownloadFile { path, size, .. } => {
            format!("download {size} bytes to {path}")
        }
        RemoteCommand::DownloadDirectory { path, .. } => format!("download a directory to {path}"),
    }
}

pub(crate) fn describe_outcome(outcome: &CommandOutcome) -> String {
    let mut parts = Vec::new();
    if let Some(rc) = outcome.rc {
        parts.push(format!("rc {rc}"));
    }
    if let Some(signal) = outcome.signal {
        parts.push(format!("signal {signal}"));
    }
    if outcome.interrupted {
        parts.push("interrupted".into());
    }
    if let Some(failure) = &outcome.failure {
        parts.push(failure.clone());
    }
    parts.push(format!("{} ms", outcome.elapsed_ms));
    format!("finished: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(s: &str) -> Frame {
        Frame::Stdout(s.as_bytes().to_vec())
    }

    fn decode_all(mut bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some((frame, used)) = Frame::decode(bytes).unwrap() {
            frames.push(frame);
            bytes = &bytes[used..];
        }
        frames
    }

    #[test]
    fn buffer_resends_from_any_unacknowledged_frame_boundary() {
        let mut buffer = OutputBuffer::default();
        buffer.push(out("aaaa"));
        buffer.push(Frame::Stderr(b"bb".to_vec()));
        buffer.push(out("cccccc"));
        assert_eq!(buffer.end(), 12);
        assert_eq!(buffer.bytes(), 12);
        let (bytes, next) = buffer.encode_from(4, usize::MAX);
        assert_eq!(next, 12);
        assert_eq!(
            decode_all(&bytes),
            vec![Frame::Stderr(b"bb".to_vec()), out("cccccc")]
        );
        assert!(buffer.can_resume_at(0) && buffer.can_resume_at(6) && buffer.can_resume_at(12));
        assert!(!buffer.can_resume_at(5), "not a frame boundary");

        buffer.acknowledge(6);
        assert_eq!(buffer.bytes(), 6);
        assert!(!buffer.can_resume_at(4), "acknowledged output is gone");
        assert!(buffer.can_resume_at(6));
        let (bytes, _) = buffer.encode_from(6, usize::MAX);
        assert_eq!(decode_all(&bytes), vec![out("cccccc")]);
        buffer.acknowledge(12);
        assert_eq!(buffer.bytes(), 0);
        assert!(buffer.can_resume_at(12));
    }

    #[test]
    fn writes_are_batched_but_never_split_a_frame() {
        let mut buffer = OutputBuffer::default();
        for _ in 0..10 {
            buffer.push(out(&"x".repeat(100)));
        }
        let (bytes, next) = buffer.encode_from(0, 350);
        assert_eq!(next, 300);
        assert_eq!(decode_all(&bytes).len(), 3);
        let (bytes, next) = buffer.encode_from(0, 10);
        assert_eq!(
            (decode_all(&bytes).len(), next),
            (1, 100),
            "at least one frame"
        );
    }
}
