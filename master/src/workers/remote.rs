//! Running one remote command on a worker: open a stream, send the request,
//! hand output to the caller as it arrives, relay an interrupt, read the outcome;
//! and when the connection breaks mid-command, wait for the worker to come back
//! and re-attach the command from the last output byte stored.

pub use crate::artifacts::Outgoing;
use crate::data::DataError;
use crate::worker_registry::{ConnectedWorker, WorkerRegistry};
use moonbot_worker::protocol::{
    CommandControl, CommandOpen, CommandOutcome, CommandRequest, Frame, RemoteCommand,
};
use moonbot_worker::transfer::{ChunkWriter, write_tree};
use moonbot_worker::transport::{FrameReader, StreamError, write_frame};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Why a remote command did not produce an outcome.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The connection to the worker broke (worker lost or stopped).
    #[error("lost the connection to the worker: {0}")]
    ConnectionLost(String),
    /// The worker broke the protocol.
    #[error("the worker sent something unexpected: {0}")]
    Protocol(String),
    /// Storing the output failed.
    #[error("storing output failed: {0}")]
    Sink(#[source] DataError),
    /// What the worker sent was refused (an upload too large or unsafe); the
    /// command was interrupted.
    #[error("{0}")]
    Refused(String),
}

/// Why an [`OutputSink`] did not take output.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Data(#[from] DataError),
    /// The output breaks a rule of the step (an upload over its size, an
    /// unsafe tar entry): the command is interrupted.
    #[error("{0}")]
    Refused(String),
}

impl From<SinkError> for RemoteError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::Data(e) => RemoteError::Sink(e),
            SinkError::Refused(why) => RemoteError::Refused(why),
        }
    }
}

/// Output of a remote command, as it arrives.
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Bytes appended to one of the command's `log_files`, by log name (a
    /// name the command asked for: anything else is a protocol error).
    LogFile(String, Vec<u8>),
    /// Bytes of an upload (only an upload command may send them: anything
    /// else is a protocol error).
    Data(Vec<u8>),
}

/// Where a remote command's output goes (a log, usually).
pub trait OutputSink {
    fn output(&mut self, output: Output) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Called every [`IDLE_TICK`] while the command runs, so output that is
    /// waiting for more (a quiet command) still reaches storage and viewers.
    fn idle(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// How often [`OutputSink::idle`] is called.
pub const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(500);

/// The worker a build runs on: its current connection, and where to find the
/// next one when that breaks.
pub struct WorkerLink<'a> {
    pub registry: &'a WorkerRegistry,
    /// The connection commands go to now.
    pub worker: ConnectedWorker,
    /// How long to wait for the worker to reconnect before giving up on a
    /// command (the worker's `reconnect_grace`).
    pub grace: Duration,
}

impl WorkerLink<'_> {
    /// Make sure there is a live connection to send the next command to:
    /// the current one, a newer one, or one that comes within the grace period.
    async fn ready(&mut self) -> Result<(), RemoteError> {
        if self.worker.conn.close_reason().is_none() {
            return Ok(());
        }
        self.reconnected("the connection to the worker was closed")
            .await
    }

    /// Wait up to the grace period for a connection newer than the current one.
    async fn reconnected(&mut self, why: &str) -> Result<(), RemoteError> {
        if self.grace.is_zero() || said_goodbye(&self.worker.conn) {
            return Err(RemoteError::ConnectionLost(why.to_string()));
        }
        tracing::warn!(
            worker = %self.worker.name,
            "lost the worker ({why}); waiting up to {} s for it to reconnect",
            self.grace.as_secs()
        );
        let deadline = tokio::time::Instant::now() + self.grace;
        match self
            .registry
            .connection_after(&self.worker.name, Some(self.worker.connection_id), deadline)
            .await
        {
            Some(worker) => {
                tracing::info!(worker = %worker.name, "worker is back");
                self.worker = worker;
                Ok(())
            }
            None => Err(RemoteError::ConnectionLost(format!(
                "{why}; the worker did not come back within {} s",
                self.grace.as_secs()
            ))),
        }
    }
}

/// Did the worker close the connection because it is shutting down (its
/// commands are stopped; waiting for it is pointless)?
fn said_goodbye(conn: &quinn::Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(close)) if &close.reason[..] == b"worker shutting down"
    )
}

/// Acknowledge output to the worker at least every this many bytes (and on
/// every idle tick), so it can forget what the master has stored.
const ACK_EVERY: u64 = 1 << 20;

/// Command ids start from the clock so a restarted master does not reuse the
/// id of a command an earlier run left on a worker.
fn next_command_id() -> u64 {
    static NEXT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    NEXT.get_or_init(|| {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        AtomicU64::new(micros << 8)
    })
    .fetch_add(1, Ordering::Relaxed)
}

/// Why one stream of a command ended without an outcome.
enum StreamEnd {
    /// The stream or connection broke: the command may still run on the worker.
    Broken(String),
    /// Anything else: final.
    Failed(RemoteError),
}

