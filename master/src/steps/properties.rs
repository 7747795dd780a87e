//! Steps that set build properties for the steps after them (Buildbot's
//! `SetProperty`, `SetProperties` and `SetPropertyFromCommand`):
//! `mb.steps.set_property { property, value }`,
//! `mb.steps.set_properties { properties }` and
//! `mb.steps.set_property_from_command { command, property | extract_fn }`.
//! A property a step sets has the step's name as its source, as in Buildbot,
//! and any secret in its value is redacted before it is stored.

use super::shell::{self, ShellStep};
use super::{Compiled, StepContext, StepHost, StepKind};
use crate::lua::{Fields, LuaFn, RawValue};
use crate::render::Renderable;
use crate::results::{EXCEPTION, FAILURE, SUCCESS};
use serde_json::Value;

/// `set_property` and `set_properties`: values, rendered when the step runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SetPropertiesStep {
    /// Renders to a table of name → value.
    pub properties: Renderable,
}

/// `set_property_from_command`: a command whose output becomes properties.
#[derive(Debug, Clone, PartialEq)]
pub struct FromCommandStep {
    pub command: ShellStep,
    pub target: Target,
    /// Strip whitespace around stdout before it becomes `property`.
    pub strip: bool,
}

/// What `set_property_from_command` makes of the output.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Its stdout is the value of this property.
    Property(String),
    /// A Lua function `(rc, stdout, stderr)` returns a table of properties.
    Extract(LuaFn),
}

/// `mb.steps.set_property { property = NAME, value = … }`.
pub fn compile_one(f: &mut Fields<'_>) -> Compiled {
    let name = f.required_string("property");
    let value = crate::render::field(f, "value");
    if f.get("value").is_none() {
        let msg = format!("{}: 'value' is required", f.what);
        f.error(msg);
    }
    let default_name = name
        .as_deref()
        .map_or("set_property".to_string(), |n| format!("set {n}"));
    let kind = match (name, value) {
        (Some(name), Some(value)) => Some(StepKind::SetProperties(SetPropertiesStep {
            properties: Renderable::Map([(name, value)].into()),
        })),
        _ => None,
    };
    Compiled { kind, default_name }
}

/// `mb.steps.set_properties { properties = { … } | function(props) … end }`.
pub fn compile_many(f: &mut Fields<'_>) -> Compiled {
    let properties = crate::render::field(f, "properties");
    match f.get("properties") {
        None => {
            let msg = format!("{}: 'properties' is required", f.what);
            f.error(msg);
        }
        Some(RawValue::Table(_) | RawValue::Function(_)) => {}
        Some(other) => {
            let msg = format!(
                "{}: 'properties' must be a table or a function, not a {}",
                f.what,
                other.type_name()
            );
            f.error(msg);
        }
    }
    Compiled {
        kind: properties
            .map(|properties| StepKind::SetProperties(SetPropertiesStep { properties })),
        default_name: "set_properties".into(),
    }
}

/// `mb.steps.set_property_from_command { … }`: a shell step's fields, plus
/// `property` (and `strip`, default true) or `extract_fn`.
pub fn compile_from_command(f: &mut Fields<'_>, builder: &str) -> Compiled {
    let shell = shell::compile(f, builder);
    let property = f.string("property");
    let extract = match f.get("extract_fn") {
        None => None,
        Some(RawValue::Function(func)) => Some(func.clone()),
        Some(other) => {
            let msg = format!(
                "{}: 'extract_fn' must be a function(rc, stdout, stderr), not a {}",
                f.what,
                other.type_name()
            );
            f.error(msg);
            None
        }
    };
    let strip = f.boolean("strip", true);
    let target = match (property, extract) {
        (Some(p), None) => Some(Target::Property(p)),
        (None, Some(e)) => Some(Target::Extract(e)),
        (Some(_), Some(_)) => {
            let msg = format!("{}: give 'property' or 'extract_fn', not both", f.what);
            f.error(msg);
            None
        }
        (None, None) => {
            let msg = format!("{}: 'property' or 'extract_fn' is required", f.what);
            f.error(msg);
            None
        }
    };
    let kind = match (shell.kind, target) {
        (Some(StepKind::Shell(command)), Some(target)) => {
            Some(StepKind::SetPropertyFromCommand(FromCommandStep {
                command,
                target,
                strip,
            }))
        }
        _ => None,
    };
    Compiled {
        kind,
        default_name: "set_property_from_command".into(),
    }
}

/// Render the table and set each property.
pub async fn run_set<H: StepHost>(
    step: &SetPropertiesStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    let rendered = ctx.render.render(&step.properties).await;
    ctx.host.begin("setting properties").await?;
    let table = match rendered {
        Ok(Value::Object(table)) => table,
        Ok(other) => {
            ctx.host
                .header(&format!(
                    "properties must render to a table of name = value, not {other}"
                ))
                .await?;
            return Ok(EXCEPTION);
        }
        Err(e) => {
            ctx.host
                .header(&format!("could not render the properties: {e}"))
                .await?;
            return Ok(EXCEPTION);
        }
    };
    set_all(ctx, table).await?;
    Ok(SUCCESS)
}

async fn set_all<H: StepHost>(
    ctx: &mut StepContext<'_, H>,
    table: serde_json::Map<String, Value>,
) -> Result<(), H::Error> {
    for (name, value) in table {
        ctx.host.header(&format!("{name} = {value}")).await?;
        ctx.host.set_property(&name, value).await?;
    }
    Ok(())
}

/// Run the command, keeping its output, and set what it gives.
pub async fn run_from_command<H: StepHost>(
    step: &FromCommandStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    let (result, out) = shell::execute(&step.command, ctx, true).await?;
    if result != SUCCESS && result != FAILURE {
        return Ok(result);
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match &step.target {
        Target::Property(name) => {
            let value = if step.strip {
                stdout.trim().to_string()
            } else {
                stdout
            };
            ctx.host.set_property(name, Value::String(value)).await?;
        }
        Target::Extract(f) => {
            let args = vec![
                out.rc.map_or(Value::Null, Value::from),
                Value::String(stdout),
                Value::String(String::from_utf8_lossy(&out.stderr).into_owned()),
            ];
            let answer = match ctx.render.lua.call_with(f, args).await {
                Ok(answer) => answer,
                Err(e) => {
                    ctx.host.header(&format!("extract_fn failed: {e}")).await?;
                    return Ok(EXCEPTION);
                }
            };
            match answer.to_json() {
                Ok(Value::Object(table)) => set_all(ctx, table).await?,
                Ok(Value::Null) => {}
                Ok(other) => {
                    ctx.host
                        .header(&format!(
                            "extract_fn (defined at {}) must return a table of name = value, not {other}",
                            f.defined_at
                        ))
                        .await?;
                    return Ok(EXCEPTION);
                }
                Err(e) => {
                    ctx.host.header(&format!("extract_fn: {e}")).await?;
                    return Ok(EXCEPTION);
                }
            }
        }
    }
    Ok(result)
}
