//! Buildbot's `Interpolate` templates: `%(prop:NAME)s`, `%(src:CODEBASE:ATTR)s`,
//! `%(secret:NAME)s`, `%(worker:ATTR)s` and `%(kw:NAME)s`, each optionally
//! followed by a conditional (`:-`, `:~`, `:+`, `:?|a|b`, `:#?|a|b`), and `%%`
//! for a percent sign.
//!
//! Why parse at checkconfig: a template is read once, when master.lua is
//! compiled, so a typo (an unknown selector, an unclosed `%(`, a `kw:` that
//! was not given) is a config error at the `file:line` of `mb.interpolate`,
//! not a failed build hours later. Rendering then only walks the parsed
//! pieces. A replacement may itself hold substitutions, as Buildbot allows:
//! `%(prop:got_revision:-%(src::revision:-unknown)s)s`.
//!
//! Values are shown as text the way a shell command wants them: strings as
//! they are, numbers in JSON, booleans as Python shows them (`True`, `False`,
//! as Buildbot's users expect), lists and tables as JSON. A JSON `null` counts
//! as absent (a forced build without a branch has a `null` branch), so
//! `%(prop:branch:-main)s` gives `main` there.

use serde_json::Value;
use std::collections::BTreeSet;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Sub(Box<Substitution>),
}

#[derive(Debug, Clone, PartialEq)]
struct Substitution {
    key: Key,
    op: Op,
}

/// What a substitution looks up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// `prop:NAME`: a build property.
    Prop(String),
    /// `src:CODEBASE:ATTR`: an attribute of the build's source stamp of a codebase.
    Src { codebase: String, attr: SourceAttr },
    /// `secret:NAME`: a secret from the configured providers.
    Secret(String),
    /// `worker:ATTR`: what the build's worker said about itself.
    Worker(WorkerAttr),
    /// `kw:NAME`: a keyword given to `mb.interpolate`.
    Kw(String),
}

/// The source stamp attributes `src:` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceAttr {
    Branch,
    Revision,
    Repository,
    Project,
    Codebase,
}

impl SourceAttr {
    pub const NAMES: [&'static str; 5] =
        ["branch", "revision", "repository", "project", "codebase"];

    fn parse(name: &str) -> Option<SourceAttr> {
        Some(match name {
            "branch" => SourceAttr::Branch,
            "revision" => SourceAttr::Revision,
            "repository" => SourceAttr::Repository,
            "project" => SourceAttr::Project,
            "codebase" => SourceAttr::Codebase,
            _ => return None,
        })
    }
}

/// The worker attributes `worker:` may name (the worker's info).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WorkerAttr {
    Name,
    Version,
    Os,
    Arch,
    Cpus,
    Hostname,
    Admin,
    Host,
}

impl WorkerAttr {
    pub const NAMES: [&'static str; 8] = [
        "name", "version", "os", "arch", "cpus", "hostname", "admin", "host",
    ];

    fn parse(name: &str) -> Option<WorkerAttr> {
        Some(match name {
            "name" => WorkerAttr::Name,
            "version" => WorkerAttr::Version,
            "os" => WorkerAttr::Os,
            "arch" => WorkerAttr::Arch,
            "cpus" => WorkerAttr::Cpus,
            "hostname" => WorkerAttr::Hostname,
            "admin" => WorkerAttr::Admin,
            "host" => WorkerAttr::Host,
            _ => return None,
        })
    }
}

/// How a substitution uses what it looked up.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    /// The value; nothing when absent.
    Value,
    /// `:-repl`: the value, or `repl` when absent.
    OrIfAbsent(Template),
    /// `:~repl`: the value, or `repl` when absent or false.
    OrIfFalse(Template),
    /// `:+repl`: `repl` when present, else nothing.
    IfPresent(Template),
    /// `:?|yes|no`: by presence.
    Present(Template, Template),
    /// `:#?|yes|no`: by truth.
    Truthy(Template, Template),
}

/// A template that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interpolate: {message} (in \"{template}\")")]
pub struct TemplateError {
    pub message: String,
    pub template: String,
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("secret '{0}' is not known to any secrets provider")]
    MissingSecret(String),
}

