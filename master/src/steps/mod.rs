//! The step kinds: one module per kind, each with its model (what master.lua
//! said), its compile function (reading the `mb.steps.KIND{…}` table) and its
//! run function (what the step does in a build, through a [`StepContext`]).
//!
//! This file is the only place that knows every kind: the [`StepKind`] enum,
//! the compile registration ([`compile`]) and the one exhaustive `match` that
//! runs a step ([`run`]). A build's life cycle (properties, the step row, result
//! folding) stays in `process::build`, which hands each step a host for the
//! database and the worker.
//!
//! Adding a kind: write `steps/NEW.rs` (model, `compile`, `run`), add its
//! variant to [`StepKind`], its tag to [`compile`] and its arm to [`run`], and
//! its constructor (with LuaLS annotations) to `lua-stdlib/moonbot.lua`.

pub mod context;
pub mod dirs;
pub mod files;
pub mod git;
pub mod lua_step;
pub mod master_shell;
pub mod pipeline;
pub mod properties;
pub mod sequence;
pub mod shell;
pub mod test;
pub mod transfer;
pub mod trigger;
pub mod warnings;

pub use context::{
    BuildArtifacts, Collected, Properties, RemoteFailure, RemoteIo, StepContext, StepHost, Stream,
    TestCase, TestCounts,
};

use crate::lua::Fields;

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// `mb.steps.shell{…}`: a command on the worker.
    Shell(shell::ShellStep),
    /// `mb.steps.mkdir{…}`: create a directory (and its parents) on the worker.
    Mkdir(dirs::DirStep),
    /// `mb.steps.rmdir{…}`: remove a directory tree on the worker.
    Rmdir(dirs::DirStep),
    /// `mb.steps.set_property{…}` and `mb.steps.set_properties{…}`.
    SetProperties(properties::SetPropertiesStep),
    /// `mb.steps.set_property_from_command{…}`.
    SetPropertyFromCommand(properties::FromCommandStep),
    /// `mb.steps.shell_sequence{…}`: several commands, each with its own log.
    ShellSequence(sequence::SequenceStep),
    /// `mb.steps.git{…}`: check out the build's revision.
    Git(Box<git::GitStep>),
    /// `mb.steps.master_shell{…}`: a command on the master.
    MasterShell(master_shell::MasterShellStep),
    /// `mb.steps.file_upload{…}`, `directory_upload{…}`, `multiple_file_upload{…}`.
    Upload(Box<transfer::UploadStep>),
    /// `mb.steps.file_download{…}`, `directory_download{…}`, `string_download{…}`,
    /// `json_property_download{…}`.
    Download(Box<transfer::DownloadStep>),
    /// `mb.steps.file_exists{…}`, `rmfile{…}`, `copy_directory{…}`, `glob{…}`,
    /// `list_directory{…}`.
    Files(files::FilesStep),
    /// `mb.steps.test{…}`: tests and their JUnit reports.
    Test(Box<test::TestStep>),
    /// `mb.steps.lua{…}`: a step written in Lua.
    Lua(lua_step::LuaStep),
    /// `mb.steps.pipeline{…}`: steps from a file in the checkout.
    Pipeline(Box<pipeline::PipelineStep>),
    /// `mb.steps.trigger{…}`: builds through triggerable schedulers.
    Trigger(Box<trigger::TriggerStep>),
}

/// A step kind's part of a compiled step.
pub struct Compiled {
    /// `None` when the fields had errors (they are in the field reader).
    pub kind: Option<StepKind>,
    /// The step's name when master.lua gives none (Buildbot's defaults).
    pub default_name: String,
}

/// Compile the kind-specific fields of a step whose table says
/// `_kind = "step.NAME"`; `None` when `tag` is no step kind.
pub fn compile(tag: &str, f: &mut Fields<'_>, builder: &str) -> Option<Compiled> {
    Some(match tag {
        "step.shell" => shell::compile(f, builder),
        "step.compile" => shell::compile_compile(f, builder),
        "step.mkdir" => dirs::compile(f, "mkdir", StepKind::Mkdir),
        "step.rmdir" => dirs::compile(f, "rmdir", StepKind::Rmdir),
        "step.set_property" => properties::compile_one(f),
        "step.set_properties" => properties::compile_many(f),
        "step.set_property_from_command" => properties::compile_from_command(f, builder),
        "step.shell_sequence" => sequence::compile(f, builder),
        "step.master_shell" => master_shell::compile(f, builder),
        "step.git" => git::compile(f, builder),
        "step.file_upload" => transfer::compile_upload(f, transfer::UploadKind::File),
        "step.directory_upload" => transfer::compile_upload(f, transfer::UploadKind::Directory),
        "step.multiple_file_upload" => {
            transfer::compile_upload(f, transfer::UploadKind::Multiple { glob: false })
        }
        "step.file_download" => transfer::compile_download(f, "file_download"),
        "step.string_download" => transfer::compile_download(f, "string_download"),
        "step.directory_download" => transfer::compile_download(f, "directory_download"),
        "step.json_property_download" => transfer::compile_download(f, "json_property_download"),
        "step.file_exists" => files::compile(f, files::FilesOp::FileExists),
        "step.rmfile" => files::compile(f, files::FilesOp::Rmfile),
        "step.copy_directory" => files::compile(f, files::FilesOp::CopyDirectory),
        "step.glob" => files::compile(f, files::FilesOp::Glob),
        "step.list_directory" => files::compile(f, files::FilesOp::ListDirectory),
        "step.test" => test::compile(f, builder),
        "step.lua" => lua_step::compile(f, builder),
        "step.pipeline" => pipeline::compile(f),
        "step.trigger" => trigger::compile(f, builder),
        _ => return None,
    })
}

/// Whether a step of kind `tag` halts the build when it fails unless
/// master.lua says otherwise (`halt_on_failure`): Buildbot's `Compile`
/// does, and a pipeline that could not give the build its steps.
pub fn halts_on_failure(tag: &str) -> bool {
    tag == "step.compile" || tag == "step.pipeline"
}

/// Run one step of a build; returns its result (`crate::results`). An error is
/// the host's: the master could not record the step.
pub async fn run<H: StepHost>(
    kind: &StepKind,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    match kind {
        StepKind::Shell(step) => shell::run(step, ctx).await,
        StepKind::Mkdir(step) => dirs::run_mkdir(step, ctx).await,
        StepKind::Rmdir(step) => dirs::run_rmdir(step, ctx).await,
        StepKind::SetProperties(step) => properties::run_set(step, ctx).await,
        StepKind::SetPropertyFromCommand(step) => properties::run_from_command(step, ctx).await,
        StepKind::ShellSequence(step) => sequence::run(step, ctx).await,
        StepKind::MasterShell(step) => master_shell::run(step, ctx).await,
        StepKind::Git(step) => git::run(step, ctx).await,
        StepKind::Upload(step) => transfer::run_upload(step, ctx).await,
        StepKind::Download(step) => transfer::run_download(step, ctx).await,
        StepKind::Files(step) => files::run(step, ctx).await,
        StepKind::Test(step) => test::run(step, ctx).await,
        StepKind::Lua(step) => lua_step::run(step, ctx).await,
        StepKind::Pipeline(step) => pipeline::run(step, ctx).await,
        StepKind::Trigger(step) => trigger::run(step, ctx).await,
    }
}
