//! `moonbot checkconfig` on every sample config (must pass) and on every bad
//! config under tests/configs/bad (must fail with exactly the errors written at
//! the end of the file, after a `--[[ expected errors:` line).
//!
//! This is also the integration test that makes `cargo test` build the `moonbot`
//! binary the end-to-end tests in tests/ start.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn checkconfig(lua: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("master.lua"), lua).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_moonbot"))
        .args(["checkconfig", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_sample_config_is_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("sample-configs")).unwrap() {
        let lua = entry.unwrap().path().join("master.lua");
        if !lua.exists() {
            continue;
        }
        let (code, out, err) = checkconfig(&std::fs::read_to_string(&lua).unwrap());
        assert_eq!(code, 0, "{}: {out}{err}", lua.display());
        assert!(out.contains("is valid"), "{out}");
        checked += 1;
    }
    assert!(checked >= 1, "no sample configs found");
}

#[test]
fn every_bad_config_reports_its_exact_errors() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("tests/configs/bad")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let (config, expected) = text
            .split_once("--[[ expected errors:\n")
            .unwrap_or_else(|| panic!("{} has no expected errors block", path.display()));
        let expected = expected.trim_end().trim_end_matches("]]").trim_end();
        let (code, _, err) = checkconfig(config);
        assert_eq!(code, 1, "{} should fail", path.display());
        assert_eq!(err.trim_end(), expected, "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 5);
}
