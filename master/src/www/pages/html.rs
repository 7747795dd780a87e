//! Small pieces every page uses: escaping, the page shell, results, times.
//!
//! Every piece of data that reaches HTML goes through [`esc`]; nothing here
//! builds markup from unescaped text.

use serde_json::Value;

/// Escape text for HTML element content and attribute values. Control
/// characters other than tab and line ends (a NUL or an ESC in a reason, say)
/// are shown as their Unicode pictures (␀, ␛, ␡) or as U+FFFD: raw, they are
/// parse errors or invisible, and a terminal copying the page would obey them.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {
                out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'))
            }
            '\u{7f}' => out.push('\u{2421}'),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A JSON field as text ("" when missing or not a string).
pub(super) fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// What a page needs besides its body.
pub(super) struct Shell<'a> {
    pub title: &'a str,
    pub site_title: &'a str,
    /// Which navigation entry is the current one.
    pub nav: &'a str,
    /// The logged-in user, if any; `None` with `auth_enabled` shows "log in".
    pub user: Option<&'a str>,
    pub auth_enabled: bool,
    pub csrf: &'a str,
    /// Bus paths whose events refresh the page's `#live` part.
    pub watch: &'a [&'a str],
    /// Shown above the page (the failed-reload banner).
    pub banner: &'a str,
}

const NAV: &[(&str, &str)] = &[
    ("home", "/"),
    ("builders", "/builders"),
    ("waterfall", "/waterfall"),
    ("console", "/console"),
    ("changes", "/changes"),
    ("grid", "/grid"),
    ("workers", "/workers"),
    ("schedulers", "/schedulers"),
];

/// The whole page around `body`.
pub(super) fn page(shell: &Shell<'_>, body: &str) -> String {
    let nav: String = NAV
        .iter()
        .map(|(name, href)| {
            let current = if *name == shell.nav {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"{href}\"{current}>{name}</a>")
        })
        .collect();
    let who = match (shell.user, shell.auth_enabled) {
        (Some(user), _) => format!(
            "<form method=\"post\" action=\"/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf_token\" value=\"{}\">\
<span id=\"user\">{}</span> <button>log out</button></form>",
            esc(shell.csrf),
            esc(user)
        ),
        (None, true) => "<a id=\"login\" href=\"/login\">log in</a>".to_string(),
        (None, false) => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · {site}</title><link rel=\"stylesheet\" href=\"/static/moonbot.css\"></head>\n\
<body data-csrf=\"{csrf}\" data-watch=\"{watch}\"><header><a class=\"site\" href=\"/\">{site}</a><nav>{nav}</nav>\
<span class=\"who\">{who}</span><span id=\"live-status\" title=\"live updates\"></span></header>\n\
{banner}<main><h1>{title}</h1>\n{body}</main>\n<script src=\"/static/moonbot.js\"></script></body></html>\n",
        title = esc(shell.title),
        site = esc(shell.site_title),
        csrf = esc(shell.csrf),
        watch = esc(&shell.watch.join(",")),
        banner = shell.banner,
    )
}

/// The CSS class and word for a build or step: its result, or running/pending.
pub(super) fn state_of(v: &Value) -> &'static str {
    match v["results"].as_i64() {
        Some(r) => crate::results::name(r as i32),
        None if v["started_at"].is_number() || v["complete"] == false => "running",
        None => "pending",
    }
}

/// `2026-11-21 14:03:07` (UTC) for a Unix time.
pub(super) fn when(ts: Option<f64>) -> String {
    let Some(ts) = ts else {
        return String::new();
    };
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(ts as i64) else {
        return String::new();
    };
    format!(
        "<time datetime=\"{}\" data-ts=\"{}\">{:04}-{:02}-{:02} {:02}:{:02}:{:02}</time>",
        ts as i64,
        ts as i64,
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `1 h 2 min`, `3 min 4 s`, `5.2 s`.
pub(super) fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 60.0 {
        format!("{} s", s as u64)
    } else if s < 3600.0 {
        format!("{} min {} s", s as u64 / 60, s as u64 % 60)
    } else {
        format!("{} h {} min", s as u64 / 3600, s as u64 % 3600 / 60)
    }
}

/// How long a build or step took, or has been running.
pub(super) fn elapsed(v: &Value, now: f64) -> String {
    match (v["started_at"].as_f64(), v["complete_at"].as_f64()) {
        (Some(start), Some(end)) => duration(end - start),
        (Some(start), None) => duration(now - start),
        _ => String::new(),
    }
}

/// A hidden CSRF field and a one-button form posting to `action`.
pub(super) fn button(action: &str, csrf: &str, label: &str, class: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\"><input type=\"hidden\" name=\"csrf_token\" value=\"{}\">\
<button class=\"{}\">{}</button></form>",
        esc(action),
        esc(csrf),
        esc(class),
        esc(label)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn shows_control_characters_as_pictures() {
        assert_eq!(
            esc("a\0b\x1b[31mc\x7fd\u{85}e\tf\ng"),
            "a\u{2400}b\u{241b}[31mc\u{2421}d\u{fffd}e\tf\ng"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(3.25), "3.2 s");
        assert_eq!(duration(75.0), "1 min 15 s");
        assert_eq!(duration(3723.0), "1 h 2 min");
    }
}
