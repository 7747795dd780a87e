//! Issue 15: `sample-configs/platforms`, a multi-branch, multi-platform
//! master.lua with Buildbot-style names, run for real: one of its builders
//! ("AMD64 Debian main") checks out a repository the test makes, and the
//! names with spaces and slashes work in the API, the pages and on disk.

use moonbot_tests::{Backend, LONG, TestMaster, git};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

moonbot_tests::on_both_databases!(the_platforms_sample_builds_with_names_that_have_spaces);

/// The sample, pointed at `repo` and this test's database and ports.
fn sample(repo: &Path) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-configs/platforms/master.lua"),
    )
    .unwrap();
    let replaced = text
        .replace(
            r#"local repo = "https://git.example.org/project.git""#,
            &format!("local repo = {:?}", repo.to_str().unwrap()),
        )
        .replace(
            r#"www = { port = 8010, bind = "127.0.0.1" }"#,
            r#"www = { port = 0, bind = "127.0.0.1" }"#,
        )
        .replace(
            r#"protocols = { quic = { port = 9989, bind = "0.0.0.0" } }"#,
            r#"protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } }"#,
        )
        .replace(
            r#"db = { url = "sqlite:state.sqlite" }"#,
            r#"db = { url = "@DB@" }"#,
        );
    assert_eq!(
        replaced.matches("@DB@").count(),
        1,
        "the sample changed shape"
    );
    assert!(replaced.contains("@QUIC_PORT@") && !replaced.contains("git.example.org"));
    replaced
}

fn force(m: &TestMaster, builder: &str, branch: &str) -> Value {
    let id = m.builderid(builder);
    let (status, answer) = m.rpc(
        "/api/v2/forceschedulers/Force%20build",
        "force",
        json!({"builderid": id, "reason": "test", "owner": "tester", "branch": branch}),
    );
    assert_eq!(status, 200, "{answer}");
    let brid = answer["result"][1][id.to_string()].as_i64().unwrap();
    m.wait_request_done(brid, LONG)
}

fn the_platforms_sample_builds_with_names_that_have_spaces(backend: &Backend) {
    let mut m = TestMaster::create(backend, "");
    let root = m.tmp.path().to_path_buf();
    let origin = root.join("project.git");
    let work = root.join("project");
    git(
        &root,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            origin.to_str().unwrap(),
        ],
    );
    git(&root, &["init", "-q", "-b", "main", work.to_str().unwrap()]);
    std::fs::write(
        work.join("configure"),
        "#!/bin/sh\necho \"configured with $1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        work.join("configure"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        work.join("run-tests"),
        "#!/bin/sh\necho \"testing on $TEST_PLATFORM\"\nexit 5\n",
    )
    .unwrap();
    std::fs::set_permissions(
        work.join("run-tests"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        work.join("Makefile"),
        "all:\n\t@echo compiled\ndocs:\n\t@echo docs built\n",
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "project"]);
    git(
        &work,
        &["push", "-q", origin.to_str().unwrap(), "main", "main:3.12"],
    );

    m.write_config(&sample(&origin));
    m.start();
    let mut w = m.make_worker("debian-amd64", &m.dir.clone());
    w.start();
    m.wait_connected("debian-amd64");

    // main: tests exit 5, which decode_rc makes WARNINGS; docs are built.
    let build = force(&m, "AMD64 Debian main", "main");
    assert_eq!(build["results"], 1, "{build}");
    let steps = m.steps(build["buildid"].as_i64().unwrap());
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["git", "configure", "compile", "test", "docs"]);
    let results: Vec<i64> = steps
        .iter()
        .map(|s| s["results"].as_i64().unwrap())
        .collect();
    assert_eq!(results, [0, 0, 0, 1, 0]);
    let test_log = m.stdio_of(steps[3]["stepid"].as_i64().unwrap());
    assert!(
        test_log.contains("\ntesting on AMD64 Debian\n"),
        "{test_log}"
    );
    assert!(
        steps[3]["state_string"]
            .as_str()
            .unwrap()
            .starts_with("tested "),
        "{}",
        steps[3]
    );
    let configure = m.stdio_of(steps[1]["stepid"].as_i64().unwrap());
    let dir = w
        .dir
        .join("builds")
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("AMD64_Debian_main-"))
        .expect("a directory named after the builder");
    assert!(
        configure.contains(&format!("configured with --prefix={dir}/install")),
        "{configure}"
    );

    // Another branch: the docs step is skipped, and hidden.
    let build = force(&m, "AMD64 Debian 3.12", "3.12");
    let steps = m.steps(build["buildid"].as_i64().unwrap());
    let docs = steps.iter().find(|s| s["name"] == "docs").unwrap();
    assert_eq!(
        (docs["results"].as_i64(), docs["hidden"].as_bool()),
        (Some(3), Some(true))
    );

    // The names work wherever they go: the API, the builder's page and badge.
    let builder = &m.get("/api/v2/builders?name=x86%2F64%20Windows%203.13")["builders"][0];
    assert_eq!(builder["name"], "x86/64 Windows 3.13");
    let id = m.builderid("AMD64 Debian main");
    let (status, page) = m.get_status(&format!("/builders/{id}"));
    assert_eq!(status, 200);
    assert!(page.contains("AMD64 Debian main"), "{page}");
    assert!(page.contains("/badges/AMD64%20Debian%20main.svg"), "{page}");
    let (status, svg) = m.get_status("/badges/AMD64%20Debian%20main.svg");
    assert_eq!(status, 200);
    assert!(svg.contains("warnings"), "{svg}");
    let (status, _) = m.get_status("/api/v2/forceschedulers/Force%20build");
    assert_eq!(status, 200);
}
