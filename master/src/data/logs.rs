//! The `logs` collection and log storage.
//!
//! A stdio log is stored Buildbot's way: one line per output line, prefixed with
//! its stream (`o` stdout, `e` stderr, `h` header written by the master). Lines
//! are gathered into chunks of about [`CHUNK_BYTES`], compressed with zstd off the
//! async threads by a task of their own (see [`LogWriter`]), and appended as
//! `logchunks` rows that record their first and last line, so a page of lines is
//! found without reading the whole log. `raw` streams the output back with the
//! prefixes stripped, byte for byte (a last line without a newline gets one).

use super::batch::{Batch, BatchRows, StatementIndex};
use super::query::{FieldKind, ListQuery, apply, fetch_page};
use super::{Data, DataError};
use crate::db::entities::{logchunks, logs};
use crate::mq::Topic;
use crate::mq::topic::LogEvent;
use crate::secrets::Redactor;
use sea_orm::Order;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Target size of one stored chunk, before compression.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Pending lines are stored at least this often while output keeps coming.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// `logchunks.compressed`: how a chunk's content is stored.
const RAW: i16 = 0;
const ZSTD: i16 = 1;
/// Fast: log chunks are compressed as fast as a worker sends them.
const ZSTD_LEVEL: i32 = 1;
/// Chunks smaller than this are stored uncompressed: it would save little, and
/// cost a hand-off to a blocking thread (a short step's whole log is one).
const COMPRESS_FROM: usize = 4096;
/// Most text one `contents` answer holds (see [`Data::log_lines`]).
pub const CONTENTS_MAX_BYTES: usize = 1 << 20;
/// Chunks a raw download reads per query.
const RAW_CHUNKS_PER_READ: u64 = 8;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
    Header,
}

impl LogStream {
    fn prefix(self) -> u8 {
        match self {
            LogStream::Stdout => b'o',
            LogStream::Stderr => b'e',
            LogStream::Header => b'h',
        }
    }
    fn index(self) -> usize {
        match self {
            LogStream::Stdout => 0,
            LogStream::Stderr => 1,
            LogStream::Header => 2,
        }
    }
}

fn fields(name: &str) -> Option<FieldKind<logs::Column>> {
    use logs::Column as C;
    Some(match name {
        "logid" => FieldKind::Int(C::Id),
        "stepid" => FieldKind::Int(C::Stepid),
        "name" => FieldKind::Text(C::Name),
        "slug" => FieldKind::Text(C::Slug),
        "complete" => FieldKind::Bool(C::Complete),
        "type" => FieldKind::Text(C::LogType),
        _ => return None,
    })
}

fn log_json(l: &logs::Model) -> Value {
    json!({
        "logid": l.id,
        "name": l.name,
        "slug": l.slug,
        "stepid": l.stepid,
        "complete": l.complete,
        "num_lines": l.num_lines,
        "type": l.log_type,
        // moonbot's: set when the janitor removed the content (`log_horizon`).
        "content_expired_at": l.content_expired_at,
    })
}

