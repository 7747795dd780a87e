//! A force request's values read through the scheduler's form
//! ([`ForceForm`]), and the form described the way Buildbot's
//! `/api/v2/forceschedulers` describes it (`all_fields`), for API clients
//! and the web form alike.

use crate::config::{CodebaseParam, ForceForm, ForceParam, ParamKind};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// A value the form refused: the field (as sent) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field '{field}' {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// One codebase's source stamp, as forced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ForcedStamp {
    pub codebase: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub project: String,
}

/// A force request's values, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Collected {
    /// Empty when none was given.
    pub reason: String,
    /// Empty when none was given.
    pub owner: String,
    /// name → value, one per property field.
    pub properties: BTreeMap<String, Value>,
    pub stamps: Vec<ForcedStamp>,
}

/// Read `inputs` (field name → value as sent) through `form`. A field left
/// out takes its default; a name the form does not have is refused, so a
/// typo is not silently a build without the value.
pub fn collect(form: &ForceForm, inputs: &Map<String, Value>) -> Result<Collected, FieldError> {
    let mut known: Vec<String> = vec![form.reason.name.clone(), form.username.name.clone()];
    let mut collected = Collected {
        reason: text_of(field(&form.reason, &form.reason.name, inputs)?),
        owner: text_of(field(&form.username, &form.username.name, inputs)?),
        ..Collected::default()
    };
    for codebase in &form.codebases {
        let value = |p: &ForceParam| -> Result<String, FieldError> {
            Ok(text_of(field(p, &codebase.full_name(p), inputs)?))
        };
        let optional = |s: String| (!s.is_empty()).then_some(s);
        collected.stamps.push(ForcedStamp {
            codebase: codebase.codebase.clone(),
            branch: optional(value(&codebase.branch)?),
            revision: optional(value(&codebase.revision)?),
            repository: value(&codebase.repository)?,
            project: value(&codebase.project)?,
        });
        known.extend(codebase.fields().iter().map(|p| codebase.full_name(p)));
    }
    for p in &form.properties {
        let value = field(p, &p.name, inputs)?;
        collected.properties.insert(p.name.clone(), value);
        known.push(p.name.clone());
    }
    if let Some(unknown) = inputs.keys().find(|k| !known.contains(k)) {
        return Err(FieldError {
            field: unknown.clone(),
            message: format!(
                "is not a field of this form (its fields: {})",
                known.join(", ")
            ),
        });
    }
    Ok(collected)
}

