//! Tidy tests: invariants of the source tree that the compiler does not check,
//! after rust-analyzer's `xtask/src/tidy.rs`. Each check reads `master/src` and
//! `worker/src` as text and fails with every violation as
//! `path:line: what, and what to do instead`.
//!
//! Comments, string and char literals, and `#[cfg(test)] mod … { … }` blocks
//! are blanked out (line numbers kept) before a check looks at the code, so
//! only code that ships is checked.
//!
//! Every check is a `fn check_x(root: &Path) -> Vec<String>` over a workspace
//! root. One test runs it on the real tree; a companion test runs it on a tree
//! planted with violations in a temporary directory and asserts it reports
//! them (and nothing else), so a check that stops finding anything fails too.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The only places that may name `mlua`: the Lua engine.
const MLUA_ALLOWED: &[&str] = &["master/src/lua/"];

/// The only places that may name `sea_orm`: the data layer, the database
/// schema, and the runtime that opens the connection. An entry ending in `/`
/// is a directory, any other one a single file.
const SEA_ORM_ALLOWED: &[&str] = &[
    "master/src/data/",
    "master/src/db/",
    "master/src/runtime.rs",
];

/// The source trees the checks walk, relative to the workspace root.
const SOURCE_DIRS: &[&str] = &["master/src", "worker/src"];

/// warp's filters that read the request body. Each must come right after a
/// `content_length_limit(…)` in the same filter chain.
const BODY_READERS: &[&str] = &["aggregate", "bytes", "form", "json", "stream"];

/// How many lines before a body reader its `content_length_limit(` may be.
const BODY_LIMIT_WINDOW: usize = 3;

// ---------------------------------------------------------------------------
// The checks on the real tree.

#[test]
fn mlua_only_in_the_lua_engine() {
    assert_clean("mlua outside MLUA_ALLOWED", check_mlua(&workspace_root()));
}

#[test]
fn sea_orm_only_in_the_data_layer() {
    assert_clean(
        "sea_orm outside SEA_ORM_ALLOWED",
        check_sea_orm(&workspace_root()),
    );
}

#[test]
fn every_file_has_a_module_doc() {
    assert_clean(
        "files without a //! doc",
        check_module_docs(&workspace_root()),
    );
}

#[test]
fn request_bodies_are_size_capped() {
    assert_clean(
        "uncapped request bodies",
        check_body_limits(&workspace_root()),
    );
}

#[test]
fn request_json_is_not_unwrapped() {
    assert_clean(
        "unwrapped request JSON",
        check_request_json_unwrap(&workspace_root()),
    );
}

/// Guards every check against walking the wrong place and passing on nothing.
#[test]
fn source_dirs_are_found() {
    let root = workspace_root();
    for dir in SOURCE_DIRS {
        assert!(
            root.join(dir).is_dir(),
            "{} is not a directory",
            root.join(dir).display()
        );
    }
    let files = source_files(&root, SOURCE_DIRS);
    assert!(
        files.len() > 20,
        "only {} .rs files found under {SOURCE_DIRS:?}",
        files.len()
    );
}

// ---------------------------------------------------------------------------
// The checks.

fn check_mlua(root: &Path) -> Vec<String> {
    check_crate_confined(
        root,
        "mlua",
        MLUA_ALLOWED,
        "move the Lua-facing code under master/src/lua/ and hand the rest of the master plain Rust values",
    )
}

fn check_sea_orm(root: &Path) -> Vec<String> {
    check_crate_confined(
        root,
        "sea_orm",
        SEA_ORM_ALLOWED,
        "go through the data layer (master/src/data/) instead",
    )
}

/// Every `krate::…` path and `use krate` outside the `allowed` places.
fn check_crate_confined(root: &Path, krate: &str, allowed: &[&str], instead: &str) -> Vec<String> {
    let mut violations = Vec::new();
    for file in source_files(root, SOURCE_DIRS) {
        if is_allowed(&file.path, allowed) {
            continue;
        }
        let t = &file.tokens;
        let lines: BTreeSet<usize> = (0..t.len())
            .filter(|&k| t[k].text == krate)
            .filter(|&k| {
                let next = |n: usize| t.get(k + n).map(|x| x.text.as_str());
                let prev = |n: usize| k.checked_sub(n).map(|i| t[i].text.as_str());
                next(1) == Some("::")
                    || prev(1) == Some("use")
                    || (prev(1) == Some("::") && prev(2) == Some("use"))
                    || (prev(1) == Some("crate") && prev(2) == Some("extern"))
            })
            .map(|k| t[k].line)
            .collect();
        for line in lines {
            violations.push(format!(
                "{}:{line}: uses {krate} outside {allowed:?}, {instead}",
                file.path
            ));
        }
    }
    violations
}

