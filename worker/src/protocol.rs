//! The wire protocol between master and worker: message types and framing.
//!
//! This module does no I/O. It defines what travels on the QUIC streams and turns
//! it into bytes and back, so both ends (and the tests) share one definition and a
//! malformed frame is an ordinary `Err`, never a panic.
//!
//! # Streams
//!
//! * **Control stream**: the worker opens one bidirectional stream right after the
//!   handshake and sends [`WorkerMessage::Hello`]. The master answers
//!   [`MasterMessage::Welcome`] (the worker counts itself connected only then) or
//!   [`MasterMessage::Refused`] and closes. Afterwards the worker sends
//!   [`WorkerMessage::KeepAlive`] periodically and the master echoes it; the master
//!   may send [`MasterMessage::Shutdown`].
//!   A worker that is asked to stop gracefully sends
//!   [`WorkerMessage::GracefulShutdown`]; the master gives it no new builds and
//!   sends [`MasterMessage::Shutdown`] once its last build has finished.
//!   Certificate renewal also travels here: the worker sends
//!   [`WorkerMessage::RenewCertificate`] (a CSR made from its existing key) when
//!   less than a third of its certificate's lifetime is left, and the master
//!   answers [`MasterMessage::RenewedCertificate`] (same name, same lifetime,
//!   same key) or [`MasterMessage::Refused`].
//! * **Enrollment**: a worker that has no certificate yet connects *without* a
//!   client certificate (the master allows that, but such a connection may do
//!   nothing else), opens one bidirectional stream and sends
//!   [`WorkerMessage::Enroll`] with the secret of its one-time enrollment token
//!   (see [`crate::enroll`]) and a CSR. The master answers
//!   [`MasterMessage::Enrolled`] (the signed certificate and the CA) or
//!   [`MasterMessage::Refused`] (used, expired or unknown token, wrong name) and
//!   closes the connection. The worker checks the master's certificate against
//!   the CA whose SHA-256 fingerprint the token carries, so the master's chain
//!   includes the CA certificate.
//! * **Command streams**: the master opens one bidirectional stream per remote
//!   command and writes a [`CommandOpen::Run`]. The worker answers with any number
//!   of output frames ([`Frame::Stdout`], [`Frame::Stderr`]) and exactly one final
//!   [`CommandOutcome`], then finishes its send side. While the command runs the
//!   master may write [`CommandControl::Interrupt`] on the same stream, and
//!   acknowledges output with [`CommandControl::Ack`].
//!
//! # Re-attaching a command
//!
//! A command outlives its stream. When the connection breaks, the worker keeps
//! the command running and keeps its output (everything the master has not
//! acknowledged, up to [`MAX_BUFFERED_OUTPUT`]; past that the command waits for
//! room, as it would on a slow network). When the worker is back, the master opens
//! a new command stream with [`CommandOpen::Resume`], saying how many output bytes
//! it has; the worker sends the rest from exactly there, so the log has neither a
//! gap nor a duplicate. Output offsets count payload bytes of stdout and stderr
//! frames together, in the order sent. A worker that no longer has the command
//! answers with an outcome whose `lost` is set. A command nobody re-attaches within
//! the grace period the welcome announced is stopped.
//!
//! # Framing
//!
//! Every frame is `u32` big-endian length of what follows, one kind byte, payload.
//! Control payloads are JSON; output payloads are the raw bytes the process wrote,
//! so a large log is never re-encoded.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// ALPN protocol name both ends insist on.
pub const ALPN: &[u8] = b"moonbot/1";
/// Version of the message set, sent in the hello.
pub const PROTOCOL_VERSION: u32 = 2;
/// Default UDP port of the master's QUIC listener.
pub const DEFAULT_PORT: u16 = 9989;
/// A worker certificate's validity starts this long before it is signed (clock
/// skew between master and worker); the renewal schedule leaves it out of the
/// certificate's lifetime.
pub const CERTIFICATE_BACKDATE: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// Largest frame either side accepts (kind byte + payload).
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// Output is read from processes in pieces of at most this size.
pub const OUTPUT_CHUNK: usize = 64 * 1024;
/// Most output bytes a worker keeps for one command that the master has not
/// acknowledged (while disconnected, or on a slow link).
pub const MAX_BUFFERED_OUTPUT: usize = 64 << 20;

