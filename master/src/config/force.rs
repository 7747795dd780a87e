//! A force scheduler's form: Buildbot's typed force parameters
//! (`StringParameter`, `TextParameter`, `IntParameter`, `BooleanParameter`,
//! `ChoiceStringParameter`, `UserNameParameter`, `FixedParameter` and
//! `CodebaseParameter`), written `mb.params.*{…}` in master.lua.
//!
//! Everything a value could be checked against (its type, a default that
//! fits it, a regular expression that compiles, choices that contain the
//! default) is checked here, when the configuration is compiled, so a form
//! the master serves can never fail on its own definition. The values a
//! user sends are checked in [`crate::schedulers::force_params`].

use crate::lua::fields::tagged;
use crate::lua::{ConfigError, Fields, RawValue};
use serde_json::Value;
use std::collections::BTreeSet;

/// What a force scheduler asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ForceForm {
    /// The submit button's text (Buildbot's `buttonName`).
    pub button_name: String,
    /// `reason`: the buildset's reason.
    pub reason: ForceParam,
    /// `owner`: who forced it (a logged-in user, whatever the form says).
    pub username: ForceParam,
    /// One source stamp per codebase; none builds without a revision.
    pub codebases: Vec<CodebaseParam>,
    /// Build properties, each under its name.
    pub properties: Vec<ForceParam>,
}

impl Default for ForceForm {
    fn default() -> Self {
        ForceForm {
            button_name: "Start build".into(),
            reason: ForceParam::string("reason", ""),
            username: ForceParam {
                name: "owner".into(),
                label: "owner".into(),
                kind: ParamKind::Username,
                default: Value::from(""),
                required: false,
            },
            codebases: Vec::new(),
            properties: Vec::new(),
        }
    }
}

/// One field of the form.
#[derive(Debug, Clone, PartialEq)]
pub struct ForceParam {
    /// The field's name: the property it sets, or its place in a codebase.
    pub name: String,
    pub label: String,
    pub kind: ParamKind,
    /// Used when the request leaves the field out; of the kind's type.
    pub default: Value,
    /// An empty value is refused.
    pub required: bool,
}

impl ForceParam {
    fn string(name: &str, default: &str) -> ForceParam {
        ForceParam {
            name: name.into(),
            label: name.into(),
            kind: ParamKind::String {
                regex: None,
                size: 10,
            },
            default: Value::from(default),
            required: false,
        }
    }

    /// Buildbot's name for the field's type in `/api/v2/forceschedulers`.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ParamKind::String { .. } => "text",
            ParamKind::Text { .. } => "textarea",
            ParamKind::Int => "int",
            ParamKind::Boolean => "bool",
            ParamKind::Choice { .. } => "list",
            ParamKind::Username => "username",
            ParamKind::Fixed => "fixed",
        }
    }
}

impl ForceParam {
    /// The value a request gives this field (`None` when it left the field
    /// out), checked and of the field's type: a string, a whole number, a
    /// boolean, or a list of strings for a multiple choice. A form sends
    /// everything as text; the API may send typed JSON. `Err` says what is
    /// wrong, for a message that names the field.
    pub fn value(&self, input: Option<&Value>) -> Result<Value, String> {
        let given = input.filter(|v| !v.is_null());
        let value = match (&self.kind, given) {
            (ParamKind::Fixed, None) => return Ok(self.default.clone()),
            (ParamKind::Fixed, Some(v)) if same_text(v, &self.default) => {
                return Ok(self.default.clone());
            }
            (ParamKind::Fixed, Some(_)) => {
                return Err(format!("is fixed to {}", self.default));
            }
            (_, None) => self.default.clone(),
            (kind, Some(v)) => convert(kind, v)?,
        };
        let empty = match &value {
            Value::String(s) => s.trim().is_empty(),
            Value::Array(items) => items.is_empty(),
            _ => false,
        };
        if self.required && empty {
            return Err("is required".into());
        }
        check(&self.kind, &value)?;
        Ok(value)
    }

    /// Whether the default is a value of the field.
    fn check_default(&self) -> Result<(), String> {
        if self.kind == ParamKind::Fixed {
            return Ok(());
        }
        check(&self.kind, &convert(&self.kind, &self.default)?)
    }
}

/// A fixed field's value as text, to compare what a form sent with it.
fn same_text(given: &Value, fixed: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text(given) == text(fixed)
}