fn slugify(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The next few chunks of a log holding line `from_line` or later (and, with
/// `end`, starting before it), in order: how a raw download and a page of
/// lines both read a log, never more than [`RAW_CHUNKS_PER_READ`] at once.
async fn chunks_from(
    db: &sea_orm::DatabaseConnection,
    logid: i64,
    from_line: i64,
    end: Option<i64>,
) -> Result<Vec<logchunks::Model>, sea_orm::DbErr> {
    let mut select = logchunks::Entity::find()
        .filter(logchunks::Column::Logid.eq(logid))
        .filter(logchunks::Column::LastLine.gte(from_line))
        .order_by_asc(logchunks::Column::FirstLine)
        .limit(RAW_CHUNKS_PER_READ);
    if let Some(end) = end {
        select = select.filter(logchunks::Column::FirstLine.lt(end));
    }
    select.all(db).await
}

/// Streams one stdio log into storage.
///
/// Cutting lines happens here, on the task that reads the command's output;
/// compressing and storing chunks happens on a [`ChunkStore`] task fed through a
/// bounded channel, so output keeps flowing from the worker while earlier chunks
/// are compressed and written (several per insert when the database lags),
/// and memory stays bounded when it lags far behind.
pub struct LogWriter {
    logid: i64,
    /// Unfinished last line of each stream.
    partial: [Vec<u8>; 3],
    /// Complete, prefixed lines not yet handed to the store.
    pending: Vec<u8>,
    pending_lines: i64,
    /// Lines handed to the store so far.
    handed_lines: i64,
    last_flush: Instant,
    chunks: tokio::sync::mpsc::Sender<Chunk>,
    store: tokio::task::JoinHandle<Result<i64, DataError>>,
    /// The build's secrets, replaced in each line once it is complete (so a
    /// secret split across two writes is found); `None` when master.lua
    /// configures no secrets.
    redactor: Option<Redactor>,
}

/// Complete lines for one `logchunks` row, not yet compressed.
struct Chunk {
    first_line: i64,
    last_line: i64,
    content: Vec<u8>,
}

/// A chunk as stored: its content compressed with `compression`.
struct StoredChunk {
    first_line: i64,
    last_line: i64,
    compression: i16,
    content: Vec<u8>,
}

impl Chunk {
    /// Stored as it is (small chunks).
    fn raw(self) -> StoredChunk {
        StoredChunk {
            first_line: self.first_line,
            last_line: self.last_line,
            compression: RAW,
            content: self.content,
        }
    }

    /// Compressed with `zstd` (a context kept for the whole log: making one
    /// per chunk showed in profiles), unless it is small; CPU-bound, so run
    /// off the async threads.
    fn encode(self, zstd: &mut zstd::bulk::Compressor<'static>) -> std::io::Result<StoredChunk> {
        if self.content.len() < COMPRESS_FROM {
            return Ok(self.raw());
        }
        let content = zstd.compress(&self.content)?;
        Ok(StoredChunk {
            first_line: self.first_line,
            last_line: self.last_line,
            compression: ZSTD,
            content,
        })
    }
}

/// Room for a chunk and the line that crosses its limit, so filling one
/// rarely reallocates.
fn pending_buffer() -> Vec<u8> {
    Vec::with_capacity(CHUNK_BYTES + 4096)
}

/// Chunks waiting for the store; with [`CHUNK_BYTES`] this bounds a log's
/// buffered output to about 1 MiB.
const CHUNKS_IN_FLIGHT: usize = 16;

impl LogWriter {
    /// Append output; complete lines are stored in chunks as they accumulate.
    pub async fn append(&mut self, stream: LogStream, mut bytes: &[u8]) -> Result<(), DataError> {
        while let Some(nl) = memchr::memchr(b'\n', bytes) {
            let partial = &mut self.partial[stream.index()];
            self.pending.push(stream.prefix());
            match &self.redactor {
                Some(redactor) => {
                    partial.extend_from_slice(&bytes[..=nl]);
                    match redactor.redact_bytes(partial) {
                        Some(redacted) => self.pending.extend_from_slice(&redacted),
                        None => self.pending.extend_from_slice(partial),
                    }
                }
                None => {
                    self.pending.extend_from_slice(partial);
                    self.pending.extend_from_slice(&bytes[..=nl]);
                }
            }
            partial.clear();
            self.pending_lines += 1;
            bytes = &bytes[nl + 1..];
            if self.pending.len() >= CHUNK_BYTES {
                self.flush().await?;
            }
        }
        self.partial[stream.index()].extend_from_slice(bytes);
        self.flush_if_stale().await
    }

    /// Redact the secrets `redactor` knows (now and later) from every line
    /// written from now on.
    pub fn redact_with(&mut self, redactor: Redactor) {
        self.redactor = Some(redactor);
    }

    /// Store complete lines that have waited [`FLUSH_EVERY`] or longer; called
    /// on output and on a timer, so a quiet command's last lines show up too.
    pub async fn flush_if_stale(&mut self) -> Result<(), DataError> {
        if self.pending_lines > 0 && self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush().await?;
        }
        Ok(())
    }

    /// Append whole header lines (commands, exit codes) written by the master.
    pub async fn header(&mut self, text: &str) -> Result<(), DataError> {
        let mut line = text.to_string();
        if !line.ends_with('\n') {
            line.push('\n');
        }
        self.append(LogStream::Header, line.as_bytes()).await
    }

    /// Hand the pending lines to the store (waiting when it is far behind).
    async fn flush(&mut self) -> Result<(), DataError> {
        self.last_flush = Instant::now();
        if self.pending_lines == 0 {
            return Ok(());
        }
        let chunk = Chunk {
            first_line: self.handed_lines,
            last_line: self.handed_lines + self.pending_lines - 1,
            content: std::mem::replace(&mut self.pending, pending_buffer()),
        };
        self.handed_lines += self.pending_lines;
        self.pending_lines = 0;
        if self.chunks.send(chunk).await.is_err() {
            // The store stopped: its error says why.
            return Err(self.store_failure().await);
        }
        Ok(())
    }

    async fn store_failure(&mut self) -> DataError {
        match (&mut self.store).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => DataError::LogStore(self.logid, "the store stopped early".into()),
            Err(e) => DataError::LogStore(self.logid, e.to_string()),
        }
    }

    /// Store what is left (an unfinished last line gets a newline) and wait
    /// until every chunk is stored; the log row is marked complete by a
    /// statement from [`push_log_finished`] (with its step's, in one trip).
    pub async fn close(mut self) -> Result<ClosedLog, DataError> {
        for stream in [LogStream::Stdout, LogStream::Stderr, LogStream::Header] {
            if !self.partial[stream.index()].is_empty() {
                self.append(stream, b"\n").await?;
            }
        }
        self.flush().await?;
        let LogWriter {
            logid,
            chunks,
            store,
            ..
        } = self;
        drop(chunks);
        let lines = store
            .await
            .map_err(|e| DataError::LogStore(logid, e.to_string()))??;
        Ok(ClosedLog { logid, lines })
    }
}

