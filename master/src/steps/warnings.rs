//! Counting warnings in a command's output (Buildbot's
//! `WarningCountingShellCommand`, which its `Compile` step is): the lines
//! `warning_pattern` matches, less those a suppression covers, go into a
//! `warnings` log; any makes a successful step WARNINGS, more than
//! `max_warnings` makes it FAILURE.
//!
//! A suppression says which warnings do not count: a `warning` regex matched
//! against the warning's text, and optionally a `file` regex and a line
//! range. They come from master.lua (`suppress_warnings`) and from a
//! `suppression_file` on the worker, read after the command ran, one per
//! line: `FILE-RE : WARNING-RE [: START[-END]]` (`#` starts a comment;
//! Buildbot's format).
//! The file and line of a warning come from `warning_pattern`'s groups
//! named `file`, `line` and `text`, or its first three groups (Buildbot's
//! `warnExtractFromRegexpGroups`); without groups, the whole line is the text.

use super::{StepContext, StepHost};
use crate::lua::{Fields, RawValue};
use crate::render::Renderable;
use crate::results::{FAILURE, SUCCESS, WARNINGS};

/// Buildbot's default `warningPattern` for `Compile`.
pub const COMPILE_PATTERN: &str = "(?i).*warning[: ].*";
/// The largest suppression file read (bytes).
const MAX_SUPPRESSION_FILE: u64 = 1 << 20;

/// Which warnings count, and how many a step may have.
#[derive(Debug, Clone)]
pub struct WarningRule {
    pub pattern: regex::Regex,
    pub max_warnings: Option<u64>,
    pub suppressions: Vec<Suppression>,
    /// A file on the worker (relative to the workdir) with more suppressions.
    pub suppression_file: Option<Renderable>,
}

impl PartialEq for WarningRule {
    fn eq(&self, other: &Self) -> bool {
        self.pattern.as_str() == other.pattern.as_str()
            && self.max_warnings == other.max_warnings
            && self.suppressions == other.suppressions
            && self.suppression_file == other.suppression_file
    }
}

/// Warnings that do not count.
#[derive(Debug, Clone)]
pub struct Suppression {
    pub file: Option<regex::Regex>,
    pub warning: regex::Regex,
    /// Lines `start..=end` of the file, when given.
    pub lines: Option<(u64, u64)>,
}

impl PartialEq for Suppression {
    fn eq(&self, other: &Self) -> bool {
        self.file.as_ref().map(regex::Regex::as_str)
            == other.file.as_ref().map(regex::Regex::as_str)
            && self.warning.as_str() == other.warning.as_str()
            && self.lines == other.lines
    }
}

impl Suppression {
    fn covers(&self, warning: &Warning<'_>) -> bool {
        if !self.warning.is_match(warning.text) {
            return false;
        }
        if let Some(file_re) = &self.file {
            match warning.file {
                Some(file) if file_re.is_match(file) => {}
                _ => return false,
            }
        }
        match (self.lines, warning.line) {
            (None, _) => true,
            (Some((start, end)), Some(line)) => (start..=end).contains(&line),
            (Some(_), None) => false,
        }
    }
}

/// A warning line, and what the pattern's groups say of it.
struct Warning<'a> {
    file: Option<&'a str>,
    line: Option<u64>,
    text: &'a str,
}

fn extract<'a>(pattern: &regex::Regex, line: &'a str) -> Option<Warning<'a>> {
    let caps = pattern.captures(line)?;
    let named = |n: &str| caps.name(n).map(|m| m.as_str());
    let (file, line_no, text) = if named("text").is_some() || named("file").is_some() {
        (named("file"), named("line"), named("text"))
    } else if caps.len() >= 4 {
        let group = |i| caps.get(i).map(|m| m.as_str());
        (group(1), group(2), group(3))
    } else {
        (None, None, None)
    };
    Some(Warning {
        file,
        line: line_no.and_then(|l| l.trim().parse().ok()),
        text: text.unwrap_or(line),
    })
}