/// Where a template stops reading.
#[derive(Clone, Copy, PartialEq)]
enum End {
    /// The end of the text (the template itself).
    Eof,
    /// `)s`, which closes the substitution this replacement belongs to.
    Close,
    /// The delimiter between a ternary's two alternatives.
    Delim(char),
}

impl Template {
    /// Parse `text`; `kw` names the keywords `mb.interpolate` was given.
    pub fn parse(text: &str, kw: &BTreeSet<String>) -> Result<Template, TemplateError> {
        let chars: Vec<char> = text.chars().collect();
        let mut parser = Parser {
            chars: &chars,
            pos: 0,
            kw,
        };
        parser.sequence(End::Eof).map_err(|message| TemplateError {
            message,
            template: text.to_string(),
        })
    }

    /// Every key the template may look up (secrets included), in order.
    pub fn keys(&self) -> BTreeSet<Key> {
        let mut out = BTreeSet::new();
        self.collect_keys(&mut out);
        out
    }

    fn collect_keys(&self, out: &mut BTreeSet<Key>) {
        for piece in &self.pieces {
            if let Piece::Sub(sub) = piece {
                out.insert(sub.key.clone());
                match &sub.op {
                    Op::Value => {}
                    Op::OrIfAbsent(t) | Op::OrIfFalse(t) | Op::IfPresent(t) => t.collect_keys(out),
                    Op::Present(a, b) | Op::Truthy(a, b) => {
                        a.collect_keys(out);
                        b.collect_keys(out);
                    }
                }
            }
        }
    }

    /// The text, with each key looked up by `lookup` (`None`: absent).
    pub fn render<E: From<LookupError>>(
        &self,
        lookup: &mut dyn FnMut(&Key) -> Result<Option<Value>, E>,
    ) -> Result<String, E> {
        let mut out = String::new();
        self.render_into(&mut out, lookup)?;
        Ok(out)
    }

    fn render_into<E: From<LookupError>>(
        &self,
        out: &mut String,
        lookup: &mut dyn FnMut(&Key) -> Result<Option<Value>, E>,
    ) -> Result<(), E> {
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Sub(sub) => {
                    let value = lookup(&sub.key)?.filter(|v| !v.is_null());
                    match (&sub.op, value) {
                        (Op::Value, Some(v)) => out.push_str(&value_text(&v)),
                        (Op::Value, None) => {
                            if let Key::Secret(name) = &sub.key {
                                return Err(LookupError::MissingSecret(name.clone()).into());
                            }
                        }
                        (Op::OrIfAbsent(_), Some(v)) => out.push_str(&value_text(&v)),
                        (Op::OrIfAbsent(t), None) => t.render_into(out, lookup)?,
                        (Op::OrIfFalse(t), v) => match v.filter(truthy) {
                            Some(v) => out.push_str(&value_text(&v)),
                            None => t.render_into(out, lookup)?,
                        },
                        (Op::IfPresent(t), Some(_)) => t.render_into(out, lookup)?,
                        (Op::IfPresent(_), None) => {}
                        (Op::Present(yes, no), v) => {
                            if v.is_some() { yes } else { no }.render_into(out, lookup)?
                        }
                        (Op::Truthy(yes, no), v) => if v.as_ref().is_some_and(truthy) {
                            yes
                        } else {
                            no
                        }
                        .render_into(out, lookup)?,
                    }
                }
            }
        }
        Ok(())
    }
}

/// A value as a command line wants it (see the module's doc).
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

/// Python's truth: `null`, `false`, `0`, `""`, `[]` and `{}` are false.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
    kw: &'a BTreeSet<String>,
}