/// A log whose every line is stored, not yet marked complete.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLog {
    pub logid: i64,
    /// Lines stored.
    pub lines: i64,
}

/// Adds the statement that marks `log` complete with its line count.
pub(crate) fn push_log_finished(batch: &mut Batch, log: &ClosedLog) -> StatementIndex {
    batch.push(
        Query::update()
            .table(logs::Entity)
            .values([
                (logs::Column::Complete, true.into()),
                (logs::Column::NumLines, log.lines.into()),
            ])
            .and_where(Expr::col(logs::Column::Id).eq(log.logid))
            .returning_all(),
    )
}

/// Adds the statement that creates a stdio log named `name` of step `stepid`
/// (an id or [`Batch::last_id`]).
pub(crate) fn push_new_log(batch: &mut Batch, stepid: Expr, name: &str) -> StatementIndex {
    use logs::Column as C;
    let insert = Query::insert()
        .into_table(logs::Entity)
        .columns([
            C::Name,
            C::Slug,
            C::Stepid,
            C::Complete,
            C::NumLines,
            C::LogType,
        ])
        .values_panic([
            name.into(),
            slugify(name).into(),
            stepid,
            false.into(),
            0i64.into(),
            "s".into(),
        ])
        .returning_all()
        .to_owned();
    batch.push(&insert)
}

/// The task that compresses and stores one log's chunks, in order; returns the
/// number of lines stored.
struct ChunkStore {
    data: Data,
    logid: i64,
}

impl ChunkStore {
    async fn run(self, mut chunks: tokio::sync::mpsc::Receiver<Chunk>) -> Result<i64, DataError> {
        let mut stored_lines = 0;
        let mut batch = Vec::new();
        let logid = self.logid;
        let zstd_failed = |e: std::io::Error| DataError::LogStore(logid, format!("zstd: {e}"));
        // Made on the first chunk that needs it; lent to each blocking task.
        let mut compressor: Option<zstd::bulk::Compressor<'static>> = None;
        while chunks.recv_many(&mut batch, CHUNKS_IN_FLIGHT).await > 0 {
            let chunks_of_batch = std::mem::take(&mut batch);
            let stored: Vec<StoredChunk> = if chunks_of_batch
                .iter()
                .all(|c| c.content.len() < COMPRESS_FROM)
            {
                chunks_of_batch.into_iter().map(Chunk::raw).collect()
            } else {
                let mut zstd = match compressor.take() {
                    Some(c) => c,
                    None => zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(zstd_failed)?,
                };
                let (zstd, stored) = tokio::task::spawn_blocking(move || {
                    let stored = chunks_of_batch
                        .into_iter()
                        .map(|c| c.encode(&mut zstd))
                        .collect::<Result<Vec<_>, _>>();
                    (zstd, stored)
                })
                .await
                .map_err(|e| DataError::LogStore(logid, e.to_string()))?;
                compressor = Some(zstd);
                stored.map_err(zstd_failed)?
            };
            let (first_line, last_line) =
                (stored[0].first_line, stored[stored.len() - 1].last_line);
            // No transaction: the chunks go first and `num_lines` follows, so a
            // reader never counts lines that are not stored yet.
            logchunks::Entity::insert_many(stored.into_iter().map(|c| logchunks::ActiveModel {
                logid: Set(logid),
                first_line: Set(c.first_line),
                last_line: Set(c.last_line),
                content: Set(c.content),
                compressed: Set(c.compression),
                ..Default::default()
            }))
            .exec(&self.data.db)
            .await?;
            stored_lines = last_line + 1;
            // After the writer's last chunk, its `finish` sets `num_lines`
            // together with `complete`.
            let writer_finished = chunks.is_closed() && chunks.is_empty();
            if !writer_finished {
                logs::Entity::update_many()
                    .col_expr(logs::Column::NumLines, Expr::value(stored_lines))
                    .filter(logs::Column::Id.eq(logid))
                    .exec(&self.data.db)
                    .await?;
            }
            self.data.bus.publish(
                Topic::Log {
                    id: logid,
                    event: LogEvent::Append,
                },
                json!({"logid": logid, "first_line": first_line, "last_line": last_line}),
            );
        }
        Ok(stored_lines)
    }
}

