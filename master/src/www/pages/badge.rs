//! `/badges/{builder}.svg`: the builder's last build result as a small
//! picture for READMEs.

use super::html::{esc, state_of};
use super::{Ctx, PageError, PageResult};
use warp::reply::Reply;

fn colour(state: &str) -> &'static str {
    match state {
        "success" => "#4c1",
        "warnings" => "#dfb317",
        "failure" => "#e05d44",
        "exception" | "retry" => "#a4a",
        "running" => "#5ad",
        _ => "#9f9f9f",
    }
}

pub(super) async fn badge(ctx: &Ctx<'_>, file: &str) -> PageResult {
    let name = file
        .strip_suffix(".svg")
        .ok_or_else(|| PageError::NotFound("badges are .svg files".into()))?;
    // The path's segments arrive decoded.
    let name = name.to_string();
    let builderid = *ctx
        .running
        .builder_ids
        .get(&name)
        .ok_or_else(|| PageError::NotFound(format!("no builder named '{name}'")))?;
    let last = ctx.shared.data.last_builds().await?;
    let state = last.get(&builderid).map(state_of).unwrap_or("unknown");
    // Widths from a rough 7 px per character of the 11 px font.
    let left = 10 + 7 * name.chars().count();
    let right = 10 + 7 * state.len();
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"20\" role=\"img\" aria-label=\"{n}: {state}\">\
<title>{n}: {state}</title><rect width=\"{left}\" height=\"20\" fill=\"#555\"/>\
<rect x=\"{left}\" width=\"{right}\" height=\"20\" fill=\"{c}\"/>\
<g fill=\"#fff\" font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\">\
<text x=\"5\" y=\"14\">{n}</text><text x=\"{tx}\" y=\"14\">{state}</text></g></svg>",
        w = left + right,
        n = esc(&name),
        c = colour(state),
        tx = left + 5,
    );
    let reply = warp::reply::with_header(svg, "content-type", "image/svg+xml");
    Ok(warp::reply::with_header(reply, "cache-control", "no-cache").into_response())
}
