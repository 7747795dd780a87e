//! The master's last message on a connection (a refusal, a shutdown, an
//! enrollment answer): written, given a moment to arrive, then the connection
//! is closed. Used by the listener and by enrollment alike.

use moonbot_worker::protocol::{Frame, MasterMessage};
use moonbot_worker::transport::write_frame;
use std::time::Duration;

/// Send the master's last message on a connection (a refusal, a shutdown, an
/// enrollment answer), give the worker up to 2 s to read it and hang up, then
/// close with `code` and `reason`.
pub(crate) async fn last_word(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    message: &MasterMessage,
    code: u32,
    reason: &str,
) {
    let _ = write_frame(send, &Frame::json(message)).await;
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(code.into(), reason.as_bytes());
}
