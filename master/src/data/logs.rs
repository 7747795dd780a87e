//! The `logs` collection and log storage.
//!
//! A stdio log is stored Buildbot's way: one line per output line, prefixed with
//! its stream (`o` stdout, `e` stderr, `h` header written by the master). Lines
//! are gathered into chunks of about [`CHUNK_BYTES`], compressed with zstd off the
//! async threads, and appended as `logchunks` rows that record their first and last
//! line, so a page of lines is found without reading the whole log. `raw` strips
//! the prefixes and returns the output byte for byte (a last line without a
//! newline gets one).

use super::query::{FieldKind, ListQuery, apply, page};
use super::{Data, DataError};
use crate::db::entities::{logchunks, logs};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Target size of one stored chunk, before compression.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Pending lines are stored at least this often while output keeps coming.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
const ZSTD: i16 = 1;

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

/// Streams one stdio log into storage.
pub struct LogWriter {
    data: Data,
    logid: i64,
    /// Unfinished last line of each stream.
    partial: [Vec<u8>; 3],
    /// Complete, prefixed lines not yet stored.
    pending: Vec<u8>,
    pending_lines: i64,
    /// Number of lines stored so far.
    stored_lines: i64,
    last_flush: Instant,
}

impl LogWriter {
    /// Append output; complete lines are stored in chunks as they accumulate.
    pub async fn append(&mut self, stream: LogStream, mut bytes: &[u8]) -> Result<(), DataError> {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let partial = &mut self.partial[stream.index()];
            self.pending.push(stream.prefix());
            self.pending.extend_from_slice(partial);
            partial.clear();
            self.pending.extend_from_slice(&bytes[..=nl]);
            self.pending_lines += 1;
            bytes = &bytes[nl + 1..];
            if self.pending.len() >= CHUNK_BYTES {
                self.flush().await?;
            }
        }
        self.partial[stream.index()].extend_from_slice(bytes);
        self.flush_if_stale().await
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

    async fn flush(&mut self) -> Result<(), DataError> {
        self.last_flush = Instant::now();
        if self.pending_lines == 0 {
            return Ok(());
        }
        let content = std::mem::take(&mut self.pending);
        let compressed = tokio::task::spawn_blocking(move || zstd::bulk::compress(&content, 1))
            .await
            .map_err(|e| DataError::CorruptChunk(self.logid, e.to_string()))?
            .map_err(|e| DataError::CorruptChunk(self.logid, e.to_string()))?;
        let first_line = self.stored_lines;
        let last_line = first_line + self.pending_lines - 1;
        logchunks::ActiveModel {
            logid: Set(self.logid),
            first_line: Set(first_line),
            last_line: Set(last_line),
            content: Set(compressed),
            compressed: Set(ZSTD),
            ..Default::default()
        }
        .insert(&self.data.db)
        .await?;
        self.stored_lines = last_line + 1;
        self.pending_lines = 0;
        logs::Entity::update_many()
            .col_expr(logs::Column::NumLines, Expr::value(self.stored_lines))
            .filter(logs::Column::Id.eq(self.logid))
            .exec(&self.data.db)
            .await?;
        self.data.bus.publish(
            format!("logs/{}/append", self.logid),
            json!({"logid": self.logid, "first_line": first_line, "last_line": last_line}),
        );
        Ok(())
    }

    /// Store what is left (an unfinished last line gets a newline) and mark the
    /// log complete. Returns the number of lines.
    pub async fn finish(mut self) -> Result<i64, DataError> {
        for stream in [LogStream::Stdout, LogStream::Stderr, LogStream::Header] {
            if !self.partial[stream.index()].is_empty() {
                self.append(stream, b"\n").await?;
            }
        }
        self.flush().await?;
        logs::Entity::update_many()
            .col_expr(logs::Column::Complete, Expr::value(true))
            .col_expr(logs::Column::NumLines, Expr::value(self.stored_lines))
            .filter(logs::Column::Id.eq(self.logid))
            .exec(&self.data.db)
            .await?;
        if let Some(l) = logs::Entity::find_by_id(self.logid)
            .one(&self.data.db)
            .await?
        {
            self.data
                .bus
                .publish(format!("logs/{}/finished", self.logid), log_json(&l));
        }
        Ok(self.stored_lines)
    }
}