/// Every file's first non-blank line is a `//!` doc comment.
fn check_module_docs(root: &Path) -> Vec<String> {
    source_files(root, SOURCE_DIRS)
        .into_iter()
        .filter_map(|file| {
            let first = file
                .text
                .lines()
                .enumerate()
                .find(|(_, line)| !line.trim().is_empty());
            match first {
                Some((_, line)) if line.trim_start().starts_with("//!") => None,
                Some((i, _)) => Some(format!(
                    "{}:{}: does not start with a //! module doc, start the file with a //! comment saying what the module is for",
                    file.path,
                    i + 1
                )),
                None => Some(format!(
                    "{}:1: is empty, delete it or give it a //! module doc",
                    file.path
                )),
            }
        })
        .collect()
}

/// In master/src, every `warp::body::{aggregate,bytes,form,json,stream}` (or
/// `warp::filters::body::…`) comes after a `content_length_limit(` at most
/// [`BODY_LIMIT_WINDOW`] lines earlier, as in www/mod.rs:
///
/// ```text
/// warp::post()
///     .and(warp::body::content_length_limit(MAX_BODY))
///     .and(warp::body::bytes())
/// ```
///
/// Importing the readers (`use warp::body::bytes`, `use warp::body::{…}`,
/// `use warp::body;`, `use warp::{body, …}`) is refused too, since a bare
/// `bytes()` is out of this check's sight.
fn check_body_limits(root: &Path) -> Vec<String> {
    let mut violations = Vec::new();
    for file in source_files(root, &["master/src"]) {
        let t = &file.tokens;
        let text = |k: usize| t.get(k).map(|x| x.text.as_str());
        let limits: Vec<usize> = (0..t.len())
            .filter(|&k| text(k) == Some("content_length_limit") && text(k + 1) == Some("("))
            .collect();
        let capped = |k: usize| {
            limits
                .iter()
                .any(|&l| l < k && t[k].line - t[l].line <= BODY_LIMIT_WINDOW)
        };
        let mut report = |k: usize, what: String| {
            violations.push(format!("{}:{}: {what}", file.path, t[k].line));
        };
        for k in 0..t.len() {
            if text(k) != Some("warp") || text(k + 1) != Some("::") {
                continue;
            }
            // `use warp::{body, …}` / `use warp::{filters::body::bytes}`.
            if text(k + 2) == Some("{") {
                let end = matching(t, k + 2, "{", "}");
                if t[k + 2..end].iter().any(|x| x.text == "body") {
                    report(
                        k,
                        "imports warp's body module in a use group, which hides its readers from tidy, write warp::body::… in full at the call site".into(),
                    );
                }
                continue;
            }
            let body = if text(k + 2) == Some("body") {
                k + 2
            } else if text(k + 2) == Some("filters")
                && text(k + 3) == Some("::")
                && text(k + 4) == Some("body")
            {
                k + 4
            } else {
                continue;
            };
            if text(body + 1) != Some("::") {
                report(
                    k,
                    "aliases warp's body module, which hides its readers from tidy, write warp::body::… in full at the call site".into(),
                );
                continue;
            }
            match text(body + 2) {
                Some("{") => {
                    let end = matching(t, body + 2, "{", "}");
                    if t[body + 2..end]
                        .iter()
                        .any(|x| BODY_READERS.contains(&x.text.as_str()))
                    {
                        report(
                            k,
                            "imports warp's body readers, write warp::body::… in full right after .and(warp::body::content_length_limit(MAX_BODY))".into(),
                        );
                    }
                }
                Some("*") => report(
                    k,
                    "glob-imports warp's body readers, write warp::body::… in full right after .and(warp::body::content_length_limit(MAX_BODY))".into(),
                ),
                Some(reader) if BODY_READERS.contains(&reader) && !capped(k) => report(
                    k,
                    format!(
                        "warp::body::{reader} without a content_length_limit( in the {BODY_LIMIT_WINDOW} lines before, put .and(warp::body::content_length_limit(MAX_BODY)) right before it in the filter chain, or read the body through www's Request"
                    ),
                ),
                _ => {}
            }
        }
    }
    violations
}