const KIND_JSON: u8 = 0;
const KIND_STDOUT: u8 = 1;
const KIND_STDERR: u8 = 2;
const KIND_LOG_FILE: u8 = 3;
const KIND_DATA: u8 = 4;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A JSON control message (which one depends on the stream and direction).
    Json(Vec<u8>),
    /// Bytes the command wrote to its standard output.
    Stdout(Vec<u8>),
    /// Bytes the command wrote to its standard error.
    Stderr(Vec<u8>),
    /// Bytes appended to a file the command's `log_files` follows: one byte
    /// of name length, the log's name, then the bytes ([`Frame::log_file`]).
    LogFile(Vec<u8>),
    /// Bytes of a transfer: a file or tar stream being uploaded (worker to
    /// master), or a file being downloaded (master to worker).
    Data(Vec<u8>),
}

/// Why bytes could not be read as a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLarge(usize),
    /// A frame with no kind byte.
    #[error("empty frame")]
    Empty,
    /// The kind byte is not one this version knows.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A JSON frame that does not hold the expected message.
    #[error("malformed message: {0}")]
    BadJson(String),
}

impl Frame {
    /// Frame a JSON message.
    pub fn json<T: Serialize>(msg: &T) -> Frame {
        Frame::Json(serde_json::to_vec(msg).expect("protocol messages always serialize"))
    }

    /// Parse the JSON payload of this frame as `T`.
    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, FrameError> {
        match self {
            Frame::Json(bytes) => {
                serde_json::from_slice(bytes).map_err(|e| FrameError::BadJson(e.to_string()))
            }
            other => Err(FrameError::BadJson(format!(
                "expected a JSON frame, got {}",
                other.kind_name()
            ))),
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Frame::Json(_) => "json",
            Frame::Stdout(_) => "stdout",
            Frame::Stderr(_) => "stderr",
            Frame::LogFile(_) => "log file",
            Frame::Data(_) => "data",
        }
    }

    /// A [`Frame::LogFile`] of `bytes` for the log `name` (at most 255 bytes).
    pub fn log_file(name: &str, bytes: &[u8]) -> Frame {
        let name = &name.as_bytes()[..name.len().min(255)];
        let mut body = Vec::with_capacity(1 + name.len() + bytes.len());
        body.push(name.len() as u8);
        body.extend_from_slice(name);
        body.extend_from_slice(bytes);
        Frame::LogFile(body)
    }

    /// The log name and bytes of a [`Frame::LogFile`] body; `None` when the
    /// body is shorter than the name it announces, or the name is not UTF-8.
    pub fn split_log_file(body: &[u8]) -> Option<(&str, &[u8])> {
        let (&len, rest) = body.split_first()?;
        let len = len as usize;
        if rest.len() < len {
            return None;
        }
        let name = std::str::from_utf8(&rest[..len]).ok()?;
        Some((name, &rest[len..]))
    }