impl Parser<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    /// Text and substitutions up to `end` (which is consumed).
    fn sequence(&mut self, end: End) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        loop {
            let Some(c) = self.peek(0) else {
                return match end {
                    End::Eof => {
                        if !text.is_empty() {
                            pieces.push(Piece::Text(text));
                        }
                        Ok(Template { pieces })
                    }
                    _ => Err("a '%(' is not closed by ')s'".into()),
                };
            };
            if end == End::Close && c == ')' && self.peek(1) == Some('s') {
                self.pos += 2;
                break;
            }
            if end == End::Delim(c) {
                self.pos += 1;
                break;
            }
            if c != '%' {
                text.push(c);
                self.pos += 1;
                continue;
            }
            match self.peek(1) {
                Some('%') => {
                    text.push('%');
                    self.pos += 2;
                }
                Some('(') => {
                    self.pos += 2;
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Sub(Box::new(self.substitution()?)));
                }
                Some(other) => {
                    return Err(format!(
                        "'%{other}' is not a substitution: write '%(prop:NAME)s', or '%%' for a percent sign"
                    ));
                }
                None => {
                    return Err(
                        "the template ends with a lone '%' (write '%%' for a percent sign)".into(),
                    );
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template { pieces })
    }

    /// A name up to ':' or ')s' (neither consumed).
    fn name(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek(0) {
            if c == ':' || (c == ')' && self.peek(1) == Some('s')) {
                break;
            }
            out.push(c);
            self.pos += 1;
        }
        out
    }

    /// After `%(`: `selector:key[:op])s`.
    fn substitution(&mut self) -> Result<Substitution, String> {
        let selector = self.name();
        if self.peek(0) != Some(':') {
            return Err(format!(
                "'%({selector})s' has no selector: write prop:, src:, secret:, worker: or kw: before the name"
            ));
        }
        self.pos += 1;
        let key = match selector.as_str() {
            "prop" => Key::Prop(self.nonempty_name("prop")?),
            "secret" => Key::Secret(self.nonempty_name("secret")?),
            "kw" => {
                let name = self.nonempty_name("kw")?;
                if !self.kw.contains(&name) {
                    return Err(format!(
                        "'%(kw:{name})s' names a keyword that was not given (mb.interpolate(template, {{ {name} = … }}))"
                    ));
                }
                Key::Kw(name)
            }
            "worker" => {
                let name = self.nonempty_name("worker")?;
                Key::Worker(WorkerAttr::parse(&name).ok_or_else(|| {
                    format!(
                        "unknown worker attribute '{name}' (known: {})",
                        WorkerAttr::NAMES.join(", ")
                    )
                })?)
            }
            "src" => {
                let codebase = self.name();
                if self.peek(0) != Some(':') {
                    return Err(format!(
                        "'src:{codebase}' needs an attribute: %(src:CODEBASE:ATTR)s, as %(src::branch)s"
                    ));
                }
                self.pos += 1;
                let name = self.nonempty_name("src")?;
                let attr = SourceAttr::parse(&name).ok_or_else(|| {
                    format!(
                        "unknown source stamp attribute '{name}' (known: {})",
                        SourceAttr::NAMES.join(", ")
                    )
                })?;
                Key::Src { codebase, attr }
            }
            other => {
                return Err(format!(
                    "unknown selector '{other}:' (known: prop, src, secret, worker, kw)"
                ));
            }
        };
        let op = match self.peek(0) {
            Some(')') => {
                self.pos += 2;
                Op::Value
            }
            Some(':') => {
                self.pos += 1;
                self.op()?
            }
            _ => return Err("a '%(' is not closed by ')s'".into()),
        };
        Ok(Substitution { key, op })
    }

    fn nonempty_name(&mut self, selector: &str) -> Result<String, String> {
        let name = self.name();
        if name.is_empty() {
            return Err(format!("'{selector}:' needs a name"));
        }
        Ok(name)
    }

    /// After the key's ':': the conditional and its replacements, to `)s`.
    fn op(&mut self) -> Result<Op, String> {
        let c = self.peek(0);
        match c {
            Some('-') | Some('~') | Some('+') => {
                self.pos += 1;
                let replacement = self.sequence(End::Close)?;
                Ok(match c {
                    Some('-') => Op::OrIfAbsent(replacement),
                    Some('~') => Op::OrIfFalse(replacement),
                    _ => Op::IfPresent(replacement),
                })
            }
            Some('?') => {
                self.pos += 1;
                let (yes, no) = self.alternatives("?")?;
                Ok(Op::Present(yes, no))
            }
            Some('#') if self.peek(1) == Some('?') => {
                self.pos += 2;
                let (yes, no) = self.alternatives("#?")?;
                Ok(Op::Truthy(yes, no))
            }
            _ => Err(format!(
                "unknown conditional ':{}' (known: :-, :~, :+, :?|a|b, :#?|a|b)",
                c.map(String::from).unwrap_or_default()
            )),
        }
    }

    /// `|yes|no)s`, where `|` is whatever character follows the `?`.
    fn alternatives(&mut self, op: &str) -> Result<(Template, Template), String> {
        let delim = match self.peek(0) {
            Some(d) if d != '(' && d != ')' => d,
            _ => {
                return Err(format!(
                    "':{op}' needs a delimiter and two alternatives, as ':{op}|yes|no'"
                ));
            }
        };
        self.pos += 1;
        let yes = self.sequence(End::Delim(delim)).map_err(|_| {
            format!("':{op}{delim}…' needs two alternatives separated by '{delim}'")
        })?;
        let no = self.sequence(End::Close)?;
        Ok((yes, no))
    }
}