/// In master/src/www, no `serde_json::from_slice(…)`/`from_str(…)` (request
/// input) is followed by `.unwrap()` or `.expect(…)`.
fn check_request_json_unwrap(root: &Path) -> Vec<String> {
    let mut violations = Vec::new();
    for file in source_files(root, &["master/src/www"]) {
        let t = &file.tokens;
        let text = |k: usize| t.get(k).map(|x| x.text.as_str());
        for (k, token) in t.iter().enumerate() {
            let function = match (text(k), text(k + 1), text(k + 2)) {
                (Some("serde_json"), Some("::"), Some(f @ ("from_slice" | "from_str"))) => f,
                _ => continue,
            };
            let mut open = k + 3;
            if text(open) == Some("::") && text(open + 1) == Some("<") {
                open = matching(t, open + 1, "<", ">") + 1;
            }
            if text(open) != Some("(") {
                continue;
            }
            let close = matching(t, open, "(", ")");
            if text(close + 1) == Some(".")
                && matches!(text(close + 2), Some("unwrap" | "expect"))
                && text(close + 3) == Some("(")
            {
                violations.push(format!(
                    "{}:{}: .{}() on serde_json::{function} of request input panics on a bad request, match on the Result and answer 400 with the parse error",
                    file.path,
                    token.line,
                    text(close + 2).unwrap_or_default(),
                ));
            }
        }
    }
    violations
}

// ---------------------------------------------------------------------------
// Planted violations: each check must find them.

#[test]
fn planted_mlua_use_is_reported() {
    let tree = plant(&[
        ("master/src/lua/engine.rs", "//! Engine.\nuse mlua::Lua;\n"),
        (
            "master/src/lua/sub/deep.rs",
            "//! Deeper.\nfn f(_: mlua::Value) {}\n",
        ),
        (
            "master/src/config/lua.rs",
            "//! Old home.\n\nuse mlua::{Lua, Value};\nfn f() -> mlua::Result<()> { Ok(()) }\n",
        ),
        (
            "master/src/www/mod.rs",
            "//! Web.\nuse mlua;\npub use ::mlua as lua;\n",
        ),
        ("worker/src/lib.rs", "//! Worker.\nextern crate mlua;\n"),
        (
            "master/src/fine.rs",
            "//! Only mentions.\n// mlua::Lua in a comment\n/* use mlua; */\nconst S: &str = \"mlua::Lua\";\nconst R: &str = r#\"use mlua\"#;\nfn xmlua() {}\nlet mlua_thing = 1;\n\
             #[cfg(test)]\nmod tests {\n    use mlua::Lua;\n    fn g() { let _ = '{'; }\n}\n",
        ),
    ]);
    assert_eq!(
        check_mlua(tree.path()),
        [
            "master/src/config/lua.rs:3",
            "master/src/config/lua.rs:4",
            "master/src/www/mod.rs:2",
            "master/src/www/mod.rs:3",
            "worker/src/lib.rs:2",
        ]
        .map(|at| format!(
            "{at}: uses mlua outside [\"master/src/lua/\"], move the Lua-facing code under master/src/lua/ and hand the rest of the master plain Rust values"
        )),
    );
}

#[test]
fn planted_sea_orm_use_is_reported() {
    let tree = plant(&[
        (
            "master/src/data/builds.rs",
            "//! Data.\nuse sea_orm::EntityTrait;\n",
        ),
        (
            "master/src/db/entities/x.rs",
            "//! Entity.\nuse sea_orm::entity::prelude::*;\n",
        ),
        (
            "master/src/runtime.rs",
            "//! Runtime.\nfn f(_: sea_orm::DatabaseConnection) {}\n",
        ),
        (
            "master/src/runtime/other.rs",
            "//! Not runtime.rs.\nuse sea_orm::Database;\n",
        ),
        (
            "master/src/www/ws.rs",
            "//! Web.\nuse sea_orm::EntityTrait;\n",
        ),
        (
            "master/src/main.rs",
            "//! Main.\nlet f = \"info,sea_orm=warn\";\nfn g() {\n    let _ = sea_orm::Database::connect(\"x\");\n}\n",
        ),
    ]);
    assert_eq!(
        check_sea_orm(tree.path()),
        [
            "master/src/main.rs:4",
            "master/src/runtime/other.rs:2",
            "master/src/www/ws.rs:2",
        ]
        .map(|at| format!(
            "{at}: uses sea_orm outside [\"master/src/data/\", \"master/src/db/\", \"master/src/runtime.rs\"], go through the data layer (master/src/data/) instead"
        )),
    );
}

