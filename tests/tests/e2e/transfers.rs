//! Issue 16: transfers between worker and master, artifacts, and test
//! reports, with a real worker and real files: uploads of a file, a
//! compressed directory and globbed files (listed and downloadable from the
//! API and the build page), downloads of a master file, a string and the
//! build's properties, the worker file steps, uploads refused (too large, a
//! destination outside the build's artifacts), and JUnit reports of pytest,
//! Surefire, go-junit-report, Jest and ctest read into test results.

use moonbot_tests::{Backend, LONG, TestMaster};
use serde_json::{Value, json};
use std::path::Path;

moonbot_tests::on_both_databases!(
    files_move_both_ways_and_reports_become_test_results,
    a_build_the_master_cannot_record_is_not_retried_at_once,
);

const CONFIG: &str = r##"
local mb = require "moonbot"
return {
  title = "transfers",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  artifacts = { dir = "kept", keep_days = 2 },
  workers = { mb.worker { name = "w1", max_builds = 1 } },
  builders = {
    mb.builder { name = "transfers", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "make", command =
        "rm -rf * && mkdir -p dist out/sub && printf 'binary\\000data' > dist/app.bin && " ..
        "echo index > out/index.html && echo deep > out/sub/deep.txt && echo one > a.log && echo two > b.log" },
      mb.steps.file_upload { workersrc = "dist/app.bin", masterdest = mb.interpolate "%(prop:buildername)s.bin",
        mode = tonumber("640", 8), url = "https://example.org/release", url_text = "release notes" },
      mb.steps.directory_upload { workersrc = "out", masterdest = "site", compress = "gz" },
      mb.steps.multiple_file_upload { workersrcs = { "*.log" }, glob = true, masterdest = "logs" },
      mb.steps.string_download { s = mb.interpolate "#!/bin/sh\necho hello from %(prop:buildername)s\n",
        workerdest = "got/hello.sh", mode = tonumber("755", 8) },
      mb.steps.file_download { mastersrc = "tool.txt", workerdest = "got/tool.txt" },
      mb.steps.json_property_download { workerdest = "got/props.json" },
      mb.steps.directory_download { mastersrc = "toolbox", workerdest = "got/toolbox", compress = "bz2" },
      mb.steps.shell { name = "check", command = "./got/hello.sh && cat got/tool.txt && cat got/props.json && cat got/toolbox/bin/version" },
      mb.steps.file_exists { file = "build/got/tool.txt" },
      mb.steps.copy_directory { src = "build/out", dest = "build/copy" },
      mb.steps.glob { pattern = "build/copy/**/*.txt", property = "found" },
      mb.steps.list_directory { dir = "build/copy" },
      mb.steps.rmfile { file = "build/copy/index.html" },
      mb.steps.shell { name = "gone", command = "test ! -e copy/index.html" },
    } },
    mb.builder { name = "too_large", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "make", command = "head -c 100000 /dev/zero > big.bin" },
      mb.steps.file_upload { workersrc = "big.bin", max_size = 1000 },
    } },
    mb.builder { name = "escape", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "make", command = "echo x > x.txt" },
      mb.steps.file_upload { workersrc = "x.txt", masterdest = "../../escaped.txt" },
    } },
    mb.builder { name = "compile", workernames = { "w1" }, steps = {
      mb.steps.compile {
        command = "printf '^vendor/ : .*\n' > supp.txt && " ..
          "printf 'main.c:3: warning: unused x\nvendor/z.c:9: warning: old\nmain.c:40: warning: shadow\nbuilt\n'",
        warning_pattern = "^(?P<file>[^:]+):(?P<line>[0-9]+): warning: (?P<text>.*)",
        suppression_file = "supp.txt",
        suppress_warnings = { { file = "main[.]c", warning = "unused", lines = { 1, 10 } } },
        max_warnings = 5 },
    } },
    mb.builder { name = "tests", workernames = { "w1" }, steps = {
      mb.steps.test { command = "rm -rf reports && mkdir reports && cp @JUNIT@/pytest-fail-skip.xml @JUNIT@/surefire-errors-failures.xml " ..
        "@JUNIT@/go-junit-report-pass-fail-skip.xml @JUNIT@/jest-junit.xml @JUNIT@/ctest.xml reports/",
        junit = "reports/*.xml" },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force",
    builders = { "transfers", "too_large", "escape", "compile", "tests" } } },
}
"##;

