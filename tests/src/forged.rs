//! A worker that speaks the protocol by hand, for the untrusted-worker tests.
//!
//! It holds a real certificate signed by the master's CA (it is an
//! authenticated worker), says hello like `moonbot-worker`, and then answers
//! the master's commands with whatever frames a test writes: the lies a
//! hostile volunteer machine could tell. Everything is blocking, on its own
//! runtime, so tests stay plain functions.

use moonbot_worker::protocol::{
    CommandOpen, CommandOutcome, CommandRequest, Frame, MasterMessage, PROTOCOL_VERSION,
    WorkerMessage,
};
use moonbot_worker::transport::{FrameReader, write_frame};
use moonbot_worker::workdir::WorkerDir;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

/// A connected, welcomed worker that does only what the test says.
pub struct ForgedWorker {
    rt: tokio::runtime::Runtime,
    conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

/// A command the master sent, and its stream to answer on.
pub struct ForgedCommand {
    pub request: CommandRequest,
    send: quinn::SendStream,
    reader: FrameReader,
}

impl ForgedWorker {
    /// Connect with the signed worker directory `dir` and get welcomed.
    pub fn connect(dir: &Path) -> ForgedWorker {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let wdir = WorkerDir::load(dir).unwrap();
        let config = moonbot_worker::tls::client_config(&wdir).unwrap();
        let (endpoint, conn, control) = rt.block_on(async {
            let addr = (wdir.master_address.host.as_str(), wdir.master_address.port)
                .to_socket_addrs()
                .unwrap()
                .next()
                .unwrap();
            let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            let conn = endpoint
                .connect_with(config, addr, &wdir.master_address.host)
                .unwrap()
                .await
                .unwrap();
            let (mut send, recv) = conn.open_bi().await.unwrap();
            let hello = WorkerMessage::Hello {
                name: wdir.name.clone(),
                protocol: PROTOCOL_VERSION,
                info: wdir.info(),
            };
            write_frame(&mut send, &Frame::json(&hello)).await.unwrap();
            let mut reader = FrameReader::new(recv);
            let welcome: MasterMessage = reader.next().await.unwrap().unwrap().parse().unwrap();
            assert!(
                matches!(welcome, MasterMessage::Welcome { .. }),
                "{welcome:?}"
            );
            (endpoint, conn, (send, reader))
        });
        // Keep-alives, as a worker sends them, so the master keeps it.
        let (mut send, mut reader) = control;
        rt.spawn(async move {
            loop {
                let ping = Frame::json(&WorkerMessage::KeepAlive);
                if write_frame(&mut send, &ping).await.is_err() {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), reader.next()).await;
            }
        });
        ForgedWorker {
            rt,
            conn,
            _endpoint: endpoint,
        }
    }

    /// The next command the master sends (within `within`).
    pub fn next_command(&self, within: Duration) -> ForgedCommand {
        self.rt.block_on(async {
            let (send, recv) = tokio::time::timeout(within, self.conn.accept_bi())
                .await
                .expect("the master sent no command")
                .unwrap();
            let mut reader = FrameReader::new(recv);
            let open: CommandOpen = reader.next().await.unwrap().unwrap().parse().unwrap();
            let CommandOpen::Run(request) = open else {
                panic!("expected a new command, got {open:?}")
            };
            ForgedCommand {
                request,
                send,
                reader,
            }
        })
    }

    /// Send `frames` on `command`'s stream, then `outcome` (when given);
    /// a write the master refused (it stopped reading) is not an error.
    pub fn answer(
        &self,
        command: &mut ForgedCommand,
        frames: &[Frame],
        outcome: Option<CommandOutcome>,
    ) {
        self.rt.block_on(async {
            for frame in frames {
                if write_frame(&mut command.send, frame).await.is_err() {
                    return;
                }
            }
            if let Some(outcome) = outcome {
                let _ = write_frame(&mut command.send, &Frame::json(&outcome)).await;
                let _ = command.send.finish();
            }
        })
    }

    /// What the master wrote back on `command`'s stream until it closed it
    /// (acknowledgements, an interrupt), as JSON texts.
    pub fn replies(&self, command: &mut ForgedCommand, within: Duration) -> Vec<String> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            while let Ok(Ok(Some(frame))) =
                tokio::time::timeout(within, command.reader.next()).await
            {
                if let Frame::Json(bytes) = frame {
                    out.push(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
            out
        })
    }

    /// Open a stream of its own and send `frames` on it (the master gives a
    /// worker no such stream: it must ignore it).
    pub fn unasked(&self, frames: &[Frame]) {
        self.rt.block_on(async {
            if let Ok((mut send, _recv)) = self.conn.open_bi().await {
                for frame in frames {
                    let _ = write_frame(&mut send, frame).await;
                }
                let _ = send.finish();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }
}

/// A successful outcome.
pub fn success() -> CommandOutcome {
    CommandOutcome {
        rc: Some(0),
        ..CommandOutcome::default()
    }
}