/// Run `command` on the worker of `link`. `sink` receives output in order;
/// when `interrupt` changes to `Some(reason)`, the worker is asked to stop the
/// command (the outcome then says `interrupted`). When the connection breaks,
/// the command is re-attached on the worker's next connection within the grace
/// period, from the exact output byte stored so far. A download's bytes
/// (`outgoing`) follow its request; a download is not re-sent on a new
/// stream (the worker dropped the partial file: the outcome says so).
pub async fn run<S: OutputSink>(
    link: &mut WorkerLink<'_>,
    command: RemoteCommand,
    outgoing: Option<Outgoing>,
    mut interrupt: watch::Receiver<Option<String>>,
    sink: &mut S,
) -> Result<CommandOutcome, RemoteError> {
    link.ready().await?;
    let id = next_command_id();
    // The only log files the worker may send: those this command follows.
    let followed: BTreeSet<String> = match &command {
        RemoteCommand::Shell(shell) => shell.io.log_files.keys().cloned().collect(),
        _ => BTreeSet::new(),
    };
    // Only an upload sends data.
    let uploads = matches!(
        command,
        RemoteCommand::UploadFile { .. } | RemoteCommand::UploadDirectory { .. }
    );
    let mut open = CommandOpen::Run(CommandRequest { id, command });
    let mut outgoing = outgoing;
    let mut received = 0u64;
    loop {
        let conn = link.worker.conn.clone();
        let stream = Stream {
            open: &open,
            followed: &followed,
            uploads,
            outgoing: outgoing.take(),
        };
        match on_stream(&conn, stream, &mut received, &mut interrupt, sink).await {
            Ok(outcome) if outcome.lost => {
                return Err(RemoteError::ConnectionLost(
                    outcome
                        .failure
                        .unwrap_or_else(|| "the worker lost the command".into()),
                ));
            }
            Ok(outcome) => return Ok(outcome),
            Err(StreamEnd::Failed(e)) => return Err(e),
            Err(StreamEnd::Broken(why)) => {
                let why = match conn.close_reason() {
                    Some(reason) => reason.to_string(),
                    None => why,
                };
                // The user may stop the build while its worker is away.
                let mut stop = interrupt.clone();
                let waited = tokio::select! {
                    waited = link.reconnected(&why) => waited,
                    _ = stop.wait_for(Option::is_some) => {
                        return Ok(CommandOutcome {
                            interrupted: true,
                            failure: Some(format!("stopped while the worker was away ({why})")),
                            ..CommandOutcome::default()
                        });
                    }
                };
                waited?;
                open = CommandOpen::Resume { id, received };
            }
        }
    }
}

/// What one stream of a command sends and may receive.
struct Stream<'a> {
    open: &'a CommandOpen,
    followed: &'a BTreeSet<String>,
    /// Whether the worker may send [`Frame::Data`].
    uploads: bool,
    /// A download's bytes, sent after the request.
    outgoing: Option<Outgoing>,
}