/// `v` as a value of `kind`.
fn convert(kind: &ParamKind, v: &Value) -> Result<Value, String> {
    match kind {
        ParamKind::String { .. } | ParamKind::Text { .. } | ParamKind::Username => match v {
            Value::String(_) => Ok(v.clone()),
            _ => Err("must be a string".into()),
        },
        ParamKind::Int => match v {
            Value::Number(n) if n.is_i64() => Ok(v.clone()),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("must be a whole number, not '{}'", s.escape_debug())),
            _ => Err("must be a whole number".into()),
        },
        ParamKind::Boolean => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" | "1" => Ok(Value::Bool(true)),
                "false" | "off" | "no" | "0" | "" => Ok(Value::Bool(false)),
                _ => Err(format!("must be true or false, not '{}'", s.escape_debug())),
            },
            _ => Err("must be true or false".into()),
        },
        ParamKind::Choice { multiple, .. } => match (v, multiple) {
            (Value::String(_), false) => Ok(v.clone()),
            (Value::String(s), true) => Ok(Value::Array(vec![Value::from(s.as_str())])),
            (Value::Array(items), true) if items.iter().all(Value::is_string) => Ok(v.clone()),
            (_, true) => Err("must be a list of strings".into()),
            (_, false) => Err("must be a string".into()),
        },
        ParamKind::Fixed => Ok(v.clone()),
    }
}

