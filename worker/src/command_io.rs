//! What flows between a running command and the stream that carries it:
//! its output events (process output, followed files, upload data) and a
//! download's input. Shared by the runner, the transfers and the session,
//! so none of them imports another for its types.

/// Output of a running command, in the order it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEvent {
    /// One read from the command's standard output (at most
    /// [`crate::protocol::OUTPUT_CHUNK`] bytes).
    Stdout(Vec<u8>),
    /// One read from the command's standard error.
    Stderr(Vec<u8>),
    /// Bytes appended to a followed file (the command's `log_files`).
    LogFile { name: String, bytes: Vec<u8> },
    /// Bytes of an upload.
    Data(Vec<u8>),
}

/// What the master sends a download: its bytes, then the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Data(Vec<u8>),
    /// Every byte is sent; `size` in all.
    End {
        size: u64,
    },
}
