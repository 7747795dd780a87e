//! Renderables: step arguments that become concrete only when their step runs,
//! Buildbot's `Interpolate`, `Property` and `renderer` in master.lua's terms:
//! `mb.interpolate(template, kw)`, `mb.property(name, default)`,
//! `mb.secret(name)` and Lua functions of the build's properties, alone or
//! inside lists and tables.
//!
//! Why a module of its own: every step kind reads its arguments the same way,
//! so [`Renderable::compile`] reads any field of master.lua (checking templates
//! at checkconfig, at the `file:line` of the constructor) and
//! [`RenderContext::render`] makes it concrete from what the build knows (its
//! properties, source stamps, worker and secrets). The secrets a rendering
//! used are added to the build's [`Redactor`], so their values never show in
//! a log, a summary or the API.
//!
//! This module depends on [`crate::lua`] (functions), [`crate::secrets`]
//! (values) and the worker's info; the step kinds depend on it, never the
//! other way.

pub mod interpolate;

pub use interpolate::{Key, LookupError, SourceAttr, Template, TemplateError, WorkerAttr};

use crate::lua::engine::AddedSteps;
use crate::lua::{CallError, ConfigError, Fields, LuaFn, LuaGeneration, RawKey, RawValue};
use crate::secrets::{Redactor, SecretError, Secrets};
use moonbot_worker::protocol::WorkerInfo;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A build's properties: name → (value, source), Buildbot's shape.
pub type Properties = BTreeMap<String, (Value, String)>;

/// A value from master.lua that may need the running build to become concrete.
#[derive(Debug, Clone, PartialEq)]
pub enum Renderable {
    /// A plain value (string, number, boolean, list or table of them).
    Literal(Value),
    /// `mb.interpolate(template, kw)`.
    Interpolate {
        template: Template,
        kw: BTreeMap<String, Renderable>,
    },
    /// `mb.property(name, default)`: the property's value, or `default` when
    /// it is absent or false (Buildbot's `defaultWhenFalse`, its default).
    Property {
        name: String,
        default: Option<Box<Renderable>>,
        default_when_false: bool,
    },
    /// `mb.secret(name)`.
    Secret(String),
    /// A Lua function of the build's properties; what it returns may be a
    /// renderable again.
    Lua(LuaFn),
    /// A list holding at least one renderable.
    List(Vec<Renderable>),
    /// A table holding at least one renderable.
    Map(BTreeMap<String, Renderable>),
}

/// How deep renderables may return renderables (a Lua function returning
/// `mb.interpolate(…)` is two).
const MAX_DEPTH: usize = 8;

impl Renderable {
    /// Read a field's value. `at` is the `file:line` of the table it is in
    /// (a constructor's own position wins); `what` names the field in errors.
    pub fn compile(value: &RawValue, what: &str, at: &str) -> Result<Renderable, ConfigError> {
        let err = |location: &str, message: String| ConfigError {
            location: location.to_string(),
            message,
        };
        Ok(match value {
            RawValue::Function(f) => Renderable::Lua(f.clone()),
            RawValue::Table(entries) => {
                if let (Some(RawValue::Str(kind)), Some(RawValue::Str(place))) =
                    (value.get("_kind"), value.get("_where"))
                {
                    return compile_tagged(kind, place, value, what);
                }
                let list = entries
                    .iter()
                    .enumerate()
                    .all(|(i, (k, _))| *k == RawKey::Int(i as i64 + 1));
                if list {
                    let items = entries
                        .iter()
                        .map(|(_, v)| Renderable::compile(v, what, at))
                        .collect::<Result<Vec<_>, _>>()?;
                    literal_or(items, Value::Array, Renderable::List)
                } else {
                    let mut map = BTreeMap::new();
                    for (k, v) in entries {
                        let RawKey::Str(name) = k else {
                            return Err(err(at, format!("{what}: a table mixes a list and keys")));
                        };
                        map.insert(name.clone(), Renderable::compile(v, what, at)?);
                    }
                    if map.values().all(|r| matches!(r, Renderable::Literal(_))) {
                        Renderable::Literal(Value::Object(
                            map.into_iter()
                                .map(|(k, r)| match r {
                                    Renderable::Literal(v) => (k, v),
                                    _ => unreachable!("checked above"),
                                })
                                .collect(),
                        ))
                    } else {
                        Renderable::Map(map)
                    }
                }
            }
            other => Renderable::Literal(
                other
                    .to_json()
                    .map_err(|e| err(at, format!("{what}: {e}")))?,
            ),
        })
    }

