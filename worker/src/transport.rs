//! Reading and writing [`Frame`]s on QUIC streams — the only I/O glue around
//! [`crate::protocol`], shared by master and worker.

use crate::protocol::{Frame, FrameError, MAX_FRAME_LEN};
use quinn::{RecvStream, SendStream};

/// Why a stream could not deliver a frame.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The peer sent something that is not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream or connection failed while reading.
    #[error("reading from the peer failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The stream or connection failed while writing.
    #[error("writing to the peer failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The peer closed the stream in the middle of a frame.
    #[error("the peer closed the stream in the middle of a frame")]
    Truncated,
}

/// Reads frames one at a time from a receive stream.
///
/// Cancel-safe: bytes of a frame that has not fully arrived stay in the reader,
/// so [`FrameReader::next`] can be one branch of a `select!` that another branch
/// (an interrupt, a timer) wins without losing the stream's framing.
pub struct FrameReader {
    recv: RecvStream,
    /// Received bytes not yet returned as frames.
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new(recv: RecvStream) -> Self {
        FrameReader {
            recv,
            buf: Vec::new(),
        }
    }

    /// The next frame, or `None` when the peer finished the stream cleanly
    /// between two frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, StreamError> {
        loop {
            if let Some((frame, used)) = Frame::decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Some(frame));
            }
            // `read_chunk` is cancel-safe: a dropped call loses no data.
            match self.recv.read_chunk(MAX_FRAME_LEN + 4, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err(StreamError::Truncated),
                Err(e) => return Err(StreamError::Read(e)),
            }
        }
    }

    /// Give back the underlying stream (e.g. to stop it).
    pub fn into_inner(self) -> RecvStream {
        self.recv
    }
}

/// Write one frame. Output frames go out as length + kind + the bytes as given.
pub async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<(), StreamError> {
    send.write_all(&frame.encode()).await?;
    Ok(())
}