#[test]
fn planted_missing_module_doc_is_reported() {
    let tree = plant(&[
        (
            "master/src/ok.rs",
            "\n\n//! Fine after blank lines.\nfn f() {}\n",
        ),
        (
            "master/src/item_doc.rs",
            "/// An item doc is not a module doc.\nfn f() {}\n",
        ),
        (
            "master/src/plain.rs",
            "\n// A plain comment.\n//! Too late.\n",
        ),
        ("worker/src/code.rs", "use std::fs;\n"),
        ("worker/src/empty.rs", "\n"),
    ]);
    assert_eq!(
        check_module_docs(tree.path()),
        [
            "master/src/item_doc.rs:1: does not start with a //! module doc, start the file with a //! comment saying what the module is for",
            "master/src/plain.rs:2: does not start with a //! module doc, start the file with a //! comment saying what the module is for",
            "worker/src/code.rs:1: does not start with a //! module doc, start the file with a //! comment saying what the module is for",
            "worker/src/empty.rs:1: is empty, delete it or give it a //! module doc",
        ],
    );
}

#[test]
fn planted_uncapped_body_is_reported() {
    let tree = plant(&[
        // Today's shape in www/mod.rs: passes.
        (
            "master/src/www/mod.rs",
            "//! Web.\nlet requests = warp::method()\n    .and(\n        warp::post()\n            .and(warp::body::content_length_limit(MAX_BODY))\n            .and(warp::body::bytes())\n            .or(warp::any().map(Bytes::new))\n            .unify(),\n    );\n\
             let same_line = warp::body::content_length_limit(1).and(warp::filters::body::json());\n",
        ),
        (
            "master/src/www/api.rs",
            "//! Api.\nlet no_limit = warp::post().and(warp::body::json());\n\
             let far = warp::body::content_length_limit(1)\n    .and(warp::path(\"a\"))\n    .and(warp::path(\"b\"))\n    .and(warp::path(\"c\"))\n    .and(warp::body::form());\n\
             let after = warp::body::stream().and(warp::body::content_length_limit(1));\n",
        ),
        (
            "master/src/www/imports.rs",
            "//! Imports.\nuse warp::body::bytes;\nuse warp::body::{aggregate, content_length_limit};\nuse warp::body::*;\nuse warp::body;\nuse warp::filters::body as b;\nuse warp::{Filter, body::json};\n\
             use warp::body::content_length_limit as limit;\nuse warp::{Filter, Reply};\nfn t(_: warp::body::BodyDeserializeError) {}\n",
        ),
        (
            "master/src/www/fine.rs",
            "//! Ignored.\n// warp::body::bytes() in a comment\nconst S: &str = \"warp::body::json()\";\n\
             #[cfg(test)]\nmod tests {\n    fn t() { let _ = warp::body::bytes(); }\n}\n",
        ),
        // Outside master/src: not this check's business.
        (
            "worker/src/lib.rs",
            "//! Worker.\nlet x = warp::body::bytes();\n",
        ),
    ]);
    let why = |reader: &str| {
        format!(
            "warp::body::{reader} without a content_length_limit( in the 3 lines before, put .and(warp::body::content_length_limit(MAX_BODY)) right before it in the filter chain, or read the body through www's Request"
        )
    };
    let imports = "imports warp's body readers, write warp::body::… in full right after .and(warp::body::content_length_limit(MAX_BODY))";
    let alias = "aliases warp's body module, which hides its readers from tidy, write warp::body::… in full at the call site";
    assert_eq!(
        check_body_limits(tree.path()),
        [
            format!("master/src/www/api.rs:2: {}", why("json")),
            format!("master/src/www/api.rs:7: {}", why("form")),
            format!("master/src/www/api.rs:8: {}", why("stream")),
            format!("master/src/www/imports.rs:2: {}", why("bytes")),
            format!("master/src/www/imports.rs:3: {imports}"),
            "master/src/www/imports.rs:4: glob-imports warp's body readers, write warp::body::… in full right after .and(warp::body::content_length_limit(MAX_BODY))".to_string(),
            format!("master/src/www/imports.rs:5: {alias}"),
            format!("master/src/www/imports.rs:6: {alias}"),
            "master/src/www/imports.rs:7: imports warp's body module in a use group, which hides its readers from tidy, write warp::body::… in full at the call site".to_string(),
        ],
    );
}