/// Compile `warning_pattern` (default `default_pattern`), `max_warnings`,
/// `suppress_warnings` and `suppression_file`.
pub fn compile(f: &mut Fields<'_>, default_pattern: Option<&str>) -> Option<WarningRule> {
    let what = f.what.clone();
    let pattern = match f
        .string("warning_pattern")
        .or(default_pattern.map(str::to_string))
    {
        Some(p) => p,
        None => {
            for key in ["max_warnings", "suppress_warnings", "suppression_file"] {
                if f.get(key).is_some() {
                    f.error(format!("{what}: '{key}' needs a 'warning_pattern'"));
                }
            }
            return None;
        }
    };
    let pattern = match regex::Regex::new(&pattern) {
        Ok(p) => p,
        Err(e) => {
            f.error(format!(
                "{what}: 'warning_pattern' is not a regular expression: {e}"
            ));
            return None;
        }
    };
    let suppressions = f
        .list("suppress_warnings")
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| compile_suppression(f, i + 1, v))
        .collect();
    Some(WarningRule {
        pattern,
        max_warnings: f.integer("max_warnings", 0, i64::MAX).map(|n| n as u64),
        suppressions,
        suppression_file: crate::render::field(f, "suppression_file"),
    })
}

/// Entry `n` of `suppress_warnings`: `{ file = "re", warning = "re",
/// lines = { start, end } }`, read with its own field reader (unknown
/// fields reported) whose errors go to `f`.
fn compile_suppression(f: &mut Fields<'_>, n: usize, v: &RawValue) -> Option<Suppression> {
    let what = format!("{}: suppress_warnings[{n}]", f.what);
    let RawValue::Table(entries) = v else {
        f.error(format!("{what}: a table, not a {}", v.type_name()));
        return None;
    };
    let mut g = Fields::new(what.clone(), f.at.clone(), entries);
    let mut regex = |key: &'static str| {
        let text = g.string(key)?;
        regex::Regex::new(&text)
            .map_err(|e| g.error(format!("{what}: '{key}' is not a regular expression: {e}")))
            .ok()
    };
    let warning = regex("warning");
    let file = regex("file");
    if g.get("warning").is_none() {
        g.error(format!("{what}: 'warning' is required"));
    }
    let lines = match g.list("lines") {
        None => None,
        Some(items) => {
            let numbers: Vec<Option<u64>> = items
                .iter()
                .map(|v| match v {
                    RawValue::Int(n) => u64::try_from(*n).ok(),
                    _ => None,
                })
                .collect();
            match numbers[..] {
                [Some(one)] => Some((one, one)),
                [Some(start), Some(end)] if start <= end => Some((start, end)),
                _ => {
                    g.error(format!(
                        "{what}: 'lines' is {{ start, end }} (or {{ line }})"
                    ));
                    None
                }
            }
        }
    };
    let mut errors = Vec::new();
    g.finish(&mut errors);
    let failed = !errors.is_empty();
    for e in errors {
        f.error_at(e.location, e.message);
    }
    if failed {
        return None;
    }
    Some(Suppression {
        file,
        warning: warning?,
        lines,
    })
}

/// `WARNING-RE : START[-END]` at the end of a suppression line.
fn trailing_range() -> &'static regex::Regex {
    static RANGE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RANGE.get_or_init(|| {
        regex::Regex::new(r"^(.*?)\s*:\s*([0-9]+)(?:\s*-\s*([0-9]+))?\s*$")
            .expect("a valid pattern")
    })
}

/// Read a suppression file's text: `FILE-RE : WARNING-RE [: START[-END]]`
/// per line; a bad line is an error naming it.
pub fn parse_suppression_file(text: &str) -> Result<Vec<Suppression>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| format!("line {}: {why}", n + 1);
        let Some((file, rest)) = line.split_once(':') else {
            return Err(bad("expected 'FILE-RE : WARNING-RE [: START[-END]]'".into()));
        };
        let (warning, lines) = match trailing_range().captures(rest) {
            Some(caps) => {
                let number = |i: usize| caps.get(i).and_then(|m| m.as_str().parse::<u64>().ok());
                let start = number(2).ok_or_else(|| bad("bad line number".into()))?;
                let end = number(3).unwrap_or(start);
                (caps.get(1).map_or("", |m| m.as_str()), Some((start, end)))
            }
            None => (rest, None),
        };
        let (file, warning) = (file.trim(), warning.trim());
        if file.is_empty() || warning.is_empty() {
            return Err(bad("expected 'FILE-RE : WARNING-RE [: START[-END]]'".into()));
        }
        let file = Some(regex::Regex::new(file).map_err(|e| bad(e.to_string()))?);
        let warning = regex::Regex::new(warning).map_err(|e| bad(e.to_string()))?;
        out.push(Suppression {
            file,
            warning,
            lines,
        });
    }
    Ok(out)
}

