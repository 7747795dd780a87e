//! A minimal home page: the title, every builder with its last build, and links
//! into the API. (The full status UI comes with the status-page work.)

use crate::data::query::ListQuery;
use crate::runtime::Shared;

/// A warning when the last reload of master.lua failed: what is wrong, and
/// that the previous configuration is still the one running.
async fn reload_banner(shared: &Shared) -> Result<String, String> {
    let last = ListQuery {
        limit: Some(1),
        ..Default::default()
    };
    let (reloads, _) = shared.data.list_reloads(&last).await?;
    let Some(reload) = reloads.first().filter(|r| r["success"] == false) else {
        return Ok(String::new());
    };
    let errors: String = reload["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "<li><code>{}: {}</code></li>",
                escape(e["location"].as_str().unwrap_or("")),
                escape(e["message"].as_str().unwrap_or(""))
            )
        })
        .collect();
    Ok(format!(
        "<div class=\"banner\" id=\"reload-failed\"><strong>The last reload of master.lua ({}) failed</strong>; \
the master keeps running the previous configuration.<ul>{errors}</ul></div>\n",
        escape(reload["trigger"].as_str().unwrap_or("")),
    ))
}

/// Escape text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub async fn render(shared: &Shared) -> Result<String, String> {
    let running = shared.running_config();
    let cfg = &running.loaded.config;
    let mut rows = String::new();
    for b in &cfg.builders {
        let Some(&id) = running.builder_ids.get(&b.name) else {
            continue;
        };
        let q = ListQuery {
            order: vec![("number".into(), true)],
            limit: Some(1),
            ..Default::default()
        }
        .with_eq("builderid", id);
        let (builds, _) = shared.data.list_builds(&q, false).await?;
        let last = builds.first();
        let (result, state) = match last {
            Some(build) => (
                build["results"]
                    .as_i64()
                    .map(|r| crate::results::name(r as i32))
                    .unwrap_or("running"),
                format!(
                    "#{} {}",
                    build["number"],
                    build["state_string"].as_str().unwrap_or("")
                ),
            ),
            None => ("none", "no builds yet".to_string()),
        };
        rows.push_str(&format!(
            "<tr class=\"{result}\"><td><a href=\"/api/v2/builders/{id}/builds?order=-number&amp;limit=20\">{}</a></td><td>{}</td><td>{}</td></tr>\n",
            escape(&b.name),
            escape(result),
            escape(&state),
        ));
    }
    let banner = reload_banner(shared).await?;
    Ok(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:.2em 1em}}\
.success{{background:#dfd}}.failure{{background:#fdd}}.exception,.retry{{background:#fdf}}.cancelled{{background:#eee}}</style>\
.banner{{background:#fdd;border:1px solid #c00;padding:.5em 1em}}\
</head><body><h1>{title}</h1>\n{banner}<table><tr><th>builder</th><th>last result</th><th>last build</th></tr>\n{rows}</table>\
<p>API: <a href=\"/api/v2/builders\">builders</a> · <a href=\"/api/v2/builds?order=-number&amp;limit=50\">builds</a> · \
<a href=\"/api/v2/workers\">workers</a> · <a href=\"/api/v2/buildrequests?complete=false\">queue</a></p></body></html>\n",
        title = escape(&cfg.title),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }
}
