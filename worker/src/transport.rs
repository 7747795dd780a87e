//! Reading and writing [`Frame`]s on QUIC streams — the only I/O glue around
//! [`crate::protocol`], shared by master and worker.

use crate::protocol::{Frame, FrameError};
use quinn::{RecvStream, SendStream};

/// Why a stream could not deliver a frame.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The peer sent something that is not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream or connection failed while reading.
    #[error("reading from the peer failed: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// The stream or connection failed while writing.
    #[error("writing to the peer failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The peer closed the stream in the middle of a frame.
    #[error("the peer closed the stream in the middle of a frame")]
    Truncated,
}

/// Reads frames one at a time from a receive stream.
pub struct FrameReader {
    recv: RecvStream,
}

impl FrameReader {
    pub fn new(recv: RecvStream) -> Self {
        FrameReader { recv }
    }

    /// The next frame, or `None` when the peer finished the stream cleanly
    /// between two frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, StreamError> {
        let mut len = [0u8; 4];
        match self.recv.read_exact(&mut len).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(StreamError::Truncated),
            Err(e) => return Err(e.into()),
        }
        let len = Frame::check_len(u32::from_be_bytes(len))?;
        let mut body = vec![0u8; len];
        match self.recv.read_exact(&mut body).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(StreamError::Truncated),
            Err(e) => return Err(e.into()),
        }
        Ok(Some(Frame::decode_body(body)?))
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