/// Collect the warnings of `out` into a `warnings` log and say what they make
/// of `result`; `workdir` is where `suppression_file` is (on the worker).
pub async fn count<H: StepHost>(
    ctx: &mut StepContext<'_, H>,
    rule: &WarningRule,
    out: &super::Collected,
    workdir: &str,
    result: i32,
) -> Result<i32, H::Error> {
    let mut suppressions = rule.suppressions.clone();
    if let Some(file) = &rule.suppression_file {
        match read_suppression_file(ctx, file, workdir).await? {
            Ok(more) => suppressions.extend(more),
            Err(why) => {
                ctx.host.header(&format!("suppression_file: {why}")).await?;
                return Ok(crate::results::worst(result, FAILURE));
            }
        }
    }
    let mut lines = Vec::new();
    let mut suppressed = 0u64;
    for stream in [&out.stdout, &out.stderr] {
        for line in String::from_utf8_lossy(stream).lines() {
            let Some(warning) = extract(&rule.pattern, line) else {
                continue;
            };
            if suppressions.iter().any(|s| s.covers(&warning)) {
                suppressed += 1;
            } else {
                lines.push(line.to_string());
            }
        }
    }
    if suppressed > 0 {
        ctx.host
            .header(&format!("{suppressed} warning(s) suppressed"))
            .await?;
    }
    let count = lines.len() as u64;
    if count == 0 {
        return Ok(result);
    }
    ctx.host.use_log("warnings").await?;
    for line in &lines {
        ctx.host
            .output(super::Stream::Stdout, format!("{line}\n").as_bytes())
            .await?;
    }
    ctx.host.use_log("stdio").await?;
    ctx.host.header(&format!("{count} warning(s)")).await?;
    ctx.host
        .set_property("warnings-count", serde_json::json!(count))
        .await?;
    Ok(match (result, rule.max_warnings) {
        (SUCCESS, Some(max)) if count > max => {
            ctx.host
                .header(&format!("more than max_warnings = {max}"))
                .await?;
            FAILURE
        }
        (SUCCESS, _) => WARNINGS,
        (other, _) => other,
    })
}

/// Fetch and parse the suppression file from the worker.
async fn read_suppression_file<H: StepHost>(
    ctx: &mut StepContext<'_, H>,
    file: &Renderable,
    workdir: &str,
) -> Result<Result<Vec<Suppression>, String>, H::Error> {
    let name = match ctx.render.render_string(file).await {
        Ok(name) => name,
        Err(e) => return Ok(Err(format!("could not render it: {e}"))),
    };
    let path = if name.starts_with('/') {
        name.clone()
    } else {
        format!("{workdir}/{name}")
    };
    let Ok(bytes) = ctx.read_worker_file(&path, MAX_SUPPRESSION_FILE).await? else {
        return Ok(Err(format!("could not read {name} on the worker")));
    };
    Ok(
        parse_suppression_file(&String::from_utf8_lossy(&bytes))
            .map_err(|e| format!("{name}: {e}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppressions_match_text_file_and_lines() {
        let pattern =
            regex::Regex::new(r"^(?P<file>[^:]+):(?P<line>\d+): warning: (?P<text>.*)").unwrap();
        let file = parse_suppression_file(
            "# vendored code warns, and one known warning in main.c\n\
             ^vendor/ : .*\n\
             main\\.c:unused variable:10-20\n\
             .* : deprecated\n",
        )
        .unwrap();
        assert_eq!(file.len(), 3);
        let counted = |line: &str| {
            let w = extract(&pattern, line).unwrap();
            !file.iter().any(|s| s.covers(&w))
        };
        assert!(!counted("vendor/zlib.c:3: warning: anything"));
        assert!(!counted("main.c:12: warning: unused variable 'x'"));
        assert!(
            counted("main.c:30: warning: unused variable 'x'"),
            "outside the range"
        );
        assert!(
            counted("util.c:12: warning: unused variable 'x'"),
            "another file"
        );
        assert!(!counted("util.c:1: warning: 'f' is deprecated"));
        assert!(extract(&pattern, "main.c:1: error: no").is_none());
        // Unnamed groups: file, line, text, as Buildbot's extractor reads them.
        let plain = regex::Regex::new(r"^(.*?):(\d+): warning: (.*)$").unwrap();
        let w = extract(&plain, "a.c:7: warning: x").unwrap();
        assert_eq!((w.file, w.line, w.text), (Some("a.c"), Some(7), "x"));
        // No groups: the whole line is the text.
        let whole = regex::Regex::new(COMPILE_PATTERN).unwrap();
        let w = extract(&whole, "cc1: warning: x").unwrap();
        assert_eq!((w.file, w.line, w.text), (None, None, "cc1: warning: x"));
        let err = parse_suppression_file("no separator\n").unwrap_err();
        assert!(err.starts_with("line 1:"), "{err}");
        let err = parse_suppression_file("\n( : b\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }
}