#[test]
fn planted_unwrapped_request_json_is_reported() {
    let tree = plant(&[
        (
            "master/src/www/api.rs",
            "//! Api.\nlet a: Value = serde_json::from_slice(&request.body).unwrap();\n\
             let b = serde_json::from_str::<Vec<(String, u8)>>(text)\n    .expect(\"valid\");\n\
             let c: Value = match serde_json::from_slice(&request.body) {\n    Ok(v) => v,\n    Err(e) => return bad(e),\n};\n\
             let d = serde_json::from_str(&s).map_err(|e| e.to_string())?;\nlet e = serde_json::from_str(&s).unwrap_or_default();\n",
        ),
        // Outside www: not request input.
        (
            "master/src/config/mod.rs",
            "//! Config.\nlet a: Value = serde_json::from_str(&s).unwrap();\n",
        ),
    ]);
    assert_eq!(
        check_request_json_unwrap(tree.path()),
        [
            "master/src/www/api.rs:2: .unwrap() on serde_json::from_slice of request input panics on a bad request, match on the Result and answer 400 with the parse error",
            "master/src/www/api.rs:3: .expect() on serde_json::from_str of request input panics on a bad request, match on the Result and answer 400 with the parse error",
        ],
    );
}

#[test]
fn masking_keeps_lines_and_hides_literals_and_comments() {
    let src = "a /* x\n /* nested */ y */ b // c\n\"s\\\"t\\\nr\" r##\"q\"#\"## '\"' '\\'' 'l: loop {} b'x' c\"z\"\n";
    let masked: String = mask(src).into_iter().collect();
    assert_eq!(masked.lines().count(), src.lines().count());
    let words: Vec<&str> = masked.split_whitespace().collect();
    assert_eq!(words, ["a", "b", "'l:", "loop", "{}", "b", "c"]);
}

// ---------------------------------------------------------------------------
// Reading the tree.

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("master/ has a parent directory")
        .to_path_buf()
}

fn assert_clean(what: &str, violations: Vec<String>) {
    assert!(
        violations.is_empty(),
        "{} {what}:\n{}\n",
        violations.len(),
        violations.join("\n")
    );
}

/// Writes `files` (path relative to the root, contents) into a fresh temporary
/// workspace root.
fn plant(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().expect("a file has a parent")).expect("mkdir -p");
        fs::write(&path, text).expect("write a planted file");
    }
    dir
}

fn is_allowed(path: &str, allowed: &[&str]) -> bool {
    allowed.iter().any(|place| {
        if place.ends_with('/') {
            path.starts_with(place)
        } else {
            path == *place
        }
    })
}

struct SourceFile {
    /// Relative to the workspace root, with `/` separators.
    path: String,
    text: String,
    /// The code outside comments, literals and test modules.
    tokens: Vec<Token>,
}

/// An identifier (or number), `::`, or one other punctuation character.
struct Token {
    text: String,
    /// 1-based.
    line: usize,
}

