//! Issue 16, the worker is not trusted: a worker with a real certificate that
//! answers the master's commands with forged frames (the harness in
//! `moonbot_tests::forged`). Whatever it sends, nothing lands outside the
//! upload target the master chose, sizes are the bytes received, frames a
//! command did not ask for are refused, and the master keeps running.

use moonbot_tests::forged::{ForgedWorker, success};
use moonbot_tests::{Backend, LONG, TestMaster};
use moonbot_worker::protocol::{CommandOutcome, Frame, RemoteCommand};
use std::path::Path;
use std::time::Duration;

moonbot_tests::on_both_databases!(a_hostile_worker_cannot_write_where_it_was_not_asked);

const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "forged frames",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  artifacts = { dir = "artifacts" },
  workers = { mb.worker { name = "w1", max_builds = 1 } },
  builders = {
    mb.builder { name = "shell", workernames = { "w1" }, steps = {
      mb.steps.shell { command = "echo hi" } } },
    mb.builder { name = "tree", workernames = { "w1" }, steps = {
      mb.steps.directory_upload { workersrc = "out", masterdest = "site" } } },
    mb.builder { name = "file", workernames = { "w1" }, steps = {
      mb.steps.file_upload { workersrc = "app.bin", max_size = 1000 } } },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "shell", "tree", "file" } } },
}
"#;