    /// Append the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let (kind, payload) = match self {
            Frame::Json(p) => (KIND_JSON, p),
            Frame::Stdout(p) => (KIND_STDOUT, p),
            Frame::Stderr(p) => (KIND_STDERR, p),
            Frame::LogFile(p) => (KIND_LOG_FILE, p),
            Frame::Data(p) => (KIND_DATA, p),
        };
        out.extend_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
        out.push(kind);
        out.extend_from_slice(payload);
    }

    /// The encoded frame as a fresh buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.payload_len());
        self.encode_into(&mut out);
        out
    }

    /// Output bytes this frame carries (0 for a JSON frame): what output
    /// offsets count.
    pub fn output_len(&self) -> usize {
        match self {
            Frame::Json(_) => 0,
            Frame::Stdout(p) | Frame::Stderr(p) | Frame::LogFile(p) | Frame::Data(p) => p.len(),
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Frame::Json(p)
            | Frame::Stdout(p)
            | Frame::Stderr(p)
            | Frame::LogFile(p)
            | Frame::Data(p) => p.len(),
        }
    }

    /// Check a length prefix before reading that many bytes.
    pub fn check_len(len: u32) -> Result<usize, FrameError> {
        let len = len as usize;
        if len == 0 {
            Err(FrameError::Empty)
        } else if len > MAX_FRAME_LEN {
            Err(FrameError::TooLarge(len))
        } else {
            Ok(len)
        }
    }

    /// Decode a frame body (kind byte + payload, without the length prefix).
    pub fn decode_body(mut body: Vec<u8>) -> Result<Frame, FrameError> {
        if body.is_empty() {
            return Err(FrameError::Empty);
        }
        let kind = body.remove(0);
        match kind {
            KIND_JSON => Ok(Frame::Json(body)),
            KIND_STDOUT => Ok(Frame::Stdout(body)),
            KIND_STDERR => Ok(Frame::Stderr(body)),
            KIND_LOG_FILE => Ok(Frame::LogFile(body)),
            KIND_DATA => Ok(Frame::Data(body)),
            k => Err(FrameError::UnknownKind(k)),
        }
    }

    /// Decode one complete frame from the front of `buf`; returns the frame and
    /// how many bytes it used, or `Ok(None)` when `buf` holds only part of a frame.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = Frame::check_len(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]))?;
        if buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = Frame::decode_body(buf[4..4 + len].to_vec())?;
        Ok(Some((frame, 4 + len)))
    }
}

/// What the worker tells the master about itself (Buildbot's "worker info").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WorkerInfo {
    /// moonbot-worker version.
    pub version: String,
    /// Operating system (`linux`, `macos` …).
    pub os: String,
    /// CPU architecture (`x86_64`, `aarch64` …).
    pub arch: String,
    /// Number of CPUs the worker machine has.
    pub cpus: u32,
    /// Host name of the worker machine.
    pub hostname: String,
    /// Who to contact about this worker (from `WDIR/info/admin`).
    pub admin: Option<String>,
    /// Free text about the host (from `WDIR/info/host`).
    pub host_description: Option<String>,
}

/// Messages the worker sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// First message on a new connection.
    Hello {
        /// The worker's name; must equal the name in its certificate.
        name: String,
        /// [`PROTOCOL_VERSION`] of the worker.
        protocol: u32,
        /// Facts about the worker machine.
        info: WorkerInfo,
    },
    /// Periodic proof of life; the master echoes it.
    KeepAlive,
    /// `moonbot-worker stop` without `--now`: give me no new builds, and tell me
    /// ([`MasterMessage::Shutdown`]) when the running ones have finished.
    GracefulShutdown,
    /// The first and only message of an enrollment connection (one made without
    /// a client certificate).
    Enroll {
        /// The secret part of the enrollment token (base64url, 32 bytes).
        token: String,
        /// PEM certificate signing request; its common name must be the name the
        /// token was made for. The private key stays on the worker.
        csr: String,
        /// Facts about the worker machine (for the master's log).
        info: WorkerInfo,
    },
    /// On the control stream of a welcomed worker: a new certificate, please.
    RenewCertificate {
        /// PEM CSR made from the worker's current key, for its current name.
        csr: String,
    },
}