#[cfg(test)]
mod tests {
    //! Buildbot's documented cases, as data: each template with the
    //! properties, source stamp and keywords it sees, and what it must give.
    use super::*;
    use serde_json::json;

    /// A build's facts: `branch` is set, `empty` is "", `zero` is 0, `flag`
    /// is true, `off` is false, `nothing` is null, `missing` is not set; the
    /// default codebase has branch `main`, revision `abc123`.
    fn lookup(key: &Key) -> Result<Option<Value>, LookupError> {
        Ok(match key {
            Key::Prop(name) => match name.as_str() {
                "branch" => Some(json!("release")),
                "empty" => Some(json!("")),
                "zero" => Some(json!(0)),
                "count" => Some(json!(12)),
                "flag" => Some(json!(true)),
                "off" => Some(json!(false)),
                "nothing" => Some(Value::Null),
                "list" => Some(json!(["a", "b"])),
                "got_revision" => None,
                _ => None,
            },
            Key::Src { codebase, attr } if codebase.is_empty() => match attr {
                SourceAttr::Branch => Some(json!("main")),
                SourceAttr::Revision => Some(json!("abc123")),
                SourceAttr::Repository => Some(json!("https://example.org/r.git")),
                SourceAttr::Project => Some(json!("")),
                SourceAttr::Codebase => Some(json!("")),
            },
            Key::Src { .. } => None,
            Key::Secret(name) if name == "token" => Some(json!("s3cr3t-value")),
            Key::Secret(_) => None,
            Key::Worker(WorkerAttr::Os) => Some(json!("linux")),
            Key::Worker(_) => None,
            Key::Kw(name) if name == "data" => Some(json!("extra")),
            Key::Kw(_) => None,
        })
    }

    fn render(template: &str) -> String {
        let kw = BTreeSet::from(["data".to_string(), "none".to_string()]);
        Template::parse(template, &kw)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
            .render(&mut lookup)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
    }