    /// The literal string, when the value is one.
    pub fn as_literal_str(&self) -> Option<&str> {
        match self {
            Renderable::Literal(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether rendering needs the build (anything but a literal).
    pub fn is_literal(&self) -> bool {
        matches!(self, Renderable::Literal(_))
    }
}

/// Read the field `key` of a step's (or any constructor's) table as a
/// renderable; an error is reported at the table's place, or at the
/// `mb.interpolate` call's.
pub fn field(f: &mut Fields<'_>, key: &'static str) -> Option<Renderable> {
    let raw = f.get(key)?;
    let what = format!("{}: '{key}'", f.what);
    match Renderable::compile(raw, &what, &f.at) {
        Ok(r) => Some(r),
        Err(e) => {
            f.error_at(e.location, e.message);
            None
        }
    }
}

/// A list or table of literals is itself a literal.
fn literal_or(
    items: Vec<Renderable>,
    literal: fn(Vec<Value>) -> Value,
    mixed: fn(Vec<Renderable>) -> Renderable,
) -> Renderable {
    if items.iter().all(Renderable::is_literal) {
        Renderable::Literal(literal(
            items
                .into_iter()
                .map(|r| match r {
                    Renderable::Literal(v) => v,
                    _ => unreachable!("checked above"),
                })
                .collect(),
        ))
    } else {
        mixed(items)
    }
}

/// `mb.interpolate`, `mb.property` and `mb.secret` tables.
fn compile_tagged(
    kind: &str,
    at: &str,
    value: &RawValue,
    what: &str,
) -> Result<Renderable, ConfigError> {
    let err = |message: String| ConfigError {
        location: at.to_string(),
        message: format!("{what}: {message}"),
    };
    let string = |field: &str| match value.get(field) {
        Some(RawValue::Str(s)) => Ok(s.clone()),
        Some(other) => Err(err(format!(
            "'{field}' must be a string, not a {}",
            other.type_name()
        ))),
        None => Err(err(format!("'{field}' is required"))),
    };
    match kind {
        "interpolate" => {
            let text = string("template")?;
            let mut kw = BTreeMap::new();
            match value.get("kw") {
                None | Some(RawValue::Nil) => {}
                Some(RawValue::Table(entries)) => {
                    for (k, v) in entries {
                        let RawKey::Str(name) = k else {
                            return Err(
                                err("the keywords must be a table with string keys".into()),
                            );
                        };
                        kw.insert(name.clone(), Renderable::compile(v, what, at)?);
                    }
                }
                Some(other) => {
                    return Err(err(format!(
                        "the keywords must be a table, not a {}",
                        other.type_name()
                    )));
                }
            }
            let names: BTreeSet<String> = kw.keys().cloned().collect();
            let template = Template::parse(&text, &names).map_err(|e| err(e.to_string()))?;
            Ok(Renderable::Interpolate { template, kw })
        }
        "property" => {
            let name = string("name")?;
            let default = match value.get("default") {
                None | Some(RawValue::Nil) => None,
                Some(v) => Some(Box::new(Renderable::compile(v, what, at)?)),
            };
            let default_when_false =
                !matches!(value.get("default_when_false"), Some(RawValue::Bool(false)));
            Ok(Renderable::Property {
                name,
                default,
                default_when_false,
            })
        }
        "secret" => Ok(Renderable::Secret(string("name")?)),
        other => Err(err(format!(
            "expected a value, mb.interpolate, mb.property, mb.secret or a function, got a {other}"
        ))),
    }
}

/// A build's source stamp, as `%(src:…)s` reads it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SourceStamp {
    pub codebase: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub project: String,
}

/// Why a renderable could not be made concrete (the step ends EXCEPTION).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Call(#[from] CallError),
    /// A Lua function returned something that is no renderable.
    #[error("{0}")]
    Returned(String),
    #[error("renderables nest more than {MAX_DEPTH} deep")]
    TooDeep,
    #[error("{what} must be {expected}, not {got}")]
    Type {
        what: String,
        expected: &'static str,
        got: String,
    },
}

/// What a build knows, to render its steps' arguments.
pub struct RenderContext<'a> {
    pub properties: &'a Properties,
    pub sources: &'a [SourceStamp],
    pub worker_name: &'a str,
    pub worker: &'a WorkerInfo,
    pub secrets: &'a Secrets,
    pub lua: &'a LuaGeneration,
    /// Every secret a rendering used is added here.
    pub redactor: &'a Redactor,
    /// Steps the build's functions add (`mb.build:add_steps_*`); `None`:
    /// rendering outside a build's steps, where adding is an error.
    pub added_steps: Option<&'a std::sync::Mutex<Vec<AddedSteps>>>,
}