/// Largest content size read from a chunk's zstd frame that is allocated at once.
const TRUSTED_CHUNK_SIZE: u64 = 64 << 20;

/// Reads stored chunks back, with one zstd context for all of them (making one
/// per chunk showed in profiles of log downloads).
#[derive(Default)]
struct ChunkDecoder {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl ChunkDecoder {
    fn decode(&mut self, chunk: &logchunks::Model) -> Result<Vec<u8>, DataError> {
        if chunk.compressed != ZSTD {
            return Ok(chunk.content.clone());
        }
        let corrupt = |e: String| DataError::CorruptChunk(chunk.id, e);
        // Whole-buffer compression records the content size in the frame; a
        // size that is missing or too large to trust up front is decoded as a
        // stream instead.
        let size = zstd::zstd_safe::get_frame_content_size(&chunk.content)
            .ok()
            .flatten()
            .filter(|&n| n <= TRUSTED_CHUNK_SIZE);
        let Some(size) = size else {
            return zstd::decode_all(&chunk.content[..]).map_err(|e| corrupt(e.to_string()));
        };
        let zstd = match &mut self.zstd {
            Some(z) => z,
            None => self
                .zstd
                .insert(zstd::bulk::Decompressor::new().map_err(|e| corrupt(e.to_string()))?),
        };
        zstd.decompress(&chunk.content, size as usize)
            .map_err(|e| corrupt(e.to_string()))
    }
}

impl Data {
    /// Publishes a log row just created and starts its writer.
    pub(crate) fn open_log(&self, row: logs::Model) -> Result<LogWriter, DataError> {
        self.bus.publish(
            Topic::Log {
                id: row.id,
                event: LogEvent::New,
            },
            log_json(&row),
        );
        let (chunks, receiver) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let store = tokio::spawn(
            ChunkStore {
                data: self.clone(),
                logid: row.id,
            }
            .run(receiver),
        );
        Ok(LogWriter {
            logid: row.id,
            partial: Default::default(),
            redactor: None,
            pending: pending_buffer(),
            pending_lines: 0,
            handed_lines: 0,
            last_flush: Instant::now(),
            chunks,
            store,
        })
    }

    /// Publishes `logs/N/finished` for the row [`push_log_finished`] updated.
    pub(crate) fn publish_log_finished(
        &self,
        rows: &mut BatchRows,
        finished: StatementIndex,
    ) -> Result<(), DataError> {
        for l in rows.models::<logs::Model>(finished)? {
            self.bus.publish(
                Topic::Log {
                    id: l.id,
                    event: LogEvent::Finished,
                },
                log_json(&l),
            );
        }
        Ok(())
    }

    pub async fn list_logs(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(logs::Entity::find(), q, &fields)?;
        let (rows, total) = fetch_page(&self.db, select, q, (logs::Column::Id, Order::Asc)).await?;
        Ok((rows.iter().map(log_json).collect(), total))
    }