/// Force `builder`; its finished request's build.
fn build(m: &TestMaster, builder: &str) -> (i64, Value, Vec<Value>) {
    let brid = m.force(m.builderid(builder));
    let done = m.wait_request_done(brid, LONG);
    let buildid = done["buildid"].as_i64().unwrap();
    let steps = m.steps(buildid);
    (buildid, done, steps)
}

fn logs(m: &TestMaster, steps: &[Value]) -> String {
    steps
        .iter()
        .map(|s| m.stdio_of(s["stepid"].as_i64().unwrap()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn files_move_both_ways_and_reports_become_test_results(backend: &Backend) {
    let mut m = TestMaster::create(backend, "");
    let junit = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/junit");
    m.write_config(&CONFIG.replace("@JUNIT@", junit.to_str().unwrap()));
    std::fs::write(
        Path::new(m.path()).join("tool.txt"),
        "a tool from the master\n",
    )
    .unwrap();
    let toolbox = Path::new(m.path()).join("toolbox/bin");
    std::fs::create_dir_all(&toolbox).unwrap();
    std::fs::write(toolbox.join("version"), "toolbox 1.2\n").unwrap();
    m.start();
    let mut w = m.make_worker("w1", &m.dir.clone());
    w.start();
    m.wait_connected("w1");

    // Uploads, downloads and the file steps.
    let (buildid, done, steps) = build(&m, "transfers");
    let transfers_build = buildid;
    let log = logs(&m, &steps);
    assert_eq!(done["results"], 0, "{log}");
    assert!(log.contains("hello from transfers"), "{log}");
    assert!(log.contains("a tool from the master"), "{log}");
    assert!(log.contains("toolbox 1.2"), "{log}");
    assert!(log.contains("\"buildername\":\"transfers\""), "{log}");
    let artifacts = m.get(&format!("/api/v2/builds/{buildid}/artifacts"))["artifacts"].clone();
    let names: Vec<&str> = artifacts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["transfers.bin", "site", "logs/a.log", "logs/b.log"],
        "{artifacts}"
    );
    let bin = &artifacts[0];
    assert_eq!(bin["type"], "file");
    assert_eq!(bin["size"], 11);
    let kept = bin["expires_at"].as_f64().unwrap() - bin["created_at"].as_f64().unwrap();
    assert!((kept - 2.0 * 86400.0).abs() < 1.0, "{bin}");
    let id = bin["artifactid"].as_i64().unwrap();
    assert_eq!(
        m.get_bytes(&format!("/api/v2/artifacts/{id}/raw")),
        b"binary\0data"
    );
    // On the master's disk, under the configured directory, with its mode.
    let on_disk = Path::new(m.path()).join(format!("kept/{buildid}/transfers.bin"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&on_disk).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let site = &artifacts[1];
    assert_eq!(
        (site["type"].as_str(), site["files"].as_i64()),
        (Some("directory"), Some(2))
    );
    let site_id = site["artifactid"].as_i64().unwrap();
    let files = m.get(&format!("/api/v2/artifacts/{site_id}/files"))["files"].clone();
    assert_eq!(files[0]["name"], "index.html", "{files}");
    assert_eq!(files[1]["name"], "sub/deep.txt", "{files}");
    assert_eq!(
        m.get_bytes(&format!("/api/v2/artifacts/{site_id}/raw/sub/deep.txt")),
        b"deep\n"
    );
    // A path that climbs out of the artifact (`..` encoded so the client
    // sends it as is) finds nothing, though the file it names exists.
    let (status, _) = m.get_status(&format!(
        "/api/v2/artifacts/{site_id}/raw/sub%2F..%2F..%2F..%2F{buildid}%2Ftransfers.bin"
    ));
    assert_eq!(status, 404);
    // The upload step links its artifact and the url it was given.
    let upload = &steps[1];
    let urls = upload["urls"].as_array().unwrap();
    assert!(
        urls.iter()
            .any(|u| u["url"] == format!("/api/v2/artifacts/{id}/raw")),
        "{upload}"
    );
    assert!(
        urls.iter().any(|u| u["name"] == "release notes"),
        "{upload}"
    );
    let props = m.get(&format!("/api/v2/builds/{buildid}/properties"))["properties"][0].clone();
    let found = props["found"][0].as_array().unwrap();
    assert_eq!(found.len(), 1, "{props}");
    assert!(
        found[0]
            .as_str()
            .unwrap()
            .ends_with("build/copy/sub/deep.txt"),
        "{props}"
    );
    assert_eq!(props["files"][0], json!(["index.html", "sub"]));
    let (_, page) = m.get_status(&format!("/builds/{buildid}"));
    assert!(page.contains("id=\"artifacts\""), "{page}");
    assert!(
        page.contains(&format!("/api/v2/artifacts/{id}/raw")),
        "{page}"
    );
    assert!(
        page.contains("class=\"steplink\" href=\"https://example.org/release\">release notes</a>"),
        "the step's url is a link on the build page\n{page}"
    );

    // Refused uploads fail the step and leave nothing behind.
    let (buildid, done, steps) = build(&m, "too_large");
    assert_eq!(done["results"], 2, "{}", logs(&m, &steps));
    assert!(
        logs(&m, &steps).contains("larger than"),
        "{}",
        logs(&m, &steps)
    );
    assert_eq!(
        m.get(&format!("/api/v2/builds/{buildid}/artifacts"))["artifacts"],
        json!([])
    );
    assert!(
        !Path::new(m.path())
            .join(format!("kept/{buildid}/big.bin"))
            .exists()
    );
    let (buildid, done, steps) = build(&m, "escape");
    assert_eq!(done["results"], 2, "{}", logs(&m, &steps));
    assert!(
        logs(&m, &steps).contains("goes up with '..'"),
        "{}",
        logs(&m, &steps)
    );
    assert!(!Path::new(m.path()).join("escaped.txt").exists());
    assert_eq!(
        m.get(&format!("/api/v2/builds/{buildid}/artifacts"))["artifacts"],
        json!([])
    );

    // Warnings, less those suppressed by master.lua and by a file on the worker.
    let (buildid, done, steps) = build(&m, "compile");
    let log = logs(&m, &steps);
    // The step is WARNINGS; as in Buildbot, the build is too only with
    // `warn_on_warnings`.
    assert_eq!(steps[0]["results"], 1, "WARNINGS\n{log}");
    assert_eq!(done["results"], 0, "{log}");
    assert_eq!(steps[0]["name"], "compile");
    assert!(
        log.contains("2 warning(s) suppressed") && log.contains("1 warning(s)"),
        "{log}"
    );
    let warnings_log = m.get(&format!("/api/v2/steps/{}/logs", steps[0]["stepid"]))["logs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "warnings")
        .unwrap()["logid"]
        .as_i64()
        .unwrap();
    let warnings =
        String::from_utf8(m.get_bytes(&format!("/api/v2/logs/{warnings_log}/raw"))).unwrap();
    assert!(
        warnings.contains("main.c:40: warning: shadow"),
        "{warnings}"
    );
    assert!(
        !warnings.contains("unused") && !warnings.contains("vendor"),
        "{warnings}"
    );
    let props = m.get(&format!("/api/v2/builds/{buildid}/properties"))["properties"][0].clone();
    assert_eq!(props["warnings-count"][0], 1);

    // Test reports of five tools.
    let (buildid, done, steps) = build(&m, "tests");
    let log = logs(&m, &steps);
    assert_eq!(done["results"], 2, "failed tests fail the step\n{log}");
    let sets =
        m.get(&format!("/api/v2/builds/{buildid}/test_result_sets"))["test_result_sets"].clone();
    assert_eq!(sets.as_array().unwrap().len(), 5, "{sets}");
    let sum = |field: &str| -> i64 {
        sets.as_array()
            .unwrap()
            .iter()
            .map(|s| s[field].as_i64().unwrap())
            .sum()
    };
    // Passed, failed (failures + errors) and skipped, from expected.json:
    // pytest 3/1/1, surefire 2/7/0, go 2/1/2, jest 1/4/1, ctest 3/0/0.
    assert_eq!(
        (
            sum("tests_passed"),
            sum("tests_failed"),
            sum("tests_skipped")
        ),
        (11, 13, 4),
        "{sets}"
    );
    assert_eq!(
        steps[0]["state_string"],
        "11 passed, 13 failed, 4 skipped (failure)"
    );
    let pytest = sets
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["description"]
                .as_str()
                .unwrap()
                .ends_with("pytest-fail-skip.xml")
        })
        .unwrap();
    let setid = pytest["test_result_setid"].as_i64().unwrap();
    let results =
        m.get(&format!("/api/v2/test_result_sets/{setid}/results"))["test_results"].clone();
    assert_eq!(results.as_array().unwrap().len(), 5);
    let failed: Vec<&Value> = results
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["value"] == "0" && r["outcome"] == "failure")
        .collect();
    assert_eq!(failed.len(), 1, "{results}");
    let (_, page) = m.get_status(&format!("/builds/{buildid}"));
    assert!(page.contains("id=\"failed-tests\""), "{page}");
    assert!(
        page.contains(failed[0]["test_name"].as_str().unwrap()),
        "{page}"
    );
    let all = m.get("/api/v2/test_result_sets")["test_result_sets"].clone();
    assert_eq!(all.as_array().unwrap().len(), 5);

    // Retention: an artifact past its keep_days goes, its files and its row,
    // in the expiry pass that runs when the master starts; the others stay.
    m.sql(&format!(
        "UPDATE artifacts SET expires_at = 0 WHERE buildid = {transfers_build} AND name = 'site'"
    ));
    // And a build the janitor deleted (its artifact rows went with it)
    // leaves no files behind.
    let (deleted, _, _) = build(&m, "too_large");
    let deleted_dir = Path::new(m.path()).join(format!("kept/{deleted}"));
    std::fs::create_dir_all(&deleted_dir).unwrap();
    std::fs::write(deleted_dir.join("left.bin"), "x").unwrap();
    m.sql(&format!("DELETE FROM builds WHERE id = {deleted}"));
    m.stop(false);
    m.start();
    let kept = Path::new(m.path()).join(format!("kept/{transfers_build}"));
    m.wait_for("the expired artifact to go", LONG, || {
        let left =
            m.get(&format!("/api/v2/builds/{transfers_build}/artifacts"))["artifacts"].clone();
        (left.as_array().unwrap().len() == 3 && !kept.join("site").exists()).then_some(())
    });
    assert!(kept.join("transfers.bin").exists());
    m.wait_for("the deleted build's files to go", LONG, || {
        (!deleted_dir.exists()).then_some(())
    });
}

/// A build whose writes the database refuses (here: a table gone) fails in
/// the master; its request runs again, but not in a loop as fast as it fails.
fn a_build_the_master_cannot_record_is_not_retried_at_once(backend: &Backend) {
    let mut m = TestMaster::create(backend, "");
    m.write_config(&CONFIG.replace("@JUNIT@", "/nonexistent"));
    m.start();
    let mut w = m.make_worker("w1", &m.dir.clone());
    w.start();
    m.wait_connected("w1");
    m.sql("DROP TABLE artifacts");
    let brid = m.force(m.builderid("transfers"));
    m.wait_for("the build to fail in the master", LONG, || {
        m.log().contains("failed in the master").then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    let builds = m.builds_of(brid);
    assert_eq!(builds.len(), 1, "retried at once: {} builds", builds.len());
    assert!(m.log().contains("it runs again in 10 s"), "{}", m.log());
}