/// Every `.rs` file under `dirs` (relative to `root`; missing ones are
/// skipped), sorted by path.
fn source_files(root: &Path, dirs: &[&str]) -> Vec<SourceFile> {
    let mut paths = Vec::new();
    for dir in dirs {
        walk(&root.join(dir), &mut paths);
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let relative = path
                .strip_prefix(root)
                .expect("walked under root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let mut code = mask(&text);
            blank_test_modules(&mut code);
            SourceFile {
                path: relative,
                tokens: tokenize(&code),
                text,
            }
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The text with comments (line, nested block, doc) and string, raw string,
/// byte string and char literals replaced by spaces; newlines are kept, so
/// line numbers stay right.
fn mask(text: &str) -> Vec<char> {
    let c: Vec<char> = text.chars().collect();
    let mut out: Vec<char> = Vec::with_capacity(c.len());
    let blank = |out: &mut Vec<char>, from: &[char]| {
        out.extend(from.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    };
    let at = |i: usize| c.get(i).copied();
    let mut i = 0;
    while i < c.len() {
        let start = i;
        if c[i] == '/' && at(i + 1) == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && at(i + 1) == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == Some('/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_hashes(&c, i) {
            i += hashes + 2;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|h| at(i + h) == Some('#')) {
                    i += hashes + 1;
                    break;
                }
                i += 1;
            }
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() {
                match c[i] {
                    '\\' => i += 2,
                    '"' => {
                        i += 1;
                        break;
                    }
                    _ => i += 1,
                }
            }
        } else if c[i] == '\'' && at(i + 1) == Some('\\') {
            // An escaped char literal: '\n', '\'', '\u{..}'.
            i += 3;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c[i] == '\'' && at(i + 2) == Some('\'') {
            i += 3;
        } else {
            // Code, including a lifetime or label's `'`.
            out.push(c[i]);
            i += 1;
            continue;
        }
        let end = i.min(c.len());
        blank(&mut out, &c[start..end]);
        i = end;
    }
    out
}

/// `Some(n)` when a raw string literal `r#…#"` with `n` hashes starts at `i`
/// (also as the `r` of `br"…"` or `cr"…"`).
fn raw_string_hashes(c: &[char], i: usize) -> Option<usize> {
    if c[i] != 'r' {
        return None;
    }
    let word_start = match i.checked_sub(1).map(|p| c[p]) {
        None => true,
        Some('b' | 'c') => i < 2 || !is_ident(c[i - 2]),
        Some(p) => !is_ident(p),
    };
    if !word_start {
        return None;
    }
    let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
    (c.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
}

/// Blanks each `#[cfg(test)]` (further attributes) `[pub[(…)]] mod name { … }`
/// in already-masked code, so braces balance reliably.
fn blank_test_modules(code: &mut [char]) {
    let pattern: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + pattern.len() <= code.len() {
        if code[i..i + pattern.len()] != pattern[..] {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + pattern.len();
        let skip_space = |j: &mut usize, code: &[char]| {
            while *j < code.len() && code[*j].is_whitespace() {
                *j += 1;
            }
        };
        let word = |j: &mut usize, code: &[char]| -> String {
            let from = *j;
            while *j < code.len() && is_ident(code[*j]) {
                *j += 1;
            }
            code[from..*j].iter().collect()
        };
        skip_space(&mut j, code);
        // More attributes.
        while j < code.len() && code[j] == '#' {
            j = close_of(code, j + 1, '[', ']') + 1;
            skip_space(&mut j, code);
        }
        let mut w = word(&mut j, code);
        if w == "pub" {
            skip_space(&mut j, code);
            if j < code.len() && code[j] == '(' {
                j = close_of(code, j, '(', ')') + 1;
            }
            skip_space(&mut j, code);
            w = word(&mut j, code);
        }
        if w == "mod" {
            skip_space(&mut j, code);
            let name = word(&mut j, code);
            skip_space(&mut j, code);
            if !name.is_empty() && j < code.len() && code[j] == '{' {
                let end = close_of(code, j, '{', '}');
                for ch in &mut code[start..=end] {
                    if *ch != '\n' {
                        *ch = ' ';
                    }
                }
                i = end + 1;
                continue;
            }
        }
        i = start + pattern.len();
    }
}

/// The index of the bracket closing the one at `open` (or the last index).
fn close_of(code: &[char], open: usize, left: char, right: char) -> usize {
    let mut depth = 0usize;
    for (k, &ch) in code.iter().enumerate().skip(open) {
        if ch == left {
            depth += 1;
        } else if ch == right {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return k;
            }
        }
    }
    code.len().saturating_sub(1)
}

/// The index of the token closing the one at `open` (or the last index).
fn matching(tokens: &[Token], open: usize, left: &str, right: &str) -> usize {
    let mut depth = 0usize;
    for (k, token) in tokens.iter().enumerate().skip(open) {
        if token.text == left {
            depth += 1;
        } else if token.text == right {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return k;
            }
        }
    }
    tokens.len().saturating_sub(1)
}

fn tokenize(code: &[char]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < code.len() {
        let ch = code[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if is_ident(ch) {
            let from = i;
            while i < code.len() && is_ident(code[i]) {
                i += 1;
            }
            tokens.push(Token {
                text: code[from..i].iter().collect(),
                line,
            });
        } else if ch == ':' && code.get(i + 1) == Some(&':') {
            tokens.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            tokens.push(Token {
                text: ch.to_string(),
                line,
            });
            i += 1;
        }
    }
    tokens
}