/// A tar of one entry, written header by header as a hostile worker would
/// (the `tar` builder refuses to write some of these names).
fn tar_of(name: &str, kind: tar::EntryType, data: &[u8], link: &str) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    {
        let raw = header.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

/// Force `builder`, answer its one command with `frames` and `outcome`;
/// the build's result, its log, and what the master wrote back.
fn forge(
    m: &TestMaster,
    w: &ForgedWorker,
    builder: &str,
    expect: fn(&RemoteCommand) -> bool,
    frames: &[Frame],
    outcome: Option<CommandOutcome>,
) -> (i64, i64, String, Vec<String>) {
    let brid = m.force(m.builderid(builder));
    let mut command = w.next_command(LONG);
    assert!(expect(&command.request.command), "{:?}", command.request);
    w.answer(&mut command, frames, outcome);
    let replies = w.replies(&mut command, Duration::from_secs(5));
    let done = m.wait_request_done(brid, LONG);
    let buildid = done["buildid"].as_i64().unwrap();
    let steps = m.steps(buildid);
    let log = m.stdio_of(steps[0]["stepid"].as_i64().unwrap());
    (buildid, steps[0]["results"].as_i64().unwrap(), log, replies)
}

fn is_tree(c: &RemoteCommand) -> bool {
    matches!(c, RemoteCommand::UploadDirectory { .. })
}

fn a_hostile_worker_cannot_write_where_it_was_not_asked(backend: &Backend) {
    let mut m = TestMaster::create(backend, "");
    m.write_config(CONFIG);
    m.start();
    let worker = m.make_worker("w1", &m.dir.clone());
    let w = ForgedWorker::connect(&worker.dir);
    m.wait_connected("w1");
    let master = Path::new(m.path()).to_path_buf();
    let artifacts = master.join("artifacts");
    let nothing_escaped = || {
        for place in [
            master.join("escaped.txt"),
            master.parent().unwrap().join("escaped.txt"),
        ] {
            assert!(!place.exists(), "{} was written", place.display());
        }
        if let Ok(incoming) = std::fs::read_dir(artifacts.join(".incoming")) {
            assert_eq!(incoming.count(), 0, "a partial upload was left behind");
        }
    };

    // Upload data on a command that uploads nothing.
    let (_, result, log, _) = forge(
        &m,
        &w,
        "shell",
        |c| matches!(c, RemoteCommand::Shell(_)),
        &[Frame::Data(b"sneaky".to_vec())],
        Some(success()),
    );
    assert_eq!(result, 4, "{log}");
    assert!(
        log.contains("data from a command that uploads nothing"),
        "{log}"
    );
    // A log file the command does not follow.
    let (_, result, log, _) = forge(
        &m,
        &w,
        "shell",
        |c| matches!(c, RemoteCommand::Shell(_)),
        &[Frame::log_file("passwd", b"root:x:0:0\n")],
        Some(success()),
    );
    assert_eq!(result, 4, "{log}");
    assert!(
        log.contains("log file this command does not follow"),
        "{log}"
    );

    // Tar entries that leave the destination, or are not plain data.
    let hostile = [
        (
            "../../escaped.txt",
            tar::EntryType::Regular,
            "goes up with '..'",
        ),
        ("/tmp/escaped.txt", tar::EntryType::Regular, "is absolute"),
        ("link", tar::EntryType::Symlink, "symbolic link"),
        ("hard", tar::EntryType::Link, "hard link"),
        ("null", tar::EntryType::Char, "character device"),
        ("disk", tar::EntryType::Block, "block device"),
    ];
    for (name, kind, why) in hostile {
        let tar = tar_of(name, kind, b"x", "/etc/passwd");
        let (buildid, result, log, _) = forge(
            &m,
            &w,
            "tree",
            is_tree,
            &[Frame::Data(tar)],
            Some(success()),
        );
        assert_eq!(result, 2, "{name}: {log}");
        assert!(log.contains(why), "{name}: {log}");
        assert!(
            !artifacts.join(buildid.to_string()).join("site").exists(),
            "{name}"
        );
        assert_eq!(
            m.get(&format!("/api/v2/builds/{buildid}/artifacts"))["artifacts"],
            serde_json::json!([]),
            "{name}"
        );
        nothing_escaped();
    }

    // A file upload that sends more than max_size, whatever it claims: the
    // master stops reading, interrupts the command, keeps nothing.
    let chunk = Frame::Data(vec![b'x'; 600]);
    let (buildid, result, log, replies) = forge(
        &m,
        &w,
        "file",
        |c| {
            matches!(
                c,
                RemoteCommand::UploadFile {
                    max_size: Some(1000),
                    ..
                }
            )
        },
        &[chunk.clone(), chunk.clone(), chunk],
        Some(success()),
    );
    assert_eq!(result, 2, "{log}");
    assert!(log.contains("larger than its limit of 1000 bytes"), "{log}");
    assert!(
        replies.iter().any(|r| r.contains("interrupt")),
        "{replies:?}"
    );
    assert!(!artifacts.join(format!("{buildid}/app.bin")).exists());
    nothing_escaped();

    // An honest upload lands where the master chose; the next build cannot
    // reach it (another build's files are outside its destination).
    let (first, result, log, _) = forge(
        &m,
        &w,
        "file",
        |c| matches!(c, RemoteCommand::UploadFile { .. }),
        &[Frame::Data(b"0123456789".to_vec())],
        Some(success()),
    );
    assert_eq!(result, 0, "{log}");
    let landed = artifacts.join(format!("{first}/app.bin"));
    assert_eq!(std::fs::read(&landed).unwrap(), b"0123456789");
    let into_other = tar_of(
        &format!("../../{first}/app.bin"),
        tar::EntryType::Regular,
        b"overwritten",
        "",
    );
    let (_, result, log, _) = forge(
        &m,
        &w,
        "tree",
        is_tree,
        &[Frame::Data(into_other)],
        Some(success()),
    );
    assert_eq!(result, 2, "{log}");
    assert_eq!(std::fs::read(&landed).unwrap(), b"0123456789");

    // A stream the worker opens itself carries nothing anywhere.
    w.unasked(&[Frame::Data(b"unasked".to_vec())]);
    // The master is still up and serving, and still runs builds.
    assert!(
        m.get("/api/v2")["rootlinks"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    );
    let (_, result, log, _) = forge(
        &m,
        &w,
        "shell",
        |c| matches!(c, RemoteCommand::Shell(_)),
        &[Frame::Stdout(b"hi\n".to_vec())],
        Some(success()),
    );
    assert_eq!(result, 0, "{log}");
    nothing_escaped();
}
