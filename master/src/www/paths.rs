//! URL path segments: names (builders, schedulers, workers) may hold spaces,
//! slashes and any other character, so they are percent-encoded wherever a
//! link is made, and every request path is decoded segment by segment
//! before it is routed (a `%2F` in a name stays inside its segment).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// What a path segment leaves as it is: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` as one segment of a URL path.
pub(crate) fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// The segments of `path`, each percent-decoded; `None` when one is not
/// UTF-8 once decoded.
pub(crate) fn decoded_segments(path: &str) -> Option<Vec<String>> {
    path.trim_matches('/')
        .split('/')
        .map(|s| {
            percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_a_path() {
        for name in [
            "AMD64 Fedora Rawhide 3.x",
            "x86/64",
            "plain-name_1.0",
            "ünï%cödé?#",
        ] {
            let path = format!("/api/v2/forceschedulers/{}", segment(name));
            let segments = decoded_segments(&path).unwrap();
            assert_eq!(segments, ["api", "v2", "forceschedulers", name], "{path}");
        }
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(decoded_segments("/x/%FF"), None);
    }
}
