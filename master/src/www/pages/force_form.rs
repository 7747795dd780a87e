//! A force scheduler's web form, drawn from its typed parameters: a text
//! box, a text area, a number, a checkbox, a list (several may be chosen
//! when it is `multiple`), or a fixed value shown as text; a codebase is a
//! group of its branch, revision, repository and project. What it posts is
//! read by `forms.rs` through the same parameters, so the page and the
//! checks cannot disagree.

use super::html::esc;
use crate::config::{ForceForm, ForceParam, ParamKind};
use serde_json::Value;

/// The form for scheduler `scheduler` on builder `builderid`; `logged_in`
/// hides the owner field (the user is the owner).
pub(super) fn render(
    scheduler: &str,
    label: &str,
    form: &ForceForm,
    builderid: i64,
    csrf: &str,
    logged_in: bool,
) -> String {
    let mut fields = String::new();
    if !logged_in {
        fields.push_str(&field_html(&form.username, &form.username.name));
    }
    fields.push_str(&field_html(&form.reason, &form.reason.name));
    for codebase in &form.codebases {
        let inner: String = codebase
            .fields()
            .iter()
            .map(|p| field_html(p, &codebase.full_name(p)))
            .collect();
        fields.push_str(&format!(
            "<fieldset class=\"codebase\" data-codebase=\"{}\"><legend>{}</legend>{inner}</fieldset>",
            esc(&codebase.codebase),
            esc(&codebase.label)
        ));
    }
    for p in &form.properties {
        fields.push_str(&field_html(p, &p.name));
    }
    format!(
        "<form method=\"post\" action=\"/builders/{builderid}/force\" class=\"force\" id=\"force-{name}\">\
<input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\"><input type=\"hidden\" name=\"scheduler\" value=\"{name}\">\
<fieldset><legend>{label}</legend>{fields}\
<label>properties <textarea name=\"properties\" rows=\"2\" cols=\"30\" placeholder=\"name=value, one a line\"></textarea></label>\
<button class=\"force\">{button}</button></fieldset></form>",
        name = esc(scheduler),
        csrf = esc(csrf),
        label = esc(label),
        button = esc(&form.button_name),
    )
}

/// One field, posted as `full_name`.
fn field_html(p: &ForceParam, full_name: &str) -> String {
    let name = esc(full_name);
    let label = esc(&p.label);
    let required = if p.required { " required" } else { "" };
    let default = text(&p.default);
    let control = match &p.kind {
        ParamKind::String { size, .. } => format!(
            "<input name=\"{name}\" value=\"{}\" size=\"{size}\"{required}>",
            esc(&default)
        ),
        ParamKind::Username => format!(
            "<input name=\"{name}\" value=\"{}\" placeholder=\"your name\"{required}>",
            esc(&default)
        ),
        ParamKind::Text { cols, rows, .. } => format!(
            "<textarea name=\"{name}\" cols=\"{cols}\" rows=\"{rows}\"{required}>{}</textarea>",
            esc(&default)
        ),
        ParamKind::Int => format!(
            "<input type=\"number\" step=\"1\" name=\"{name}\" value=\"{}\"{required}>",
            esc(&default)
        ),
        // Unchecked sends only the hidden `false`; checked sends `true` after it.
        ParamKind::Boolean => format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"false\"><input type=\"checkbox\" name=\"{name}\" value=\"true\"{}>",
            if p.default == Value::Bool(true) {
                " checked"
            } else {
                ""
            }
        ),
        ParamKind::Choice {
            choices, multiple, ..
        } => {
            let chosen = |c: &str| match &p.default {
                Value::Array(items) => items.iter().any(|i| i.as_str() == Some(c)),
                other => other.as_str() == Some(c),
            };
            let options: String = choices
                .iter()
                .map(|c| {
                    format!(
                        "<option value=\"{}\"{}>{}</option>",
                        esc(c),
                        if chosen(c) { " selected" } else { "" },
                        esc(c)
                    )
                })
                .collect();
            if *multiple {
                // The empty value makes "nothing chosen" a value, not a
                // field left out (which would mean the default).
                format!(
                    "<input type=\"hidden\" name=\"{name}\" value=\"\"><select name=\"{name}\" multiple{required}>{options}</select>"
                )
            } else {
                format!("<select name=\"{name}\"{required}>{options}</select>")
            }
        }
        ParamKind::Fixed => format!("<code class=\"fixed\">{}</code>", esc(&default)),
    };
    format!("<label class=\"param\" data-param=\"{name}\">{label} {control}</label> ")
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null | Value::Array(_) => String::new(),
        other => other.to_string(),
    }
}