/// What a value of `kind` must also be: no NUL (PostgreSQL cannot store
/// one), matching the field's `regex`, one of strict choices.
fn check(kind: &ParamKind, value: &Value) -> Result<(), String> {
    let texts: Vec<&str> = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    // No length limit here: a request's body is at most 1 MiB, and lists
    // cut long texts when they show them.
    if texts.iter().any(|text| text.contains('\0')) {
        return Err("must not contain a NUL character".into());
    }
    match kind {
        ParamKind::String {
            regex: Some(pattern),
            ..
        }
        | ParamKind::Text {
            regex: Some(pattern),
            ..
        } => {
            // Python's `re.match`, as Buildbot checks: from the start.
            let anchored =
                regex::Regex::new(&format!("^(?:{pattern})")).map_err(|e| e.to_string())?;
            match texts.first() {
                Some(text) if !text.is_empty() && !anchored.is_match(text) => Err(format!(
                    "'{}' does not match {pattern}",
                    text.escape_debug()
                )),
                _ => Ok(()),
            }
        }
        ParamKind::Choice {
            choices,
            strict: true,
            ..
        } => match texts.iter().find(|t| !choices.iter().any(|c| c == **t)) {
            Some(other) => Err(format!(
                "'{}' is not one of the choices ({})",
                other.escape_debug(),
                choices.join(", ")
            )),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// What a field holds.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamKind {
    /// One line; `regex` must match it (`re.match`: from the start).
    String {
        regex: Option<String>,
        size: u32,
    },
    /// Several lines.
    Text {
        regex: Option<String>,
        cols: u32,
        rows: u32,
    },
    Int,
    Boolean,
    /// One of `choices` or, with `multiple`, a list of them; without
    /// `strict`, other values are taken too.
    Choice {
        choices: Vec<String>,
        multiple: bool,
        strict: bool,
    },
    /// Who forces the build.
    Username,
    /// Always its default; shown, not editable.
    Fixed,
}

/// A codebase's source stamp: branch, revision, repository and project.
#[derive(Debug, Clone, PartialEq)]
pub struct CodebaseParam {
    pub codebase: String,
    pub label: String,
    pub branch: ForceParam,
    pub revision: ForceParam,
    pub repository: ForceParam,
    pub project: ForceParam,
}

impl CodebaseParam {
    /// Its fields in order, as (`branch` …, field).
    pub fn fields(&self) -> [&ForceParam; 4] {
        [
            &self.branch,
            &self.revision,
            &self.repository,
            &self.project,
        ]
    }

    /// The name a field is sent under: Buildbot's `fullName`, the field's
    /// name after the codebase's and `_` (`app_branch`), or alone for the
    /// default codebase (`branch`).
    pub fn full_name(&self, field: &ForceParam) -> String {
        if self.codebase.is_empty() {
            field.name.clone()
        } else {
            format!("{}_{}", self.codebase, field.name)
        }
    }

    fn plain(codebase: &str) -> CodebaseParam {
        CodebaseParam {
            codebase: codebase.into(),
            label: if codebase.is_empty() {
                "sources".into()
            } else {
                codebase.into()
            },
            branch: ForceParam::string("branch", ""),
            revision: ForceParam::string("revision", ""),
            repository: ForceParam::string("repository", ""),
            project: ForceParam::string("project", ""),
        }
    }
}

/// Reads a force scheduler's form fields from `f` (`reason`, `username`,
/// `codebases`, `properties`, `button_name`); errors go to `f` and `errors`.
pub(super) fn compile_force_form(
    f: &mut Fields<'_>,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> ForceForm {
    let mut form = ForceForm::default();
    if let Some(name) = f.string("button_name") {
        form.button_name = name;
    }
    if let Some(raw) = f.get("reason") {
        let mut context = Context::new(at, errors);
        if let Some(p) = compile_param(raw, Some("reason"), &mut context) {
            form.reason = p;
        }
    }
    if let Some(raw) = f.get("username") {
        let mut context = Context::new(at, errors);
        if let Some(p) = compile_param(raw, Some("owner"), &mut context) {
            if p.kind == ParamKind::Username || p.kind == ParamKind::Fixed {
                form.username = p;
            } else {
                context.error(
                    "force: 'username' must be mb.params.username{…} or mb.params.fixed{…}".into(),
                );
            }
        }
    }
    for raw in f.list("codebases").unwrap_or_default() {
        let mut context = Context::new(at, errors);
        if let Some(c) = compile_codebase(raw, &mut context) {
            form.codebases.push(c);
        }
    }
    for raw in f.list("properties").unwrap_or_default() {
        let mut context = Context::new(at, errors);
        if let Some(p) = compile_param(raw, None, &mut context) {
            form.properties.push(p);
        }
    }
    check_names(&form, at, errors);
    form
}

/// Where errors of one field go.
struct Context<'e> {
    at: String,
    errors: &'e mut Vec<ConfigError>,
}

impl<'e> Context<'e> {
    fn new(at: &str, errors: &'e mut Vec<ConfigError>) -> Self {
        Context {
            at: at.to_string(),
            errors,
        }
    }

    fn error(&mut self, message: String) {
        self.errors.push(ConfigError {
            location: self.at.clone(),
            message,
        });
    }
}

/// Two fields may not be sent under one name.
fn check_names(form: &ForceForm, at: &str, errors: &mut Vec<ConfigError>) {
    let mut seen: BTreeSet<String> = ["builderid".to_string(), "properties".to_string()].into();
    let mut names = vec![form.reason.name.clone(), form.username.name.clone()];
    for c in &form.codebases {
        names.extend(c.fields().iter().map(|p| c.full_name(p)));
    }
    names.extend(form.properties.iter().map(|p| p.name.clone()));
    for name in names {
        if !seen.insert(name.clone()) {
            errors.push(ConfigError {
                location: at.to_string(),
                message: format!("force: two fields are named '{name}'"),
            });
        }
    }
    let mut codebases = BTreeSet::new();
    for c in &form.codebases {
        if !codebases.insert(&c.codebase) {
            errors.push(ConfigError {
                location: at.to_string(),
                message: format!("force: codebase '{}' is listed twice", c.codebase),
            });
        }
    }
}

/// A codebase: a string (its name, every field a free string) or
/// `mb.params.codebase{…}`.
fn compile_codebase(raw: &RawValue, context: &mut Context<'_>) -> Option<CodebaseParam> {
    if let RawValue::Str(name) = raw {
        return Some(CodebaseParam::plain(name));
    }
    let (kind, at, entries) = tagged(
        raw,
        "a codebase name or mb.params.codebase{…}",
        "force: 'codebases'",
        &context.at,
        context.errors,
    )?;
    if kind != "param.codebase" {
        context.error(format!(
            "force: 'codebases' takes names or mb.params.codebase{{…}}, not a {kind}"
        ));
        return None;
    }
    let mut f = Fields::new("codebase", at.clone(), entries);
    let name = f.string("codebase").unwrap_or_default();
    let mut codebase = CodebaseParam::plain(&name);
    if let Some(label) = f.string("label") {
        codebase.label = label;
    }
    let mut inner = Context::new(&at, context.errors);
    for (field, slot) in [
        ("branch", &mut codebase.branch),
        ("revision", &mut codebase.revision),
        ("repository", &mut codebase.repository),
        ("project", &mut codebase.project),
    ] {
        match f.get(field) {
            None => {}
            // A plain value: that value, fixed.
            Some(RawValue::Str(value)) => {
                *slot = ForceParam {
                    name: field.into(),
                    label: field.into(),
                    kind: ParamKind::Fixed,
                    default: Value::from(value.as_str()),
                    required: false,
                };
            }
            Some(raw) => {
                if let Some(p) = compile_param(raw, Some(field), &mut inner) {
                    if matches!(
                        p.kind,
                        ParamKind::Int | ParamKind::Boolean | ParamKind::Username
                    ) || matches!(p.kind, ParamKind::Choice { multiple: true, .. })
                    {
                        inner.error(format!(
                            "codebase: '{field}' must be a string, choice or fixed parameter"
                        ));
                    } else {
                        *slot = p;
                    }
                }
            }
        }
    }
    f.finish(context.errors);
    Some(codebase)
}

/// One `mb.params.*{…}`. `forced_name`: the name the field must have (a
/// codebase's `branch` …, `reason`, `owner`); then `name` may be left out.
fn compile_param(
    raw: &RawValue,
    forced_name: Option<&str>,
    context: &mut Context<'_>,
) -> Option<ForceParam> {
    let (kind, at, entries) = tagged(
        raw,
        "mb.params.*{…}",
        "force parameter",
        &context.at,
        context.errors,
    )?;
    let what = format!("mb.params.{}", kind.trim_start_matches("param."));
    let mut f = Fields::new(what.clone(), at, entries);
    let name = match forced_name {
        Some(forced) => {
            let given = f.string("name");
            if given.as_deref().is_some_and(|g| g != forced) {
                f.error(format!("{what}: this field is named '{forced}'"));
            }
            forced.to_string()
        }
        None => f.required_string("name").unwrap_or_default(),
    };
    if forced_name.is_none() && !name.is_empty() && !valid_property_name(&name) {
        f.error(format!(
            "{what}: name '{name}' must be letters, digits, '_', '-' or '.' (it names a property)"
        ));
    }
    let label = f.string("label").unwrap_or_else(|| name.clone());
    let required = f.boolean("required", false);
    let regex = |f: &mut Fields<'_>| {
        let pattern = f.string("regex")?;
        match regex::Regex::new(&pattern) {
            Ok(_) => Some(pattern),
            Err(e) => {
                f.error(format!("{what}: 'regex' does not compile: {e}"));
                None
            }
        }
    };
    let (param_kind, fallback) = match kind {
        "param.string" => {
            let regex = regex(&mut f);
            let size = f.integer("size", 1, 1000).unwrap_or(10) as u32;
            (ParamKind::String { regex, size }, Value::from(""))
        }
        "param.text" => {
            let regex = regex(&mut f);
            let cols = f.integer("cols", 1, 1000).unwrap_or(80) as u32;
            let rows = f.integer("rows", 1, 1000).unwrap_or(20) as u32;
            (ParamKind::Text { regex, cols, rows }, Value::from(""))
        }
        "param.int" => (ParamKind::Int, Value::from(0)),
        "param.boolean" => (ParamKind::Boolean, Value::from(false)),
        "param.choice" => {
            let choices = f.string_list("choices");
            let multiple = f.boolean("multiple", false);
            let strict = f.boolean("strict", true);
            if choices.is_empty() {
                f.error(format!("{what}: 'choices' (a list of strings) is required"));
            }
            let fallback = if multiple {
                Value::Array(Vec::new())
            } else {
                choices
                    .first()
                    .map_or(Value::from(""), |c| Value::from(c.as_str()))
            };
            (
                ParamKind::Choice {
                    choices,
                    multiple,
                    strict,
                },
                fallback,
            )
        }
        "param.username" => (ParamKind::Username, Value::from("")),
        "param.fixed" => (ParamKind::Fixed, Value::Null),
        other => {
            f.error(format!(
                "force parameter: unknown kind '{other}' (known: string, text, int, boolean, choice, username, fixed)"
            ));
            f.finish(context.errors);
            return None;
        }
    };
    let default = match f.get("default") {
        None if param_kind == ParamKind::Fixed => {
            f.error(format!("{what}: 'default' (its value) is required"));
            Value::Null
        }
        None => fallback,
        Some(raw) => match raw.to_json() {
            Ok(value) => value,
            Err(e) => {
                f.error(format!("{what}: 'default': {e}"));
                Value::Null
            }
        },
    };
    let param = ForceParam {
        name,
        label,
        kind: param_kind,
        default,
        required,
    };
    if let Err(e) = param.check_default() {
        f.error(format!("{what} '{}': 'default' {e}", param.name));
    }
    f.finish(context.errors);
    Some(param)
}

/// A property name a form may set.
fn valid_property_name(name: &str) -> bool {
    name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
