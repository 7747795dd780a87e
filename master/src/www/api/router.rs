//! The data API's router: a table of Buildbot path patterns
//! (`builders/n:builderid/builds/n:build_number`), each with what it answers
//! and the handler that answers it. The table is [`super::routes::ROUTES`];
//! `/application.spec` is generated from it, and so is the list the
//! compatibility test walks, so neither can drift from what is served.
//!
//! A pattern's segments are literals or captures, as in Buildbot:
//! - `n:name`: a whole number;
//! - `i:name`: an identifier (a segment that does not start with a digit);
//! - `s:name`: any segment;
//! - `:name` (two of Buildbot's patterns have no type): a whole number.
//!
//! The first row that matches wins, so `builders/n:builderid` (listed first)
//! takes `builders/7` and `builders/s:buildername` takes `builders/linux`.

use super::{ApiError, Call};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;

/// What a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A list, `{"<plural>": [...], "meta": {"total": N}}`.
    Collection,
    /// One object, as a list of one (404 when it does not exist).
    Single,
    /// A file download (a log's text as an attachment).
    Raw,
    /// The same text shown in the browser.
    RawInline,
}

/// A handler's answer, before the common options (`field=`) shape it.
pub(crate) enum Answer {
    /// The items and `meta.total`.
    List(Vec<Value>, u64),
    /// One object, or `None` for a 404.
    One(Option<Value>),
    /// A finished response (raw text, a file).
    Raw(warp::reply::Response),
}

/// What a handler returns.
pub(crate) type Answered<'a> = Pin<Box<dyn Future<Output = Result<Answer, ApiError>> + Send + 'a>>;

/// A route's handler.
pub(crate) type Handler = for<'a> fn(&'a Call<'a>) -> Answered<'a>;

/// One row of the table.
pub(crate) struct Route {
    /// Buildbot's pattern, without the leading `/`.
    pub pattern: &'static str,
    pub kind: Kind,
    /// The entity type answered (a name in [`super::spec::ENTITY_TYPES`]).
    pub entity: &'static str,
    /// The JSON-RPC methods a POST to this path takes.
    pub actions: &'static [&'static str],
    pub handler: Handler,
}

/// A captured path segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    Num(i64),
    Text(String),
}

/// The captures of a matched path, by name.
#[derive(Debug, Default, Clone)]
pub(crate) struct Args(pub(crate) Vec<(&'static str, Arg)>);

impl Args {
    pub(crate) fn num(&self, name: &str) -> Option<i64> {
        self.0.iter().find_map(|(n, a)| match a {
            Arg::Num(v) if *n == name => Some(*v),
            _ => None,
        })
    }

    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.0.iter().find_map(|(n, a)| match a {
            Arg::Text(v) if *n == name => Some(v.as_str()),
            _ => None,
        })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| *n == name)
    }
}

/// One segment of a pattern.
enum Segment {
    Literal(&'static str),
    Number(&'static str),
    Identifier(&'static str),
    Text(&'static str),
}

fn segments(pattern: &'static str) -> impl Iterator<Item = Segment> {
    pattern
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once(':') {
            Some(("n" | "", name)) => Segment::Number(name),
            Some(("i", name)) => Segment::Identifier(name),
            Some((_, name)) => Segment::Text(name),
            None => Segment::Literal(s),
        })
}

/// Whether `path` (decoded segments) matches `pattern`, and its captures.
pub(crate) fn matches(pattern: &'static str, path: &[&str]) -> Option<Args> {
    let mut args = Args::default();
    let mut given = path.iter();
    for segment in segments(pattern) {
        let part = given.next()?;
        match segment {
            Segment::Literal(l) if *part == l => {}
            Segment::Literal(_) => return None,
            Segment::Number(name) => args.0.push((name, Arg::Num(part.parse().ok()?))),
            Segment::Identifier(name)
                if !part.is_empty() && !part.starts_with(|c: char| c.is_ascii_digit()) =>
            {
                args.0.push((name, Arg::Text(part.to_string())))
            }
            Segment::Identifier(_) => return None,
            Segment::Text(name) if !part.is_empty() => {
                args.0.push((name, Arg::Text(part.to_string())))
            }
            Segment::Text(_) => return None,
        }
    }
    given.next().is_none().then_some(args)
}

/// The first route of `table` that matches `path`, and its captures.
pub(crate) fn find<'t>(table: &'t [Route], path: &[&str]) -> Option<(&'t Route, Args)> {
    table
        .iter()
        .find_map(|route| matches(route.pattern, path).map(|args| (route, args)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_by_type() {
        let args = matches(
            "builders/n:builderid/builds/n:number",
            &["builders", "3", "builds", "7"],
        )
        .unwrap();
        assert_eq!(
            (args.num("builderid"), args.num("number")),
            (Some(3), Some(7))
        );
        assert!(matches("builders/n:builderid", &["builders", "linux"]).is_none());
        let args = matches("builders/s:buildername", &["builders", "linux"]).unwrap();
        assert_eq!(args.text("buildername"), Some("linux"));
        assert!(matches("workers/i:name", &["workers", "7up"]).is_none());
        assert!(matches("builders", &["builders", "1"]).is_none());
        assert!(matches("builders/n:builderid", &["builders"]).is_none());
        assert!(
            matches(
                "buildsets/:buildsetid/sourcestamps",
                &["buildsets", "4", "sourcestamps"]
            )
            .is_some()
        );
    }
}