    #[test]
    fn buildbot_documented_cases_render() {
        let cases = [
            // Plain selectors.
            ("REVISION=%(prop:branch)s", "REVISION=release"),
            ("-b %(src::branch)s", "-b main"),
            ("-r %(src::revision)s", "-r abc123"),
            ("-d %(kw:data)s", "-d extra"),
            ("os=%(worker:os)s", "os=linux"),
            ("t=%(secret:token)s", "t=s3cr3t-value"),
            ("%(prop:missing)s|", "|"),
            ("%(prop:nothing)s|", "|"),
            ("%(prop:count)s", "12"),
            ("%(prop:flag)s %(prop:off)s", "True False"),
            ("%(prop:list)s", r#"["a","b"]"#),
            // `-`: the value when present (even false or empty), else the replacement.
            ("%(prop:missing:-fallback)s", "fallback"),
            ("%(prop:branch:-fallback)s", "release"),
            ("%(prop:empty:-fallback)s", ""),
            ("%(prop:zero:-fallback)s", "0"),
            ("%(prop:nothing:-fallback)s", "fallback"),
            ("%(prop:missing:-)s.", "."),
            // `~`: the replacement also when false.
            ("%(prop:empty:~fallback)s", "fallback"),
            ("%(prop:zero:~fallback)s", "fallback"),
            ("%(prop:off:~fallback)s", "fallback"),
            ("%(prop:branch:~fallback)s", "release"),
            ("%(prop:missing:~fallback)s", "fallback"),
            // `+`: the replacement when present.
            ("%(prop:branch:+--branch)s", "--branch"),
            ("%(prop:missing:+--branch)s", ""),
            ("%(prop:empty:+set)s", "set"),
            // Ternaries, by presence and by truth, with any delimiter.
            ("%(prop:branch:?|yes|no)s", "yes"),
            ("%(prop:missing:?|yes|no)s", "no"),
            ("%(prop:empty:?|yes|no)s", "yes"),
            ("%(prop:empty:#?|yes|no)s", "no"),
            ("%(prop:flag:#?|yes|no)s", "yes"),
            ("%(prop:missing:#?|yes|no)s", "no"),
            ("%(prop:flag:#?/a|b/c)s", "a|b"),
            ("%(prop:branch:?||no)s.", "."),
            // Nested replacements (Buildbot's documented example).
            (
                "REVISION=%(prop:got_revision:-%(src::revision:-unknown)s)s",
                "REVISION=abc123",
            ),
            (
                "%(prop:missing:-%(src:other:revision:-unknown)s)s",
                "unknown",
            ),
            ("%(prop:flag:#?|%(prop:branch)s|none)s", "release"),
            ("%(prop:missing:-a)b)s", "a)b"),
            // Percent signs.
            ("100%% of %(prop:branch)s", "100% of release"),
            ("%%(prop:branch)s", "%(prop:branch)s"),
            ("no substitutions", "no substitutions"),
            ("", ""),
        ];
        for (template, expected) in cases {
            assert_eq!(render(template), expected, "template {template:?}");
        }
    }

    #[test]
    fn malformed_templates_are_refused_with_the_reason() {
        let kw = BTreeSet::from(["data".to_string()]);
        let cases = [
            ("%(prop:branch)", "not closed"),
            ("%(prop:branch", "not closed"),
            ("%(branch)s", "has no selector"),
            ("%(foo:bar)s", "unknown selector 'foo:'"),
            ("%(prop:)s", "'prop:' needs a name"),
            ("%(src:branch)s", "needs an attribute"),
            ("%(src::colour)s", "unknown source stamp attribute 'colour'"),
            (
                "%(worker:shoe_size)s",
                "unknown worker attribute 'shoe_size'",
            ),
            ("%(kw:other)s", "names a keyword that was not given"),
            ("%(prop:x:*y)s", "unknown conditional ':*'"),
            ("%(prop:x:?|yes)s", "two alternatives"),
            ("%(prop:x:?)s", "needs a delimiter"),
            ("%(prop:x:-%(prop:y)s", "not closed"),
            ("50%", "lone '%'"),
            ("%d warnings", "'%d' is not a substitution"),
        ];
        for (template, reason) in cases {
            let err = Template::parse(template, &kw).expect_err(template);
            assert!(
                err.to_string().contains(reason),
                "{template:?}: {err} does not say {reason:?}"
            );
            assert!(
                err.to_string().contains(template),
                "{err} names the template"
            );
        }
    }

    #[test]
    fn a_missing_secret_is_an_error_unless_a_conditional_handles_it() {
        let none = BTreeSet::new();
        let plain = Template::parse("%(secret:nope)s", &none).unwrap();
        assert_eq!(
            plain.render(&mut lookup),
            Err(LookupError::MissingSecret("nope".into()))
        );
        let guarded = Template::parse("%(secret:nope:-anonymous)s", &none).unwrap();
        assert_eq!(guarded.render(&mut lookup).unwrap(), "anonymous");
    }

    #[test]
    fn keys_lists_every_lookup_including_nested_ones() {
        let t = Template::parse(
            "%(prop:a:-%(secret:s)s)s %(src:lib:revision)s",
            &BTreeSet::new(),
        )
        .unwrap();
        let keys: Vec<Key> = t.keys().into_iter().collect();
        assert_eq!(
            keys,
            vec![
                Key::Prop("a".into()),
                Key::Src {
                    codebase: "lib".into(),
                    attr: SourceAttr::Revision
                },
                Key::Secret("s".into()),
            ]
        );
    }
}