/// Messages the master sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MasterMessage {
    /// The worker is accepted and may receive commands.
    Welcome {
        /// The master's name (for the worker's log).
        master: String,
        /// How often the worker should send [`WorkerMessage::KeepAlive`], in seconds.
        keepalive_interval_s: u64,
        /// How long the master waits for this worker to come back and re-attach a
        /// running command after the connection breaks, in seconds (0: it does not).
        #[serde(default)]
        reattach_grace_s: u64,
    },
    /// The worker is not accepted; the connection is closed after this.
    Refused { reason: String },
    /// Echo of a keep-alive.
    KeepAlive,
    /// The master is dropping this worker (e.g. a reconfig removed it).
    Shutdown {
        reason: String,
        /// The worker should exit instead of reconnecting: an admin stopped
        /// or killed it (Buildbot's worker `stop` and `kill`). Absent from
        /// older masters: false.
        #[serde(default)]
        exit: bool,
    },
    /// Answer to [`WorkerMessage::Enroll`]: the worker is enrolled.
    Enrolled {
        /// The worker's certificate, PEM.
        certificate: String,
        /// The master's CA certificate, PEM (its fingerprint is the token's).
        ca: String,
    },
    /// Answer to [`WorkerMessage::RenewCertificate`]: the new certificate, PEM.
    RenewedCertificate { certificate: String },
}

/// The first frame on a command stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandOpen {
    /// Start a command.
    Run(CommandRequest),
    /// Continue a command started on an earlier stream: send its output from
    /// byte `received` on, then its outcome.
    Resume { id: u64, received: u64 },
}

/// What to run, with the id both ends use for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// Identifies the command in both ends' logs.
    pub id: u64,
    pub command: RemoteCommand,
}

/// Commands a worker can run.
///
/// Relative paths are relative to the worker's build directory (`WDIR/builds`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RemoteCommand {
    /// Run a process.
    Shell(ShellCommand),
    /// Create a directory and its parents.
    Mkdir { path: String },
    /// Remove a directory tree (no error when it does not exist).
    Rmdir { path: String },
    /// Report whether a path exists and what it is.
    Stat { path: String },
    /// Remove a file (no error when it does not exist).
    Rmfile { path: String },
    /// Copy a directory tree to `to` (created; an existing one is merged into).
    Cpdir { from: String, to: String },
    /// The paths matching a glob pattern (relative patterns under the build
    /// directory), in [`CommandOutcome::files`].
    Glob { pattern: String },
    /// The names in a directory, in [`CommandOutcome::files`].
    Listdir { path: String },
    /// Send a file's bytes as [`Frame::Data`]. More than `max_size` bytes
    /// fail the command (the master checks this itself too).
    UploadFile { path: String, max_size: Option<u64> },
    /// Send a directory as a tar stream of [`Frame::Data`], compressed when
    /// asked (`gz` or `bz2`); symbolic links are followed.
    UploadDirectory {
        path: String,
        compress: Option<Compression>,
        max_size: Option<u64>,
    },
    /// Write the [`Frame::Data`] the master sends after this request to
    /// `path`, with permission bits `mode` (default 0644); the file appears
    /// only once [`CommandControl::EndOfData`] came and the size matches.
    DownloadFile {
        path: String,
        mode: Option<u32>,
        size: u64,
    },
    /// Unpack the tar stream of [`Frame::Data`] the master sends after this
    /// request (compressed as said) into `path`, which it replaces only once
    /// [`CommandControl::EndOfData`] came and the sizes agree.
    DownloadDirectory {
        path: String,
        compress: Option<Compression>,
    },
}

/// How a directory upload's tar stream is compressed (Buildbot's `compress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Gz,
    Bz2,
}

impl Compression {
    /// `gz` or `bz2`, as master.lua writes it.
    pub fn parse(name: &str) -> Option<Compression> {
        match name {
            "gz" => Some(Compression::Gz),
            "bz2" => Some(Compression::Bz2),
            _ => None,
        }
    }
}

/// What to run and how, for [`RemoteCommand::Shell`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellCommand {
    /// The program and its arguments, run without a shell; or a string for `/bin/sh -c`.
    pub command: CommandLine,
    /// Working directory (relative to the build directory); created if missing.
    pub workdir: String,
    /// Extra environment variables; a `None` value removes the variable.
    #[serde(default)]
    pub env: BTreeMap<String, Option<String>>,
    /// Kill the command after this many seconds without output.
    pub timeout_s: Option<u64>,
    /// Kill the command after this many seconds in all.
    pub max_time_s: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when the command is stopped.
    #[serde(default = "default_sigterm_grace")]
    pub sigterm_grace_s: u64,
    /// What goes in and out besides the pipes' defaults.
    #[serde(default)]
    pub io: CommandIo,
}

