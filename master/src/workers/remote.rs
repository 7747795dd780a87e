//! Running one remote command on a worker: open a stream, send the request,
//! hand output to the caller as it arrives, relay an interrupt, read the outcome.

use moonbot_worker::protocol::{
    CommandControl, CommandOutcome, CommandRequest, Frame, RemoteCommand,
};
use moonbot_worker::transport::{FrameReader, StreamError, write_frame};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

static NEXT_COMMAND_ID: AtomicU64 = AtomicU64::new(1);

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
    Sink(String),
}

impl From<StreamError> for RemoteError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Frame(f) => RemoteError::Protocol(f.to_string()),
            StreamError::Truncated => RemoteError::ConnectionLost("stream ended mid-frame".into()),
            other => RemoteError::ConnectionLost(other.to_string()),
        }
    }
}

/// Output of a remote command, as it arrives.
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// Where a remote command's output goes (a log, usually).
pub trait OutputSink {
    fn output(&mut self, output: Output) -> impl Future<Output = Result<(), String>> + Send;
    /// Called every [`IDLE_TICK`] while the command runs, so output that is
    /// waiting for more (a quiet command) still reaches storage and viewers.
    fn idle(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// How often [`OutputSink::idle`] is called.
pub const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(500);

/// Run `command` on the worker behind `conn`. `sink` receives output in order;
/// when `interrupt` changes to `Some(reason)`, the worker is asked to stop the
/// command (the outcome then says `interrupted`).
pub async fn run<S: OutputSink>(
    conn: &quinn::Connection,
    command: RemoteCommand,
    mut interrupt: watch::Receiver<Option<String>>,
    sink: &mut S,
) -> Result<CommandOutcome, RemoteError> {
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| RemoteError::ConnectionLost(e.to_string()))?;
    let request = CommandRequest {
        id: NEXT_COMMAND_ID.fetch_add(1, Ordering::Relaxed),
        command,
    };
    write_frame(&mut send, &Frame::json(&request)).await?;
    let mut reader = FrameReader::new(recv);
    let mut interrupted = interrupt.borrow().is_some();
    if interrupted {
        send_interrupt(&mut send, &interrupt).await?;
    }
    let mut idle = tokio::time::interval(IDLE_TICK);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = idle.tick() => sink.idle().await.map_err(RemoteError::Sink)?,
            frame = reader.next() => {
                match frame? {
                    Some(Frame::Stdout(bytes)) => {
                        sink.output(Output::Stdout(bytes)).await.map_err(RemoteError::Sink)?;
                    }
                    Some(Frame::Stderr(bytes)) => {
                        sink.output(Output::Stderr(bytes)).await.map_err(RemoteError::Sink)?;
                    }
                    Some(json @ Frame::Json(_)) => {
                        let outcome: CommandOutcome = json.parse().map_err(|e| RemoteError::Protocol(e.to_string()))?;
                        let _ = send.finish();
                        return Ok(outcome);
                    }
                    None => return Err(RemoteError::ConnectionLost("the worker closed the command stream without an outcome".into())),
                }
            }
            changed = interrupt.changed(), if !interrupted => {
                if changed.is_err() {
                    interrupted = true;
                    continue;
                }
                if interrupt.borrow().is_some() {
                    interrupted = true;
                    send_interrupt(&mut send, &interrupt).await?;
                }
            }
        }
    }
}

async fn send_interrupt(
    send: &mut quinn::SendStream,
    interrupt: &watch::Receiver<Option<String>>,
) -> Result<(), RemoteError> {
    let reason = interrupt.borrow().clone().unwrap_or_default();
    write_frame(send, &Frame::json(&CommandControl::Interrupt { reason })).await?;
    Ok(())
}