fn decompress(chunk: &logchunks::Model) -> Result<Vec<u8>, DataError> {
    if chunk.compressed == ZSTD {
        zstd::decode_all(&chunk.content[..])
            .map_err(|e| DataError::CorruptChunk(chunk.id, e.to_string()))
    } else {
        Ok(chunk.content.clone())
    }
}

impl Data {
    /// Open a new stdio log of a step.
    pub async fn add_log(&self, stepid: i64, name: &str) -> Result<LogWriter, DataError> {
        let row = logs::ActiveModel {
            name: Set(name.to_string()),
            slug: Set(slugify(name)),
            stepid: Set(stepid),
            complete: Set(false),
            num_lines: Set(0),
            log_type: Set("s".into()),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        self.bus
            .publish(format!("logs/{}/new", row.id), log_json(&row));
        Ok(LogWriter {
            data: self.clone(),
            logid: row.id,
            partial: Default::default(),
            pending: Vec::new(),
            pending_lines: 0,
            stored_lines: 0,
            last_flush: Instant::now(),
        })
    }

    pub async fn list_logs(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), String> {
        let mut select = apply(logs::Entity::find(), q, &fields)?;
        if q.order.is_empty() {
            select = select.order_by_asc(logs::Column::Id);
        }
        let total = select
            .clone()
            .count(&self.db)
            .await
            .map_err(|e| e.to_string())?;
        let rows = page(select, q)
            .all(&self.db)
            .await
            .map_err(|e| e.to_string())?;
        Ok((rows.iter().map(log_json).collect(), total))
    }

    /// The log's text as the command wrote it (stream prefixes removed), and its name.
    pub async fn log_raw(&self, logid: i64) -> Result<(String, Vec<u8>), DataError> {
        let log = logs::Entity::find_by_id(logid)
            .one(&self.db)
            .await?
            .ok_or_else(|| DataError::NotFound(format!("log {logid}")))?;
        let chunks = logchunks::Entity::find()
            .filter(logchunks::Column::Logid.eq(logid))
            .order_by_asc(logchunks::Column::FirstLine)
            .all(&self.db)
            .await?;
        let mut out = Vec::new();
        for c in &chunks {
            let content = decompress(c)?;
            if log.log_type == "s" {
                for line in content.split_inclusive(|&b| b == b'\n') {
                    out.extend_from_slice(&line[1..]);
                }
            } else {
                out.extend_from_slice(&content);
            }
        }
        Ok((log.slug, out))
    }

    /// Lines `offset .. offset+limit` of the log, with their stream prefixes
    /// (Buildbot's `logchunks` shape). Returns (first line, content).
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
        let end = limit.map(|l| offset + l);
        let mut select = logchunks::Entity::find()
            .filter(logchunks::Column::Logid.eq(logid))
            .filter(logchunks::Column::LastLine.gte(offset))
            .order_by_asc(logchunks::Column::FirstLine);
        if let Some(end) = end {
            select = select.filter(logchunks::Column::FirstLine.lt(end));
        }
        let mut out = Vec::new();
        for c in select.all(&self.db).await? {
            let content = decompress(&c)?;
            for (i, line) in content.split_inclusive(|&b| b == b'\n').enumerate() {
                let n = c.first_line + i as i64;
                if n >= offset && end.is_none_or(|e| n < e) {
                    out.extend_from_slice(line);
                }
            }
        }
        Ok((offset, String::from_utf8_lossy(&out).into_owned()))
    }
}