fn default_sigterm_grace() -> u64 {
    5
}

/// A command's input, which output is kept, and how it is interrupted
/// (Buildbot's `want_stdout`, `want_stderr`, `initial_stdin`,
/// `interruptSignal` and `usePTY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandIo {
    /// Keep the command's stdout (false: it goes to `/dev/null`).
    pub want_stdout: bool,
    /// Keep the command's stderr (false: it goes to `/dev/null`).
    pub want_stderr: bool,
    /// Written to the command's stdin, which is then closed (none: `/dev/null`).
    pub initial_stdin: Option<String>,
    /// The signal an interrupt sends first (`TERM`, `INT`, `HUP`, `QUIT`,
    /// `KILL`, `USR1`, `USR2`; default `TERM`); SIGKILL follows after the grace time.
    pub interrupt_signal: Option<String>,
    /// Run the command on a pseudo-terminal: it sees a terminal, and its
    /// stdout and stderr arrive together as stdout.
    pub use_pty: bool,
    /// Log name → a file (relative to the working directory) whose appended
    /// bytes are sent as [`Frame::LogFile`] while the command runs, and once
    /// more when it has ended.
    pub log_files: BTreeMap<String, String>,
}

impl Default for CommandIo {
    fn default() -> Self {
        CommandIo {
            want_stdout: true,
            want_stderr: true,
            initial_stdin: None,
            interrupt_signal: None,
            use_pty: false,
            log_files: BTreeMap::new(),
        }
    }
}

/// The signal names [`CommandIo::interrupt_signal`] may give.
pub const INTERRUPT_SIGNALS: [&str; 7] = ["TERM", "INT", "HUP", "QUIT", "KILL", "USR1", "USR2"];

/// A command line: argv (no shell) or one shell string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    Argv(Vec<String>),
    Shell(String),
}

impl CommandLine {
    /// The argv that is actually executed.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandLine::Argv(v) => v.clone(),
            CommandLine::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }

    /// A one-line rendering for logs and step descriptions.
    pub fn display(&self) -> String {
        match self {
            CommandLine::Argv(v) => v.join(" "),
            CommandLine::Shell(s) => s.clone(),
        }
    }
}

/// Sent by the master on a command stream while the command runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandControl {
    /// Stop the command: SIGTERM to its process group, SIGKILL after the grace time.
    Interrupt { reason: String },
    /// The master has the first `received` output bytes; the worker may forget them.
    Ack { received: u64 },
    /// A download's bytes are all sent (`size` in all).
    EndOfData { size: u64 },
}

/// The last frame the worker writes on a command stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CommandOutcome {
    /// Exit code of the process, if it exited normally.
    pub rc: Option<i32>,
    /// Signal that ended the process, if any.
    pub signal: Option<i32>,
    /// The command was stopped by [`CommandControl::Interrupt`].
    #[serde(default)]
    pub interrupted: bool,
    /// Why the worker ended the command itself, or could not run it
    /// (e.g. "command timed out: 1200 seconds without output", "could not start `make`: …").
    pub failure: Option<String>,
    /// Wall-clock time the command took, in milliseconds.
    pub elapsed_ms: u64,
    /// The answer to [`RemoteCommand::Stat`].
    pub stat: Option<StatResult>,
    /// The answer to [`RemoteCommand::Glob`] and [`RemoteCommand::Listdir`].
    #[serde(default)]
    pub files: Option<Vec<String>>,
    /// The answer to a [`CommandOpen::Resume`] for a command this worker no
    /// longer has (it was restarted, or nobody re-attached it in time).
    #[serde(default)]
    pub lost: bool,
}