    /// The log's text as the command wrote it (stream prefixes removed), as a
    /// stream of pieces, and the log's slug. Chunks are read a few at a time,
    /// so a download holds a bounded amount of the log in memory however big
    /// it is.
    pub async fn log_raw(
        &self,
        logid: i64,
    ) -> Result<
        (
            String,
            tokio::sync::mpsc::Receiver<Result<bytes::Bytes, DataError>>,
        ),
        DataError,
    > {
        let log = logs::Entity::find_by_id(logid)
            .one(&self.db)
            .await?
            .ok_or_else(|| DataError::NotFound(format!("log {logid}")))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let db = self.db.clone();
        let prefixed = log.log_type == "s";
        tokio::spawn(async move {
            let mut decoder = ChunkDecoder::default();
            let mut next_line = 0;
            loop {
                let batch = chunks_from(&db, logid, next_line, None).await;
                let batch = match batch {
                    Ok(b) if b.is_empty() => return,
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                next_line = batch[batch.len() - 1].last_line + 1;
                for chunk in batch {
                    let piece = decoder.decode(&chunk).map(|content| {
                        if !prefixed {
                            return bytes::Bytes::from(content);
                        }
                        let mut out = Vec::with_capacity(content.len());
                        for line in content.split_inclusive(|&b| b == b'\n') {
                            out.extend_from_slice(&line[1..]);
                        }
                        bytes::Bytes::from(out)
                    });
                    let failed = piece.is_err();
                    if tx.send(piece).await.is_err() || failed {
                        return; // the client went away, or the log is corrupt
                    }
                }
            }
        });
        Ok((log.slug, rx))
    }

    /// Lines `offset .. offset+limit` of the log, with their stream prefixes
    /// (Buildbot's `logchunks` shape). Returns (first line, content). One
    /// answer holds at most [`CONTENTS_MAX_BYTES`] of text: the lines that fit
    /// whole (at least one, itself cut to that size when longer), so a client
    /// reading a 100 MB log asks again from the next line. Chunks are read a
    /// few at a time, never the whole log.
    pub async fn log_lines(
        &self,
        logid: i64,
        offset: i64,
        limit: Option<i64>,
    ) -> Result<(i64, String), DataError> {
        logs::Entity::find_by_id(logid)
            .one(&self.db)
            .await?
            .ok_or_else(|| DataError::NotFound(format!("log {logid}")))?;
        let end = limit.map(|l| offset.saturating_add(l));
        let mut out = Vec::new();
        let mut decoder = ChunkDecoder::default();
        let mut next_line = offset;
        'reading: loop {
            let batch = chunks_from(&self.db, logid, next_line, end).await?;
            if batch.is_empty() {
                break;
            }
            for c in batch {
                let content = decoder.decode(&c)?;
                for (i, line) in content.split_inclusive(|&b| b == b'\n').enumerate() {
                    let n = c.first_line + i as i64;
                    if n < next_line {
                        continue;
                    }
                    if end.is_some_and(|e| n >= e) {
                        break 'reading;
                    }
                    if out.len() + line.len() > CONTENTS_MAX_BYTES {
                        if out.is_empty() {
                            out.extend_from_slice(&line[..CONTENTS_MAX_BYTES]);
                            out.push(b'\n');
                        }
                        break 'reading;
                    }
                    out.extend_from_slice(line);
                }
                // Past this chunk, whatever it held: the next read moves on.
                next_line = Ord::max(next_line, c.last_line + 1);
            }
        }
        Ok((offset, String::from_utf8_lossy(&out).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_row(id: i64, chunk: StoredChunk) -> logchunks::Model {
        logchunks::Model {
            id,
            logid: 1,
            first_line: chunk.first_line,
            last_line: chunk.last_line,
            content: chunk.content,
            compressed: chunk.compression,
        }
    }

    fn chunk(content: Vec<u8>) -> Chunk {
        Chunk {
            first_line: 0,
            last_line: 0,
            content,
        }
    }

    #[test]
    fn chunks_round_trip_through_shared_zstd_contexts() {
        let mut zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL).unwrap();
        let mut decoder = ChunkDecoder::default();
        let lines: Vec<u8> = (0..3000)
            .flat_map(|i| format!("oline {i} of a step's output\n").into_bytes())
            .collect();
        for (id, content) in [lines.clone(), lines[1000..].to_vec(), b"oshort\n".to_vec()]
            .into_iter()
            .enumerate()
        {
            let stored = chunk(content.clone()).encode(&mut zstd).unwrap();
            let expected = if content.len() < COMPRESS_FROM {
                RAW
            } else {
                ZSTD
            };
            assert_eq!(stored.compression, expected);
            if expected == ZSTD {
                assert!(stored.content.len() < content.len() / 4);
            }
            let row = stored_row(id as i64, stored);
            assert_eq!(decoder.decode(&row).unwrap(), content);
        }
    }

    #[test]
    fn frames_without_a_content_size_decode_and_garbage_is_reported() {
        // A streaming encoder does not record the content size.
        let content = b"oa line\n".repeat(10_000);
        let framed = zstd::stream::encode_all(&content[..], 1).unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&framed).unwrap(),
            None
        );
        let mut decoder = ChunkDecoder::default();
        let row = |content: Vec<u8>| logchunks::Model {
            id: 7,
            logid: 1,
            first_line: 0,
            last_line: 9999,
            content,
            compressed: ZSTD,
        };
        assert_eq!(decoder.decode(&row(framed)).unwrap(), content);
        let err = decoder.decode(&row(b"not zstd".to_vec())).unwrap_err();
        assert!(matches!(err, DataError::CorruptChunk(7, _)), "{err}");
    }
}