/// A web form's pairs (a name may repeat) as the fields [`collect`] reads:
/// a multiple choice's values as a list (empty ones dropped: the form sends
/// an empty one so that choosing nothing is not leaving the field out),
/// anything else as the last value sent (a checkbox follows a hidden
/// `false`).
pub fn from_form_pairs(form: &ForceForm, pairs: &[(String, String)]) -> Map<String, Value> {
    let multiple: Vec<String> = form
        .properties
        .iter()
        .filter(|p| matches!(p.kind, ParamKind::Choice { multiple: true, .. }))
        .map(|p| p.name.clone())
        .collect();
    let mut fields = Map::new();
    for (name, value) in pairs {
        if multiple.contains(name) {
            let list = fields
                .entry(name.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let (Value::Array(items), false) = (list, value.is_empty()) {
                items.push(Value::from(value.as_str()));
            }
        } else {
            fields.insert(name.clone(), Value::from(value.as_str()));
        }
    }
    fields
}

/// The checked value of `param`, sent as `name`.
fn field(param: &ForceParam, name: &str, inputs: &Map<String, Value>) -> Result<Value, FieldError> {
    param.value(inputs.get(name)).map_err(|message| FieldError {
        field: name.to_string(),
        message,
    })
}

fn text_of(value: Value) -> String {
    match value {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Buildbot's `all_fields`: the owner and reason nested under a nameless
/// group, then each codebase as a nested group, then the properties.
pub fn describe(form: &ForceForm) -> Vec<Value> {
    let mut fields = vec![json!({
        "name": "",
        "fullName": "",
        "label": "",
        "tablabel": "",
        "type": "nested",
        "layout": "vertical",
        "columns": 1,
        "default": "",
        "required": false,
        "hide": false,
        "multiple": false,
        "fields": [
            describe_param(&form.username, &form.username.name),
            describe_param(&form.reason, &form.reason.name),
        ],
    })];
    fields.extend(form.codebases.iter().map(describe_codebase));
    fields.extend(form.properties.iter().map(|p| describe_param(p, &p.name)));
    fields
}

fn describe_codebase(codebase: &CodebaseParam) -> Value {
    json!({
        "name": codebase.codebase,
        "fullName": codebase.codebase,
        "label": codebase.label,
        "tablabel": codebase.label,
        "type": "nested",
        "layout": "vertical",
        "columns": 1,
        "codebase": codebase.codebase,
        "default": "",
        "required": false,
        "hide": false,
        "multiple": false,
        "fields": codebase
            .fields()
            .iter()
            .map(|p| describe_param(p, &codebase.full_name(p)))
            .collect::<Vec<_>>(),
    })
}

fn describe_param(param: &ForceParam, full_name: &str) -> Value {
    let mut out = json!({
        "name": param.name,
        "fullName": full_name,
        "label": param.label,
        "tablabel": param.label,
        "type": param.type_name(),
        "default": param.default,
        "required": param.required,
        "hide": false,
        "multiple": false,
        "regex": Value::Null,
        "maxsize": Value::Null,
        "autopopulate": Value::Null,
        "tooltip": "",
    });
    match &param.kind {
        ParamKind::String { regex, size } => {
            out["regex"] = json!(regex);
            out["size"] = json!(size);
        }
        ParamKind::Text { regex, cols, rows } => {
            out["regex"] = json!(regex);
            out["cols"] = json!(cols);
            out["rows"] = json!(rows);
        }
        ParamKind::Choice {
            choices,
            multiple,
            strict,
        } => {
            out["choices"] = json!(choices);
            out["multiple"] = json!(multiple);
            out["strict"] = json!(strict);
        }
        ParamKind::Username => out["size"] = json!(30),
        ParamKind::Int | ParamKind::Boolean | ParamKind::Fixed => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, kind: ParamKind, default: Value) -> ForceParam {
        ForceParam {
            name: name.into(),
            label: name.into(),
            kind,
            default,
            required: false,
        }
    }

    fn form() -> ForceForm {
        let mut form = ForceForm {
            properties: vec![
                param(
                    "flavour",
                    ParamKind::String {
                        regex: Some("[a-z]+$".into()),
                        size: 10,
                    },
                    json!("debug"),
                ),
                param("jobs", ParamKind::Int, json!(2)),
                param("clean", ParamKind::Boolean, json!(false)),
                param(
                    "targets",
                    ParamKind::Choice {
                        choices: vec!["linux".into(), "mac".into()],
                        multiple: true,
                        strict: true,
                    },
                    json!(["linux"]),
                ),
                param("arch", ParamKind::Fixed, json!("x86_64")),
            ],
            ..ForceForm::default()
        };
        form.properties[1].required = true;
        form.codebases = vec![CodebaseParam {
            codebase: "app".into(),
            label: "app".into(),
            branch: param(
                "branch",
                ParamKind::String {
                    regex: None,
                    size: 10,
                },
                json!("main"),
            ),
            revision: param(
                "revision",
                ParamKind::String {
                    regex: None,
                    size: 10,
                },
                json!(""),
            ),
            repository: param(
                "repository",
                ParamKind::Fixed,
                json!("https://example.org/app.git"),
            ),
            project: param(
                "project",
                ParamKind::String {
                    regex: None,
                    size: 10,
                },
                json!(""),
            ),
        }];
        form
    }

    fn inputs(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let c = collect(&form(), &Map::new()).unwrap();
        assert_eq!(c.properties["flavour"], "debug");
        assert_eq!(c.properties["jobs"], 2);
        assert_eq!(c.properties["clean"], false);
        assert_eq!(c.properties["targets"], json!(["linux"]));
        assert_eq!(c.properties["arch"], "x86_64");
        assert_eq!(
            c.stamps,
            vec![ForcedStamp {
                codebase: "app".into(),
                branch: Some("main".into()),
                revision: None,
                repository: "https://example.org/app.git".into(),
                project: String::new(),
            }]
        );
    }

    #[test]
    fn form_text_and_typed_json_give_the_same_values() {
        let from_form = collect(
            &form(),
            &inputs(json!({"jobs": "8", "clean": "on", "targets": "mac", "app_revision": "abc"})),
        )
        .unwrap();
        let from_api = collect(
            &form(),
            &inputs(json!({"jobs": 8, "clean": true, "targets": ["mac"], "app_revision": "abc"})),
        )
        .unwrap();
        assert_eq!(from_form, from_api);
        assert_eq!(from_api.properties["jobs"], 8);
        assert_eq!(from_api.stamps[0].revision.as_deref(), Some("abc"));
    }

    #[test]
    fn a_wrong_value_names_its_field() {
        let refused = |v: Value| collect(&form(), &inputs(v)).unwrap_err();
        let e = refused(json!({"jobs": "many"}));
        assert_eq!(e.field, "jobs");
        assert_eq!(
            e.to_string(),
            "field 'jobs' must be a whole number, not 'many'"
        );
        assert_eq!(
            refused(json!({"jobs": ""})).message,
            "must be a whole number, not ''"
        );
        assert_eq!(refused(json!({"clean": "maybe"})).field, "clean");
        let choice = refused(json!({"targets": ["linux", "bsd"]}));
        assert_eq!(choice.field, "targets");
        assert!(
            choice
                .message
                .contains("'bsd' is not one of the choices (linux, mac)")
        );
        let regex = refused(json!({"flavour": "Release"}));
        assert!(regex.message.contains("does not match [a-z]+$"), "{regex}");
        let fixed = refused(json!({"arch": "arm64"}));
        assert_eq!(fixed.message, "is fixed to \"x86_64\"");
        assert_eq!(refused(json!({"reason": "a\u{0}b"})).field, "reason");
        let unknown = refused(json!({"flavor": "debug"}));
        assert_eq!(unknown.field, "flavor");
        assert!(unknown.message.contains("flavour"), "{unknown}");
    }

    #[test]
    fn a_web_forms_pairs_become_fields() {
        let pairs: Vec<(String, String)> = [
            ("targets", ""),
            ("targets", "linux"),
            ("targets", "mac"),
            ("clean", "false"),
            ("clean", "true"),
            ("jobs", "3"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let fields = from_form_pairs(&form(), &pairs);
        let c = collect(&form(), &fields).unwrap();
        assert_eq!(c.properties["targets"], json!(["linux", "mac"]));
        assert_eq!(c.properties["clean"], true);
        assert_eq!(c.properties["jobs"], 3);
        let none = from_form_pairs(&form(), &[("targets".into(), String::new())]);
        let c = collect(&form(), &none).unwrap();
        assert_eq!(
            c.properties["targets"],
            json!([]),
            "nothing chosen is not the default"
        );
    }

    #[test]
    fn a_required_field_must_not_be_empty() {
        let mut form = form();
        form.properties[0].required = true;
        let e = collect(&form, &inputs(json!({"flavour": " "}))).unwrap_err();
        assert_eq!(e.to_string(), "field 'flavour' is required");
    }

    #[test]
    fn all_fields_has_buildbots_shape() {
        let fields = describe(&form());
        assert_eq!(fields[0]["type"], "nested");
        assert_eq!(fields[0]["fields"][0]["fullName"], "owner");
        assert_eq!(fields[0]["fields"][0]["type"], "username");
        assert_eq!(fields[0]["fields"][1]["fullName"], "reason");
        assert_eq!(fields[1]["codebase"], "app");
        assert_eq!(fields[1]["fields"][0]["fullName"], "app_branch");
        assert_eq!(fields[1]["fields"][2]["type"], "fixed");
        assert_eq!(fields[2]["type"], "text");
        assert_eq!(fields[2]["regex"], "[a-z]+$");
        assert_eq!(fields[3]["type"], "int");
        assert_eq!(fields[3]["required"], true);
        assert_eq!(fields[4]["type"], "bool");
        assert_eq!(fields[5]["type"], "list");
        assert_eq!(fields[5]["multiple"], true);
        assert_eq!(fields[5]["choices"], json!(["linux", "mac"]));
        assert_eq!(fields[6]["default"], "x86_64");
    }
}