impl CommandOutcome {
    /// Did the command do what was asked (exit 0, no failure, not interrupted)?
    pub fn succeeded(&self) -> bool {
        self.rc == Some(0) && self.failure.is_none() && !self.interrupted
    }
}

/// What [`RemoteCommand::Stat`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatResult {
    pub exists: bool,
    pub is_dir: bool,
    pub is_file: bool,
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_one_buffer() {
        let frames = vec![
            Frame::json(&WorkerMessage::KeepAlive),
            Frame::Stdout(b"hello\n".to_vec()),
            Frame::Stderr(vec![0, 159, 146, 150]),
            Frame::Stdout(Vec::new()),
        ];
        let mut buf = Vec::new();
        for f in &frames {
            f.encode_into(&mut buf);
        }
        let mut decoded = Vec::new();
        let mut rest = &buf[..];
        while let Some((frame, used)) = Frame::decode(rest).unwrap() {
            decoded.push(frame);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        assert_eq!(decoded, frames);
    }

    #[test]
    fn a_log_file_frame_carries_its_log_name() {
        let frame = Frame::log_file("test.log", b"line\n");
        let decoded = Frame::decode(&frame.encode()).unwrap().unwrap().0;
        assert_eq!(decoded, frame);
        let Frame::LogFile(body) = &decoded else {
            panic!("{decoded:?}")
        };
        assert_eq!(
            Frame::split_log_file(body),
            Some(("test.log", &b"line\n"[..]))
        );
        assert_eq!(decoded.output_len(), body.len());
        // A name longer than the body, or not UTF-8, is no log file.
        assert_eq!(Frame::split_log_file(&[9, b'a']), None);
        assert_eq!(Frame::split_log_file(&[1, 0xff, b'x']), None);
        assert_eq!(Frame::split_log_file(&[]), None);
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let buf = Frame::Stdout(b"abcdef".to_vec()).encode();
        for cut in 0..buf.len() {
            assert_eq!(Frame::decode(&buf[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(Frame::decode(&[0, 0, 0, 0]), Err(FrameError::Empty));
        assert_eq!(
            Frame::decode(&[0xff, 0, 0, 0]),
            Err(FrameError::TooLarge(0xff00_0000))
        );
        assert_eq!(
            Frame::decode(&[0, 0, 0, 1, 9]),
            Err(FrameError::UnknownKind(9))
        );
        let not_hello = Frame::Json(b"{\"type\":\"nope\"}".to_vec());
        assert!(matches!(
            not_hello.parse::<WorkerMessage>(),
            Err(FrameError::BadJson(_))
        ));
        assert!(Frame::Stdout(vec![]).parse::<MasterMessage>().is_err());
    }

    #[test]
    fn command_json_shape_is_stable() {
        let req = CommandOpen::Run(CommandRequest {
            id: 7,
            command: RemoteCommand::Shell(ShellCommand {
                command: CommandLine::Argv(vec!["echo".into(), "hi".into()]),
                workdir: "hello/build".into(),
                env: BTreeMap::from([("CC".into(), Some("clang".into()))]),
                timeout_s: Some(1200),
                max_time_s: None,
                sigterm_grace_s: 5,
                io: Default::default(),
            }),
        });
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["type"], "run");
        assert_eq!(json["id"], 7);
        assert_eq!(json["command"]["kind"], "shell");
        assert_eq!(json["command"]["command"][0], "echo");
        let back: CommandOpen = serde_json::from_value(json).unwrap();
        assert_eq!(back, req);
        let resume: CommandOpen =
            serde_json::from_str(r#"{"type":"resume","id":7,"received":1024}"#).unwrap();
        assert_eq!(
            resume,
            CommandOpen::Resume {
                id: 7,
                received: 1024
            }
        );
        let shell_string: CommandLine = serde_json::from_str("\"make test\"").unwrap();
        assert_eq!(shell_string.argv(), vec!["/bin/sh", "-c", "make test"]);
    }
}