impl RenderContext<'_> {
    /// Call a Lua function of the build, keeping the steps it adds.
    pub async fn call_lua(&self, f: &LuaFn, args: Vec<Value>) -> Result<RawValue, CallError> {
        match self.added_steps {
            Some(sink) => {
                let (value, added) = self.lua.call_in_build(f, args).await?;
                if !added.is_empty() {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).extend(added);
                }
                Ok(value)
            }
            None => self.lua.call_with(f, args).await,
        }
    }
}

impl RenderContext<'_> {
    /// The properties as one JSON object of values (what Lua functions get).
    pub fn properties_json(&self) -> Value {
        Value::Object(
            self.properties
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// Make `r` concrete.
    pub async fn render(&self, r: &Renderable) -> Result<Value, RenderError> {
        self.render_at(r, 0).await
    }

    /// Render `r` as text (see [`interpolate::value_text`]).
    pub async fn render_string(&self, r: &Renderable) -> Result<String, RenderError> {
        if let Some(s) = r.as_literal_str() {
            return Ok(s.to_string());
        }
        Ok(interpolate::value_text(&self.render(r).await?))
    }

    fn render_at<'s>(
        &'s self,
        r: &'s Renderable,
        depth: usize,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Value, RenderError>> + Send + 's>> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(RenderError::TooDeep);
            }
            Ok(match r {
                Renderable::Literal(v) => v.clone(),
                Renderable::List(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        out.push(self.render_at(item, depth + 1).await?);
                    }
                    Value::Array(out)
                }
                Renderable::Map(map) => {
                    let mut out = serde_json::Map::new();
                    for (k, item) in map {
                        out.insert(k.clone(), self.render_at(item, depth + 1).await?);
                    }
                    Value::Object(out)
                }
                Renderable::Secret(name) => Value::String(self.secret(name)?),
                Renderable::Property {
                    name,
                    default,
                    default_when_false,
                } => {
                    let value = self.properties.get(name).map(|(v, _)| v);
                    let use_default = match value {
                        None | Some(Value::Null) => true,
                        Some(v) => *default_when_false && !interpolate::truthy(v),
                    };
                    match default.as_deref().filter(|_| use_default) {
                        Some(d) => self.render_at(d, depth + 1).await?,
                        None => value.cloned().unwrap_or(Value::Null),
                    }
                }
                Renderable::Interpolate { template, kw } => {
                    let mut kw_values = BTreeMap::new();
                    for (name, item) in kw {
                        kw_values.insert(name.as_str(), self.render_at(item, depth + 1).await?);
                    }
                    Value::String(template.render(&mut |key| self.lookup(key, &kw_values))?)
                }
                Renderable::Lua(f) => {
                    let returned = self.call_lua(f, vec![self.properties_json()]).await?;
                    let again = Renderable::compile(
                        &returned,
                        &format!("the function defined at {}", f.defined_at),
                        &f.defined_at,
                    )
                    .map_err(|e| RenderError::Returned(e.to_string()))?;
                    self.render_at(&again, depth + 1).await?
                }
            })
        })
    }

    /// One key of a template.
    fn lookup(&self, key: &Key, kw: &BTreeMap<&str, Value>) -> Result<Option<Value>, RenderError> {
        Ok(match key {
            Key::Prop(name) => self.properties.get(name).map(|(v, _)| v.clone()),
            Key::Kw(name) => kw.get(name.as_str()).cloned(),
            Key::Secret(name) => self.secret_value(name)?.map(Value::String),
            Key::Src { codebase, attr } => self
                .sources
                .iter()
                .find(|s| &s.codebase == codebase)
                .and_then(|s| match attr {
                    SourceAttr::Branch => s.branch.clone(),
                    SourceAttr::Revision => s.revision.clone(),
                    SourceAttr::Repository => Some(s.repository.clone()),
                    SourceAttr::Project => Some(s.project.clone()),
                    SourceAttr::Codebase => Some(s.codebase.clone()),
                })
                .map(Value::String),
            Key::Worker(attr) => {
                let w = self.worker;
                match attr {
                    WorkerAttr::Name => Some(self.worker_name.into()),
                    WorkerAttr::Version => Some(w.version.clone().into()),
                    WorkerAttr::Os => Some(w.os.clone().into()),
                    WorkerAttr::Arch => Some(w.arch.clone().into()),
                    WorkerAttr::Cpus => Some(w.cpus.into()),
                    WorkerAttr::Hostname => Some(w.hostname.clone().into()),
                    WorkerAttr::Admin => w.admin.clone().map(Value::from),
                    WorkerAttr::Host => w.host_description.clone().map(Value::from),
                }
            }
        })
    }

    /// A secret's value, `None` when no provider has it; the build's
    /// redactor learns it first.
    fn secret_value(&self, name: &str) -> Result<Option<String>, RenderError> {
        Ok(self.secrets.get(name)?.map(|secret| {
            self.redactor.add(&secret);
            secret.value().to_string()
        }))
    }

    /// A secret's value; an error when no provider has it.
    fn secret(&self, name: &str) -> Result<String, RenderError> {
        self.secret_value(name)?
            .ok_or_else(|| LookupError::MissingSecret(name.to_string()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> String {
        "master.lua:7".into()
    }

    fn tagged(kind: &str, fields: Vec<(&str, RawValue)>) -> RawValue {
        let mut entries = vec![
            (RawKey::Str("_kind".into()), RawValue::Str(kind.into())),
            (
                RawKey::Str("_where".into()),
                RawValue::Str("master.lua:3".into()),
            ),
        ];
        for (k, v) in fields {
            entries.push((RawKey::Str(k.into()), v));
        }
        RawValue::Table(entries)
    }

    #[test]
    fn plain_values_and_lists_of_them_are_literals() {
        let list = RawValue::Table(vec![
            (RawKey::Int(1), RawValue::Str("make".into())),
            (RawKey::Int(2), RawValue::Int(4)),
        ]);
        assert_eq!(
            Renderable::compile(&list, "command", &at()).unwrap(),
            Renderable::Literal(serde_json::json!(["make", 4]))
        );
    }

    #[test]
    fn a_bad_template_is_an_error_at_the_interpolate_call() {
        let raw = tagged(
            "interpolate",
            vec![("template", RawValue::Str("%(kw:nope)s".into()))],
        );
        let err = Renderable::compile(&raw, "builder 'b': step 'x': command", &at()).unwrap_err();
        assert_eq!(err.location, "master.lua:3");
        assert!(err.message.contains("kw:nope"), "{}", err.message);
        assert!(err.message.starts_with("builder 'b': step 'x': command"));
    }

    #[test]
    fn a_list_with_a_renderable_stays_a_list() {
        let list = RawValue::Table(vec![
            (RawKey::Int(1), RawValue::Str("echo".into())),
            (
                RawKey::Int(2),
                tagged("property", vec![("name", RawValue::Str("branch".into()))]),
            ),
        ]);
        let r = Renderable::compile(&list, "command", &at()).unwrap();
        assert!(matches!(r, Renderable::List(ref items) if items.len() == 2));
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        let raw = tagged("step.shell", vec![]);
        let err = Renderable::compile(&raw, "env 'X'", &at()).unwrap_err();
        assert!(err.message.contains("got a step.shell"), "{}", err.message);
    }
}