/// Send `open` on a new stream of `conn` and relay the command until its outcome
/// or until the stream breaks. `received` counts output bytes stored so far.
async fn on_stream<S: OutputSink>(
    conn: &quinn::Connection,
    Stream {
        open,
        followed,
        uploads,
        outgoing,
    }: Stream<'_>,
    received: &mut u64,
    interrupt: &mut watch::Receiver<Option<String>>,
    sink: &mut S,
) -> Result<CommandOutcome, StreamEnd> {
    let broken = |e: StreamError| match e {
        StreamError::Frame(f) => StreamEnd::Failed(RemoteError::Protocol(f.to_string())),
        other => StreamEnd::Broken(other.to_string()),
    };
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| StreamEnd::Broken(e.to_string()))?;
    write_frame(&mut send, &Frame::json(open))
        .await
        .map_err(broken)?;
    let mut reader = FrameReader::new(recv);
    let mut interrupted = interrupt.borrow().is_some();
    if let Some(outgoing) = outgoing
        && !interrupted
    {
        send_outgoing(&mut send, outgoing, interrupt)
            .await
            .map_err(|e| match e {
                OutgoingError::Stream(e) => broken(e),
                OutgoingError::Read(why) => StreamEnd::Failed(RemoteError::Refused(why)),
            })?;
        interrupted = interrupt.borrow().is_some();
    }
    if interrupted {
        send_interrupt(&mut send, interrupt).await.map_err(broken)?;
    }
    let mut acked = *received;
    let mut idle = tokio::time::interval(IDLE_TICK);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = idle.tick() => {
                sink.idle().await.map_err(|e| StreamEnd::Failed(e.into()))?;
                if *received > acked {
                    acked = *received;
                    let ack = CommandControl::Ack { received: acked };
                    write_frame(&mut send, &Frame::json(&ack)).await.map_err(broken)?;
                }
            }
            frame = reader.next() => {
                let frame = frame.map_err(broken)?;
                let len = frame.as_ref().map_or(0, Frame::output_len) as u64;
                let output = match frame {
                    Some(Frame::Stdout(bytes)) => Output::Stdout(bytes),
                    Some(Frame::Stderr(bytes)) => Output::Stderr(bytes),
                    Some(Frame::LogFile(body)) => match Frame::split_log_file(&body) {
                        Some((name, bytes)) if followed.contains(name) => {
                            Output::LogFile(name.to_string(), bytes.to_vec())
                        }
                        _ => {
                            return Err(StreamEnd::Failed(RemoteError::Protocol(
                                "output for a log file this command does not follow".into(),
                            )));
                        }
                    },
                    Some(Frame::Data(bytes)) if uploads => Output::Data(bytes),
                    Some(Frame::Data(_)) => {
                        return Err(StreamEnd::Failed(RemoteError::Protocol(
                            "data from a command that uploads nothing".into(),
                        )));
                    }
                    Some(json @ Frame::Json(_)) => {
                        let outcome: CommandOutcome = json
                            .parse()
                            .map_err(|e| StreamEnd::Failed(RemoteError::Protocol(e.to_string())))?;
                        let _ = send.finish();
                        return Ok(outcome);
                    }
                    None => {
                        return Err(StreamEnd::Broken(
                            "the worker closed the command stream without an outcome".into(),
                        ));
                    }
                };
                *received += len;
                if let Err(e) = sink.output(output).await {
                    // Stop the worker from sending more of what was refused.
                    let reason = CommandControl::Interrupt { reason: e.to_string() };
                    let _ = write_frame(&mut send, &Frame::json(&reason)).await;
                    let _ = send.finish();
                    return Err(StreamEnd::Failed(e.into()));
                }
                if *received - acked >= ACK_EVERY {
                    acked = *received;
                    let ack = CommandControl::Ack { received: acked };
                    write_frame(&mut send, &Frame::json(&ack)).await.map_err(broken)?;
                }
            }
            changed = interrupt.changed(), if !interrupted => {
                if changed.is_err() {
                    interrupted = true;
                    continue;
                }
                if interrupt.borrow().is_some() {
                    interrupted = true;
                    send_interrupt(&mut send, interrupt).await.map_err(broken)?;
                }
            }
        }
    }
}

/// Why a download's bytes were not all sent.
enum OutgoingError {
    Stream(StreamError),
    /// The master's own file could not be read.
    Read(String),
}

/// Send a download's bytes and its end; stops early (the caller interrupts)
/// when the build is stopped meanwhile.
async fn send_outgoing(
    send: &mut quinn::SendStream,
    outgoing: Outgoing,
    interrupt: &watch::Receiver<Option<String>>,
) -> Result<(), OutgoingError> {
    use tokio::io::AsyncReadExt;
    const CHUNK: usize = moonbot_worker::protocol::OUTPUT_CHUNK;
    let mut size = 0u64;
    match outgoing {
        Outgoing::Bytes(bytes) => {
            for chunk in bytes.chunks(CHUNK) {
                write_frame(send, &Frame::Data(chunk.to_vec()))
                    .await
                    .map_err(OutgoingError::Stream)?;
                size += chunk.len() as u64;
            }
        }
        Outgoing::File(path) => {
            let read_error =
                |e: std::io::Error| OutgoingError::Read(format!("{}: {e}", path.display()));
            let mut file = tokio::fs::File::open(&path).await.map_err(read_error)?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                if interrupt.borrow().is_some() {
                    return Ok(());
                }
                let n = file.read(&mut buf).await.map_err(read_error)?;
                if n == 0 {
                    break;
                }
                write_frame(send, &Frame::Data(buf[..n].to_vec()))
                    .await
                    .map_err(OutgoingError::Stream)?;
                size += n as u64;
            }
        }
        Outgoing::Tree { dir, compress } => {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
            let tar = tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut out = ChunkWriter::new(|chunk| {
                    tx.blocking_send(chunk)
                        .map_err(|_| std::io::Error::other("the download stopped"))
                });
                write_tree(&dir, compress, &mut out)?;
                out.flush()
            });
            while let Some(chunk) = rx.recv().await {
                if interrupt.borrow().is_some() {
                    return Ok(());
                }
                size += chunk.len() as u64;
                write_frame(send, &Frame::Data(chunk))
                    .await
                    .map_err(OutgoingError::Stream)?;
            }
            tar.await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                .map_err(|e| OutgoingError::Read(format!("could not read the directory: {e}")))?;
        }
    }
    write_frame(send, &Frame::json(&CommandControl::EndOfData { size }))
        .await
        .map_err(OutgoingError::Stream)
}

async fn send_interrupt(
    send: &mut quinn::SendStream,
    interrupt: &watch::Receiver<Option<String>>,
) -> Result<(), StreamError> {
    let reason = interrupt.borrow().clone().unwrap_or_default();
    write_frame(send, &Frame::json(&CommandControl::Interrupt { reason })).await
}
