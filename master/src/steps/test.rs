//! `mb.steps.test { command, junit = "reports/*.xml" }`: run the tests (the
//! command is optional), then read the JUnit XML reports the globs match on
//! the worker into Buildbot's test results, list the failed tests in a
//! `failures` log, and sum up passed, failed and skipped tests in the step's
//! summary.
//!
//! Reports come from the worker, so each is fetched with a size limit and
//! parsed by `crate::test_reports` with its limits: a hostile report costs a
//! bounded amount of memory and time, and ends as a parse error in the log.

use super::shell::{self, ShellStep};
use super::{Compiled, RemoteIo, StepContext, StepHost, StepKind};
use crate::lua::Fields;
use crate::render::Renderable;
use crate::results::{FAILURE, SUCCESS, WARNINGS, worst};
use crate::test_reports::junit::{self, Limits, Outcome};
use moonbot_worker::protocol::RemoteCommand;
use serde_json::Value;

/// The largest report read (bytes).
const DEFAULT_MAX_REPORT: u64 = 64 << 20;
/// Failed tests listed in the `failures` log, at most.
const MAX_LISTED_FAILURES: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub struct TestStep {
    /// The command and what every command step has; `None`: only read reports.
    pub command: Option<ShellStep>,
    pub workdir: Renderable,
    /// Globs of reports, relative to `workdir`.
    pub junit: Renderable,
    pub max_report_size: u64,
}

pub fn compile(f: &mut Fields<'_>, builder: &str) -> Compiled {
    let command = if f.get("command").is_some() {
        match shell::compile(f, builder).kind {
            Some(StepKind::Shell(step)) => Some(step),
            _ => None,
        }
    } else {
        None
    };
    let workdir = crate::render::field(f, "workdir")
        .unwrap_or_else(|| Renderable::Literal(Value::String("build".into())));
    let junit = crate::render::field(f, "junit");
    if f.get("junit").is_none() {
        let msg = format!(
            "{}: 'junit' is required (a glob of JUnit XML reports)",
            f.what
        );
        f.error(msg);
    }
    let max_report_size = f
        .integer("max_report_size", 1, i64::MAX)
        .map_or(DEFAULT_MAX_REPORT, |n| n as u64);
    Compiled {
        kind: junit.map(|junit| {
            StepKind::Test(Box::new(TestStep {
                command,
                workdir,
                junit,
                max_report_size,
            }))
        }),
        default_name: "test".into(),
    }
}

pub async fn run<H: StepHost>(
    step: &TestStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    let mut result = SUCCESS;
    if let Some(command) = &step.command {
        result = shell::run(command, ctx).await?;
        if !matches!(result, SUCCESS | WARNINGS | FAILURE) {
            return Ok(result);
        }
    }
    let rendered = async {
        let workdir = ctx.render.render_string(&step.workdir).await?;
        let globs = match ctx.render.render(&step.junit).await? {
            Value::Array(items) => items
                .iter()
                .map(crate::render::interpolate::value_text)
                .collect(),
            one => vec![crate::render::interpolate::value_text(&one)],
        };
        Ok::<_, crate::render::RenderError>((workdir, globs))
    }
    .await;
    let (workdir, globs): (String, Vec<String>) = match rendered {
        Ok(parts) => parts,
        Err(e) => {
            return ctx
                .cannot_start(&format!("could not render 'junit': {e}"))
                .await;
        }
    };
    ctx.host.begin("test").await?;
    let mut reports = Vec::new();
    for glob in &globs {
        let pattern = ctx.path(&format!("{workdir}/{glob}"));
        let (found, outcome) = ctx
            .run_command_with(RemoteCommand::Glob { pattern }, RemoteIo::Log)
            .await?;
        if found != SUCCESS {
            return Ok(worst(result, found));
        }
        reports.extend(outcome.and_then(|o| o.files).unwrap_or_default());
    }
    if reports.is_empty() {
        ctx.host
            .header(&format!("no JUnit report matches {}", globs.join(", ")))
            .await?;
        ctx.host.set_summary("no test report");
        return Ok(worst(result, FAILURE));
    }
    let (mut passed, mut failed, mut skipped) = (0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    for report in reports {
        let bytes = match ctx.read_worker_file(&report, step.max_report_size).await? {
            Ok(bytes) => bytes,
            Err(read) => {
                result = worst(result, read);
                continue;
            }
        };
        let parsed = match junit::parse(&bytes, &Limits::default()) {
            Ok(parsed) => parsed,
            Err(e) => {
                ctx.host
                    .header(&format!("{report}: not a JUnit report: {e}"))
                    .await?;
                result = worst(result, FAILURE);
                continue;
            }
        };
        let counts = parsed.counts();
        ctx.host
            .header(&format!(
                "{report}: {} tests, {} passed, {} failed, {} errors, {} skipped",
                counts.tests, counts.passed, counts.failures, counts.errors, counts.skipped
            ))
            .await?;
        passed += counts.passed;
        failed += counts.failures + counts.errors;
        skipped += counts.skipped;
        for case in &parsed.cases {
            if matches!(case.outcome, Outcome::Failure | Outcome::Error)
                && failures.len() < MAX_LISTED_FAILURES
            {
                failures.push(format!(
                    "{} {}{}: {}",
                    case.outcome.as_str().to_uppercase(),
                    case.classname
                        .as_deref()
                        .map(|c| format!("{c}."))
                        .unwrap_or_default(),
                    case.name,
                    case.message.as_deref().unwrap_or("")
                ));
            }
        }
        ctx.host
            .add_test_results(&report, counts, parsed.cases)
            .await?;
    }
    if !failures.is_empty() {
        ctx.host.use_log("failures").await?;
        for line in &failures {
            ctx.host.header(line).await?;
        }
        ctx.host.use_log("stdio").await?;
    }
    ctx.host.set_summary(&format!(
        "{passed} passed, {failed} failed, {skipped} skipped"
    ));
    if failed > 0 {
        result = worst(result, FAILURE);
    }
    Ok(result)
}
