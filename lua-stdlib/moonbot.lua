---@meta moonbot
--- The `moonbot` module: constructors for everything a master.lua returns.
---
--- Each constructor copies its arguments into a tagged table and remembers the
--- file and line it was called from. The master checks every field when it compiles
--- the configuration, so every error names the line of the constructor call.
--- Annotations (`---@class`, `---@param`) let lua-language-server complete and
--- type-check master.lua: point its `workspace.library` at this folder.

local M = {}

-- `position(level)` is provided by the master (the Lua state has no `debug`
-- library): "file:line" of the function `level` calls up, like debug.getinfo.
local position = __moonbot_position
__moonbot_position = nil
-- `add_steps(after_current, list)`, for `mb.build` outside a Lua step.
local add_steps_now = __moonbot_add_steps
__moonbot_add_steps = nil

local function where(level)
  return position(level + 1)
end

--- Copy `args` into a new table tagged with its kind and the caller's position.
local function tagged(kind, args, level)
  if type(args) ~= "table" then
    error(kind .. " expects a table of named arguments, got " .. type(args), level + 1)
  end
  local t = {}
  for k, v in pairs(args) do
    t[k] = v
  end
  t._kind = kind
  t._where = where(level + 1)
  return t
end

--- A constructor for objects of `kind`. The call to `tagged` is deliberately
--- not a tail call: a tail call would drop the constructor's frame and the
--- recorded line would be one level off.
local function constructor(kind)
  return function(args)
    local t = tagged(kind, args, 2)
    return t
  end
end

---@class moonbot.WorkerArgs
---@field name string                 Name in the worker's certificate.
---@field max_builds? integer         Builds this worker runs at once (default: unlimited).
---@field missing_timeout? integer    Seconds without a keep-alive before the worker counts as gone (default 30).
---@field reconnect_grace? integer    Seconds a running build waits for the worker to come back (default 60; 0: RETRY at once).
---@field properties? table<string, any> Properties every build on this worker gets.
---@field notify_on_missing? string[]  Addresses a worker_missing generator's mail goes to when the worker stays away longer than missing_timeout.
---@field notify? string[]             The same as notify_on_missing.

---@class moonbot.Worker: moonbot.WorkerArgs

--- A worker that may connect to this master.
---@type fun(args: moonbot.WorkerArgs): moonbot.Worker
M.worker = constructor("worker")

---@alias moonbot.Command string|moonbot.Renderable[]|moonbot.Interpolate|moonbot.Property|fun(props: table<string, any>): (string|string[])

---Step results, as `decode_rc` and `hide_step_if` use them.
---@alias moonbot.Result 0|1|2|3|4|5|6  SUCCESS, WARNINGS, FAILURE, SKIPPED, EXCEPTION, RETRY, CANCELLED (`mb.results`).

---@class moonbot.StepCommon
---@field name? string               Step name, unique within the builder (default: derived from the command).
---@field halt_on_failure? boolean   Stop the build when this step fails (default false).
---@field flunk_on_failure? boolean  The build fails when this step fails (default true).
---@field warn_on_failure? boolean   The build has warnings when this step fails (default false).
---@field flunk_on_warnings? boolean The build fails when this step has warnings (default false).
---@field warn_on_warnings? boolean  The build has warnings when this step has warnings (default false).
---@field always_run? boolean        Run even after a halting failure (default false).
---@field description? moonbot.Renderable  Text shown while the step runs.
---@field description_done? moonbot.Renderable  Text shown once it is done (default: `description`).
---@field do_step_if? boolean|fun(props: table<string, any>): boolean  Run the step only when true; otherwise it is SKIPPED.
---@field hide_step_if? boolean|fun(result: moonbot.Result, props: table<string, any>): boolean  Hide the finished step from the build page.
---@field decode_rc? table<integer, moonbot.Result>  Exit code → result (default: 0 SUCCESS, anything else FAILURE), e.g. `{ [0] = mb.results.SUCCESS, [5] = mb.results.WARNINGS }`.
---@field locks? moonbot.LockAccess[]  Locks the step holds while it runs, besides its build's.
---@field retry? moonbot.StepRetry    Run the step again in the same build when it ends this way.

---@class moonbot.StepRetry
---@field on (string|{rc: integer[]})[]|{rc?: integer[]}  "worker_lost", "timeout", and `rc = { … }` exit codes.
---@field max? integer   Attempts after the first (default 1).
---@field delay? integer Seconds before each (default 0).

---@class moonbot.ShellArgs: moonbot.StepCommon
---@field command moonbot.Command      argv (no shell; elements may be renderables), a shell string, or a renderable giving either.
---@field workdir? moonbot.Renderable  Relative to the builder's directory on the worker (default "build").
---@field env? table<string, moonbot.Renderable|false> Extra environment; `false` removes a variable.
---@field timeout? integer             Seconds without output before the command is killed (default 1200).
---@field max_time? integer            Seconds in all before the command is killed (default none).
---@field sigterm_time? integer        Seconds between SIGTERM and SIGKILL when stopping (default 5).
---@field want_stdout? boolean         Keep the command's stdout in the log (default true).
---@field want_stderr? boolean         Keep the command's stderr in the log (default true).
---@field initial_stdin? moonbot.Renderable  Text written to the command's stdin, which is then closed (default: no input).
---@field interrupt_signal? "TERM"|"INT"|"HUP"|"QUIT"|"KILL"|"USR1"|"USR2"  The signal stopping the build sends first (default "TERM").
---@field use_pty? boolean             Run the command on a pseudo-terminal; stdout and stderr arrive together (default false).
---@field warning_pattern? string      A regular expression: matching output lines go to a `warnings` log, and make a successful step WARNINGS.
---@field max_warnings? integer        With `warning_pattern`: more warnings than this make the step FAILURE.
---@field suppress_warnings? moonbot.Suppression[]  Warnings that do not count.
---@field suppression_file? moonbot.Renderable  A file on the worker (relative to `workdir`) of suppressions, one per line: `FILE-RE : WARNING-RE [: START[-END]]`.
---@field log_files? table<string, moonbot.Renderable>  Log name → a file (relative to `workdir`) the worker follows into that log while the command runs.

---@class moonbot.Suppression
---@field warning string         A regular expression matched against the warning's text (`warning_pattern`'s `text` group, or the line).
---@field file? string           A regular expression matched against the warning's file (`warning_pattern`'s `file` group).
---@field lines? integer[]       `{ start, end }` (or `{ line }`): only warnings on these lines of the file (`line` group).

---@class moonbot.Step

---@class moonbot.DirArgs: moonbot.StepCommon
---@field dir string Directory, relative to the builder's directory on the worker.

local steps = {}

--- Run a command on the worker.
---@type fun(args: moonbot.ShellArgs): moonbot.Step
steps.shell = constructor("step.shell")

--- A build command whose warnings are counted (Buildbot's Compile): a shell step with `warning_pattern` defaulting to `(?i).*warning[: ].*` that halts the build when it fails; sets the `warnings-count` property.
---@type fun(args: moonbot.ShellArgs): moonbot.Step
steps.compile = constructor("step.compile")

--- Create a directory on the worker.
---@type fun(args: moonbot.DirArgs): moonbot.Step
steps.mkdir = constructor("step.mkdir")

--- Remove a directory tree on the worker.
---@type fun(args: moonbot.DirArgs): moonbot.Step
steps.rmdir = constructor("step.rmdir")

---@class moonbot.SetPropertyArgs: moonbot.StepCommon
---@field property string              The property to set (its source: the step's name).
---@field value moonbot.Renderable       Its value, rendered when the step runs.

--- Set one build property for the steps after this one (Buildbot's SetProperty).
---@type fun(args: moonbot.SetPropertyArgs): moonbot.Step
steps.set_property = constructor("step.set_property")

---@class moonbot.SetPropertiesArgs: moonbot.StepCommon
---@field properties table<string, moonbot.Renderable>|fun(props: table<string, any>): table<string, any>  Name → value (renderables), or a function returning such a table.

--- Set several build properties (Buildbot's SetProperties).
---@type fun(args: moonbot.SetPropertiesArgs): moonbot.Step
steps.set_properties = constructor("step.set_properties")

---@class moonbot.SetPropertyFromCommandArgs: moonbot.ShellArgs
---@field property? string  The property that gets the command's stdout.
---@field strip? boolean    Strip whitespace around stdout first (default true).
---@field extract_fn? fun(rc: integer, stdout: string, stderr: string): table<string, any>  Instead of `property`: returns the properties to set.

--- Run a command and set properties from its output (Buildbot's SetPropertyFromCommand).
---@type fun(args: moonbot.SetPropertyFromCommandArgs): moonbot.Step
steps.set_property_from_command = constructor("step.set_property_from_command")

---One command of a `shell_sequence` (Buildbot's ShellArg).
---@class moonbot.ShellArg
---@field command moonbot.Command
---@field log_name? string           Its own log (default: the step's `stdio`).
---@field halt_on_failure? boolean   Stop the sequence when it fails (default false).
---@field flunk_on_failure? boolean  Its failure fails the step (default true).
---@field warn_on_failure? boolean   Its failure gives WARNINGS instead (default false).

---@class moonbot.ShellSequenceArgs: moonbot.StepCommon
---@field commands moonbot.ShellArg[]
---@field workdir? moonbot.Renderable
---@field env? table<string, moonbot.Renderable|false>
---@field timeout? integer
---@field max_time? integer
---@field sigterm_time? integer

--- Several commands in one step, each with its own log (Buildbot's ShellSequence).
---@type fun(args: moonbot.ShellSequenceArgs): moonbot.Step
steps.shell_sequence = constructor("step.shell_sequence")

---@class moonbot.GitArgs: moonbot.StepCommon
---@field repourl moonbot.Renderable     The repository to fetch from.
---@field branch? moonbot.Renderable      The branch (or full ref) when the build's source stamp names none (default: the remote's default branch).
---@field mode? "incremental"|"full"      Update the checkout in place, or make it clean (default "incremental").
---@field method? "clobber"|"fresh"|"clean"|"copy"  How `mode = "full"` cleans: start over, `git clean -xdf`, `git clean -df`, or copy an incremental checkout (default "fresh").
---@field shallow? boolean|integer       Fetch only this many commits of the wanted revision (true: 1); an older revision works too.
---@field submodules? boolean            Update submodules, recursively (default false).
---@field reference? moonbot.Renderable   A repository on the worker whose objects the checkout may borrow.
---@field retry_fetch? boolean           Try a failed fetch once more (default false).
---@field clobber_on_failure? boolean    When the update fails, remove the checkout and try once more from nothing (default false).
---@field ssh_private_key? moonbot.Renderable  A key (use `mb.secret`), written to a 0600 file on the worker for this step alone.
---@field ssh_known_hosts? moonbot.Renderable  Known hosts for that key (without it, a new host key is accepted).
---@field shared? boolean                Borrow objects from one mirror per repository on the worker, shared by its builders (default true; not with `shallow`).
---@field codebase? string               The source stamp's codebase (default "").
---@field workdir? moonbot.Renderable     The checkout, relative to the builder's directory (default "build").
---@field env? table<string, moonbot.Renderable|false>
---@field timeout? integer
---@field max_time? integer

--- Check out the build's revision (Buildbot's Git step) and set `got_revision`.
---@type fun(args: moonbot.GitArgs): moonbot.Step
steps.git = constructor("step.git")

---@class moonbot.ArtifactsArgs
---@field dir? string        Relative to the master's directory (default "artifacts").
---@field keep_days? integer Days an artifact is kept after its upload (default 30).
---@field max_size? integer  Bytes an upload may hold when its step sets no `max_size` (default 8 GiB).

---@class moonbot.UploadArgs: moonbot.StepCommon
---@field workersrc moonbot.Renderable    The file (or directory) on the worker, relative to `workdir`.
---@field masterdest? moonbot.Renderable  Where it goes among the build's artifacts (default: the source's name); no `..`, not absolute.
---@field workdir? moonbot.Renderable     Relative to the builder's directory (default "build").
---@field mode? integer                   Permission bits of the file on the master (e.g. `tonumber("644", 8)`).
---@field max_size? integer               Refuse an upload larger than this many bytes (default `artifacts.max_size`).
---@field url? moonbot.Renderable         A link to add to the step (Buildbot's `url`).
---@field url_text? string                The link's text (default: the URL).

--- Upload a file from the worker to the master as an artifact of the build (Buildbot's FileUpload).
---@type fun(args: moonbot.UploadArgs): moonbot.Step
steps.file_upload = constructor("step.file_upload")

---@class moonbot.DirectoryUploadArgs: moonbot.UploadArgs
---@field compress? "gz"|"bz2"            Compress the tar stream on the way.

--- Upload a directory from the worker (a tar stream, unpacked and checked on the master) as an artifact (Buildbot's DirectoryUpload).
---@type fun(args: moonbot.DirectoryUploadArgs): moonbot.Step
steps.directory_upload = constructor("step.directory_upload")

---@class moonbot.MultipleFileUploadArgs: moonbot.StepCommon
---@field workersrcs moonbot.Renderable[]|moonbot.Renderable  A list of files or directories on the worker (patterns with `glob = true`).
---@field glob? boolean                   Match each source as a glob pattern on the worker (default false).
---@field masterdest? moonbot.Renderable  The artifact directory they go into (default: the build's own).
---@field workdir? moonbot.Renderable
---@field mode? integer
---@field max_size? integer
---@field compress? "gz"|"bz2"
---@field url? moonbot.Renderable
---@field url_text? string

--- Upload several files and directories (Buildbot's MultipleFileUpload).
---@type fun(args: moonbot.MultipleFileUploadArgs): moonbot.Step
steps.multiple_file_upload = constructor("step.multiple_file_upload")

---@class moonbot.DownloadArgs: moonbot.StepCommon
---@field workerdest moonbot.Renderable   Where the file goes on the worker, relative to `workdir`.
---@field workdir? moonbot.Renderable     Relative to the builder's directory (default "build").
---@field mode? integer                   Permission bits of the file on the worker (default 0644).

---@class moonbot.FileDownloadArgs: moonbot.DownloadArgs
---@field mastersrc moonbot.Renderable    A file on the master, relative to the master's directory.

--- Send a file from the master to the worker (Buildbot's FileDownload).
---@type fun(args: moonbot.FileDownloadArgs): moonbot.Step
steps.file_download = constructor("step.file_download")

---@class moonbot.DirectoryDownloadArgs: moonbot.DownloadArgs
---@field mastersrc moonbot.Renderable    A directory on the master, relative to the master's directory.
---@field compress? "gz"|"bz2"            Compress the tar stream on the way.

--- Send a directory from the master to the worker; it replaces `workerdest` once whole (a moonbot addition).
---@type fun(args: moonbot.DirectoryDownloadArgs): moonbot.Step
steps.directory_download = constructor("step.directory_download")

---@class moonbot.StringDownloadArgs: moonbot.DownloadArgs
---@field s moonbot.Renderable            The file's content.

--- Write a string to a file on the worker (Buildbot's StringDownload).
---@type fun(args: moonbot.StringDownloadArgs): moonbot.Step
steps.string_download = constructor("step.string_download")

--- Write the build's properties and source stamps as JSON to a file on the worker (Buildbot's JSONPropertiesDownload).
---@type fun(args: moonbot.DownloadArgs): moonbot.Step
steps.json_property_download = constructor("step.json_property_download")

---@class moonbot.FileArgs: moonbot.StepCommon
---@field file moonbot.Renderable         Relative to the builder's directory.

--- Succeed when the file exists on the worker (Buildbot's FileExists).
---@type fun(args: moonbot.FileArgs): moonbot.Step
steps.file_exists = constructor("step.file_exists")

--- Remove a file on the worker (no error when it is missing).
---@type fun(args: moonbot.FileArgs): moonbot.Step
steps.rmfile = constructor("step.rmfile")

---@class moonbot.CopyDirectoryArgs: moonbot.StepCommon
---@field src moonbot.Renderable          Relative to the builder's directory.
---@field dest moonbot.Renderable         Relative to the builder's directory.

--- Copy a directory tree on the worker (Buildbot's CopyDirectory).
---@type fun(args: moonbot.CopyDirectoryArgs): moonbot.Step
steps.copy_directory = constructor("step.copy_directory")

---@class moonbot.GlobArgs: moonbot.StepCommon
---@field pattern moonbot.Renderable      A glob, relative to the builder's directory.
---@field property? string                The build property that gets the list of matches (default "files").

--- Find files on the worker; the list goes into a build property.
---@type fun(args: moonbot.GlobArgs): moonbot.Step
steps.glob = constructor("step.glob")

---@class moonbot.ListDirectoryArgs: moonbot.StepCommon
---@field dir moonbot.Renderable          Relative to the builder's directory.
---@field property? string                The build property that gets the names (default "files").

--- List a directory on the worker; the names go into a build property.
---@type fun(args: moonbot.ListDirectoryArgs): moonbot.Step
steps.list_directory = constructor("step.list_directory")

---@class moonbot.TestArgs: moonbot.StepCommon
---@field command? moonbot.Command    The tests to run (optional: only read reports).
---@field junit moonbot.Renderable|moonbot.Renderable[]  A glob (or a list of globs) of JUnit XML reports, relative to `workdir`.
---@field workdir? moonbot.Renderable     Relative to the builder's directory (default "build").
---@field max_report_size? integer        Refuse a report larger than this many bytes (default 64 MiB).
---@field env? table<string, moonbot.Renderable|false>
---@field timeout? integer
---@field max_time? integer

--- Run tests and read their JUnit reports into test results (pytest, Surefire, go-junit-report, Jest, ctest …).
---@type fun(args: moonbot.TestArgs): moonbot.Step
steps.test = constructor("step.test")

--- A command run on the master, not a worker (Buildbot's MasterShellCommand);
--- `workdir` is relative to the master directory. Refused unless master.lua
--- sets `allow_master_shell = true`.
---@type fun(args: moonbot.ShellArgs): moonbot.Step
steps.master_shell = constructor("step.master_shell")

---@class moonbot.LuaStepArgs: moonbot.StepCommon
---@field run fun(step: moonbot.LuaStep): moonbot.Result?  The step: commands and logs through `step`; returns its result (nil: SUCCESS).
---@field max_instructions? integer  Lua instructions the step may run in all (default 100,000,000); past it the step ends EXCEPTION.
---@field max_memory_mb? integer     MiB the step may grow the config's Lua state by (default 64); past it the step ends EXCEPTION.

--- A step written in Lua (moonbot's answer to a custom Buildbot step class).
--- `run` gets a step object; a command inside it suspends only this step.
---@type fun(args: moonbot.LuaStepArgs): moonbot.Step
steps.lua = constructor("step.lua")

---@class moonbot.TriggerArgs: moonbot.StepCommon
---@field schedulers string[]|fun(props: table<string, any>): string[]  The triggerable schedulers to trigger.
---@field wait_for_finish? boolean      Wait for the triggered builds; the step's result is the worst of theirs (default false).
---@field set_properties? table<string, moonbot.Renderable>  Properties the triggered builds get.
---@field copy_properties? string[]     Properties of this build the triggered builds get.
---@field update_sourcestamp? boolean   Trigger this build's `got_revision` rather than its source stamp's revision (default true).
---@field always_use_latest? boolean    Trigger without a revision: the branch's latest (default false).
---@field unimportant_schedulers? string[]  Schedulers whose builds' results do not count in this step's.
---@field stop_children? boolean        Stopping this build stops the triggered builds already running too (default false; those not started are always cancelled).

--- Start builds through triggerable schedulers, and optionally wait for them (Buildbot's Trigger).
---@type fun(args: moonbot.TriggerArgs): moonbot.Step
steps.trigger = constructor("step.trigger")

---@class moonbot.PipelineArgs: moonbot.StepCommon
---@field file? moonbot.Renderable   The pipeline file, relative to `workdir` (default ".moonbot/pipeline.lua"). It returns a list of steps.
---@field workdir? moonbot.Renderable Relative to the builder's directory (default "build").
---@field max_size? integer           Bytes of the file's directory fetched from the worker (default 1 MiB).
---@field max_instructions? integer   Lua instructions the file may run, and each of its functions (default 100,000,000).
---@field max_memory_mb? integer      MiB of its Lua state (default 64).

--- Steps from the repository: evaluate a file of the checkout in a sandbox
--- (no `os`, `io` or `debug`; `require` only beside the file) and run the
--- steps it returns after this one. A broken file fails the build.
---@type fun(args: moonbot.PipelineArgs): moonbot.Step
steps.pipeline = constructor("step.pipeline")

M.steps = steps

---@class moonbot.BuilderArgs
---@field name string
---@field workernames string[]       Workers that may run this builder's builds.
---@field steps moonbot.Step[]
---@field builddir? string           Directory on the worker (default: the builder's name).
---@field description? string
---@field tags? string[]
---@field properties? table<string, any> Properties every build of this builder gets.
---@field collapse_requests? moonbot.CollapseRequests  Merge compatible pending requests into one build (default: the master's `collapse_requests`).
---@field cancel_superseded? boolean  A request for a newer revision of a branch cancels this builder's older ones and stops their builds (default false).
---@field locks? moonbot.LockAccess[]  Locks each build holds while it runs (`lock:access("exclusive")`).
---@field priority? integer           Higher goes first when builders compete for workers (default 0).
---@field workerbuilddir? string      The builder's directory on the worker (Buildbot's name; default `builddir`).
---@field next_worker? fun(builder: {name: string}, workers: moonbot.WorkerChoice[], request: moonbot.RequestChoice): string?  The free worker a request goes to (nil: it waits).
---@field next_build? fun(builder: {name: string}, requests: moonbot.RequestChoice[]): moonbot.RequestChoice?  The pending request built next (nil: none now).
---@field can_start_build? fun(builder: {name: string}, worker: moonbot.WorkerChoice, request: moonbot.RequestChoice): boolean  A veto: false leaves the request pending.
---@field max_retries? integer        Builds of a request that may end RETRY before it ends EXCEPTION (default: the master's `max_retries`, 5).

---A worker as the builder's functions see it.
---@class moonbot.WorkerChoice
---@field name string
---@field properties table<string, any>
---@field running_builds integer

---A pending build request as the builder's functions see it.
---@class moonbot.RequestChoice
---@field buildrequestid integer
---@field buildsetid integer
---@field builderid integer
---@field priority integer
---@field submitted_at number

---A request as a `collapse_requests` function sees it.
---@class moonbot.CollapsibleRequest
---@field buildrequestid integer
---@field buildsetid integer
---@field priority integer
---@field submitted_at number
---@field sourcestamps { codebase: string, repository: string, branch?: string, revision?: string, project: string }[]
---@field properties table<string, any>
---@field changeids integer[]

---`true` (compatible source stamps merge), `false`, or a function deciding for two requests.
---@alias moonbot.CollapseRequests boolean|fun(builder: { name: string, builderid: integer }, new: moonbot.CollapsibleRequest, old: moonbot.CollapsibleRequest): boolean

---@class moonbot.Builder: moonbot.BuilderArgs

--- A builder: a named list of steps that runs on one of its workers.
---@type fun(args: moonbot.BuilderArgs): moonbot.Builder
M.builder = constructor("builder")

---@class moonbot.ForceSchedulerArgs
---@field name string
---@field builders string[]          Builders this scheduler may force.
---@field label? string
---@field button_name? string        The submit button's text (default "Start build").
---@field reason? moonbot.ForceParam  The reason field (default a free string).
---@field username? moonbot.ForceParam  The owner field: mb.params.username or mb.params.fixed (a logged-in user is the owner).
---@field codebases? (string|moonbot.ForceParam)[]  A source stamp per codebase: its name (free fields) or mb.params.codebase{…} (default none: built without a revision).
---@field properties? moonbot.ForceParam[]  Typed fields, each setting the property of its name.

---@class moonbot.ForceParam

---@class moonbot.ParamArgs
---@field name string                Its property (or field) name.
---@field label? string              Shown on the form (default the name).
---@field default? any               Used when the field is left out.
---@field required? boolean          An empty value is refused (default false).

---@class moonbot.StringParamArgs: moonbot.ParamArgs
---@field regex? string              Must match from the start (Python's re.match).
---@field size? integer              Width of the box.

---@class moonbot.TextParamArgs: moonbot.ParamArgs
---@field regex? string
---@field cols? integer
---@field rows? integer

---@class moonbot.ChoiceParamArgs: moonbot.ParamArgs
---@field choices string[]
---@field multiple? boolean          A list of choices (default false).
---@field strict? boolean            Only the choices are taken (default true).

---@class moonbot.UsernameParamArgs
---@field name? string               Always "owner".
---@field label? string
---@field default? string
---@field required? boolean

---@class moonbot.FixedParamArgs
---@field name string
---@field label? string
---@field default any                The value, shown and not editable.

---@class moonbot.CodebaseParamArgs
---@field codebase? string           Default "" (the default codebase).
---@field label? string
---@field branch? string|moonbot.ForceParam      A string is that value, fixed.
---@field revision? string|moonbot.ForceParam
---@field repository? string|moonbot.ForceParam
---@field project? string|moonbot.ForceParam

local params = {}
--- A one-line string (Buildbot's StringParameter).
---@type fun(args: moonbot.StringParamArgs): moonbot.ForceParam
params.string = constructor("param.string")
--- Several lines (TextParameter).
---@type fun(args: moonbot.TextParamArgs): moonbot.ForceParam
params.text = constructor("param.text")
--- A whole number (IntParameter).
---@type fun(args: moonbot.ParamArgs): moonbot.ForceParam
params.int = constructor("param.int")
--- A checkbox (BooleanParameter).
---@type fun(args: moonbot.ParamArgs): moonbot.ForceParam
params.boolean = constructor("param.boolean")
--- One of a list, or several (ChoiceStringParameter).
---@type fun(args: moonbot.ChoiceParamArgs): moonbot.ForceParam
params.choice = constructor("param.choice")
--- Who forces the build (UserNameParameter).
---@type fun(args: moonbot.UsernameParamArgs): moonbot.ForceParam
params.username = constructor("param.username")
--- A value shown and not editable (FixedParameter).
---@type fun(args: moonbot.FixedParamArgs): moonbot.ForceParam
params.fixed = constructor("param.fixed")
--- A codebase's branch, revision, repository and project (CodebaseParameter).
---@type fun(args: moonbot.CodebaseParamArgs): moonbot.ForceParam
params.codebase = constructor("param.codebase")
M.params = params

---@class moonbot.Scheduler

local schedulers = {}

--- A scheduler that starts builds on request (web form, REST API, `force`).
---@type fun(args: moonbot.ForceSchedulerArgs): moonbot.Scheduler
schedulers.force = constructor("scheduler.force")

---@alias moonbot.StringMatch string|string[]|fun(value: string?): boolean

---@class moonbot.ChangeFilter
---@field project? moonbot.StringMatch        The change's project equals this, is one of these, or passes this function.
---@field repository? moonbot.StringMatch
---@field branch? moonbot.StringMatch
---@field category? moonbot.StringMatch
---@field codebase? moonbot.StringMatch
---@field project_re? string|string[]         A regular expression (or several) matched from the start of the value.
---@field repository_re? string|string[]
---@field branch_re? string|string[]
---@field category_re? string|string[]
---@field codebase_re? string|string[]
---@field filter_fn? fun(change: table): boolean  Sees the whole change (author, branch, files, properties …).

---@class moonbot.ChangeSchedulerArgs
---@field name string
---@field builders string[]                 Builders each buildset asks for.
---@field change_filter? moonbot.ChangeFilter Which changes this scheduler takes (default: every change of its codebases).
---@field tree_stable_timer? integer|string  Seconds (or "5m") without a new important change before building; unset or 0 builds each important change at once.
---@field file_is_important? fun(change: table): boolean  Whether a change calls for a build (default: every change does).
---@field only_important? boolean           Leave unimportant changes out of the build (default false).
---@field cancel_superseded? boolean        A newer change on a branch (or pull request) cancels the older changes' pending requests and stops their running builds (default false).
---@field reason? string                    The buildset's reason.
---@field properties? table<string, any>    Properties of every build this scheduler starts.
---@field priority? integer                 Priority of its build requests (default 0; higher goes first).
---@field codebases? string[]|table<string, { repository?: string, branch?: string, revision?: string }>  Codebases it builds (default { "" }); changes of others are ignored.

--- Builds the changes its filter takes, all branches together behind one
--- tree-stable timer (Buildbot's SingleBranchScheduler).
---@type fun(args: moonbot.ChangeSchedulerArgs): moonbot.Scheduler
schedulers.single_branch = constructor("scheduler.single_branch")

--- Builds the changes its filter takes, with one tree-stable timer per
--- branch (Buildbot's AnyBranchScheduler).
---@type fun(args: moonbot.ChangeSchedulerArgs): moonbot.Scheduler
schedulers.any_branch = constructor("scheduler.any_branch")

---@class moonbot.TimedSchedulerArgs
---@field name string
---@field builders string[]
---@field branch? string                    The branch its builds build (default: the repository's default).
---@field only_if_changed? boolean          Build only when a change came since the last run (default false).
---@field change_filter? moonbot.ChangeFilter With only_if_changed: which changes count.
---@field file_is_important? fun(change: table): boolean With only_if_changed: whether a change counts.
---@field reason? string
---@field properties? table<string, any>
---@field priority? integer

---@class moonbot.PeriodicArgs: moonbot.TimedSchedulerArgs
---@field period integer|string             Seconds (or "1h") between runs; a new scheduler builds at once.

---@alias moonbot.CronField integer|integer[]

---@class moonbot.NightlyArgs: moonbot.TimedSchedulerArgs
---@field minute? moonbot.CronField         Default 0.
---@field hour? moonbot.CronField           Default every hour.
---@field day_of_month? moonbot.CronField
---@field month? moonbot.CronField
---@field day_of_week? moonbot.CronField    Monday = 0, as in Buildbot.
---@field cron? string                      Instead of the fields: "m h dom mon dow" (an optional leading seconds field), ranges and steps allowed; Sunday = 0.
---@field timezone? string                  An IANA name, such as "Europe/Paris" (default "UTC").

--- Builds every `period` (Buildbot's Periodic).
---@type fun(args: moonbot.PeriodicArgs): moonbot.Scheduler
schedulers.periodic = constructor("scheduler.periodic")

--- Builds at set times (Buildbot's Nightly).
---@type fun(args: moonbot.NightlyArgs): moonbot.Scheduler
schedulers.nightly = constructor("scheduler.nightly")

---@class moonbot.DependentArgs
---@field name string
---@field builders string[]
---@field upstream string                   The scheduler whose successful buildsets (SUCCESS or WARNINGS) this one follows.
---@field reason? string
---@field properties? table<string, any>
---@field priority? integer

--- Builds the source stamps of each successful buildset of `upstream` (Buildbot's Dependent).
---@type fun(args: moonbot.DependentArgs): moonbot.Scheduler
schedulers.dependent = constructor("scheduler.dependent")

---@class moonbot.TriggerableArgs
---@field name string
---@field builders string[]
---@field reason? string                   The buildset's reason (default: "The Triggerable scheduler named 'NAME' triggered this build").
---@field properties? table<string, any>   Properties its builds get (a trigger's `set_properties` win).
---@field priority? integer

--- Builds when a build's `mb.steps.trigger` names it (Buildbot's Triggerable).
---@type fun(args: moonbot.TriggerableArgs): moonbot.Scheduler
schedulers.triggerable = constructor("scheduler.triggerable")

M.schedulers = schedulers

---@class moonbot.GitPollerArgs
---@field repourl string                  The repository to poll (any URL `git ls-remote` takes; no password in it).
---@field name? string                    Unique among change sources (default: repourl).
---@field branches? string[]|"all"|fun(branch: string): boolean  Branches to follow (default: the remote's default branch).
---@field only_tags? boolean              Follow tags instead of branches (default false).
---@field poll_interval? integer|string   Seconds (or "10m") between polls (default 600).
---@field poll_at_launch? boolean         Poll as soon as the master starts (default false).
---@field poll_random_delay? integer|string Up to this many seconds added at random to each wait (default 0).
---@field project? string
---@field category? string
---@field codebase? string
---@field build_pushes_with_no_commits? boolean A branch that moves without a new commit still makes a change (default false).
---@field ssh_private_key? string         The text of an SSH private key (use a secret or read a file in master.lua).
---@field http_token? string              An HTTPS token, sent as the password of `http_user`.
---@field http_user? string               Default "git" (GitHub: "x-access-token", GitLab: "oauth2").

---@class moonbot.ChangeSource

local changes = {}

--- Polls a git repository and makes a change of each new commit (Buildbot's GitPoller).
---@type fun(args: moonbot.GitPollerArgs): moonbot.ChangeSource
changes.git_poller = constructor("changes.git_poller")

M.changes = changes

---@alias moonbot.ReportMode "all"|"failing"|"passing"|"warnings"|"exception"|"cancelled"|"problem"|"change"

---@class moonbot.BuildStatusArgs
---@field mode? moonbot.ReportMode[]  Which finished builds to report (default { "all" }); "problem": failed after a build of the same builder and branch that did not; "change": a result other than that build's.
---@field builders? string[]          Only these builders (default: all).
---@field tags? string[]              Only builders with one of these tags.
---@field branches? string[]          Only builds of these branches.
---@field schedulers? string[]        Only builds these schedulers asked for.

---@class moonbot.BuildStartEndArgs
---@field builders? string[]          Only these builders (default: all).
---@field tags? string[]              Only builders with one of these tags.
---@field branches? string[]          Only builds of these branches.
---@field schedulers? string[]        Only builds these schedulers asked for.

---@class moonbot.BuildsetArgs
---@field mode? moonbot.ReportMode[]  Which of its builds to report (default { "failing", "passing", "warnings" }); none taken: no message.
---@field builders? string[]          Only builds of these builders (default: all).
---@field tags? string[]              Only builds of builders with one of these tags.
---@field branches? string[]          Only builds of these branches.
---@field schedulers? string[]        Only builds these schedulers asked for.

---@class moonbot.BuildsetCombinedArgs

---@class moonbot.WorkerMissingArgs
---@field workers? "all"|string[]     Which workers (default "all"); mail goes to each one's notify_on_missing.

---@class moonbot.Generator

local generators = {}

--- Reports a finished build whose result is one of `mode` (Buildbot's BuildStatusGenerator).
---@type fun(args: moonbot.BuildStatusArgs): moonbot.Generator
generators.build_status = constructor("generators.build_status")

--- Reports every build when it starts and when it ends (Buildbot's BuildStartEndStatusGenerator).
---@type fun(args: moonbot.BuildStartEndArgs): moonbot.Generator
generators.build_start_end = constructor("generators.build_start_end")

--- Reports a finished buildset, in one message with those of its builds that the filters and modes take (Buildbot's BuildSetStatusGenerator).
---@type fun(args: moonbot.BuildsetArgs): moonbot.Generator
generators.buildset = constructor("generators.buildset")

--- Reports every finished buildset, in one message with all its builds (Buildbot's BuildSetCombinedStatusGenerator).
---@type fun(args: moonbot.BuildsetCombinedArgs): moonbot.Generator
generators.buildset_combined = constructor("generators.buildset_combined")

--- Reports a worker that stayed away longer than its missing_timeout (Buildbot's WorkerMissingGenerator).
---@type fun(args: moonbot.WorkerMissingArgs): moonbot.Generator
generators.worker_missing = constructor("generators.worker_missing")

M.generators = generators

---@class moonbot.HttpPushArgs
---@field url string                  Where each report is POSTed.
---@field name? string                Unique among reporters (default: the url).
---@field generators? moonbot.Generator[] What to report (default: every build's start and end).
---@field user? string                Basic auth user (with `password`).
---@field password? string            Basic auth password (read it from a file or the environment in master.lua).
---@field token? string               Sent as `Authorization: Bearer <token>`.
---@field hmac_secret? string         Signs the body: `X-Hub-Signature-256: sha256=<hex>`.
---@field headers? table<string, string> More headers to send.
---@field format_fn? fun(build: table): (table|string) The body from the build (default: the build as JSON).
---@field template? string          A Jinja2 template of the body instead (sent as JSON when it renders JSON): build, buildername, build_url, results, result_names, workername, summary, event …
---@field max_attempts? integer       Tries before a message that keeps failing is given up (default 10).
---@field timeout? integer|string     Seconds one request may take (default 10).

---@class moonbot.StatusArgs
---@field token string                A token of the forge's API that may set commit statuses.
---@field base_url? string            The API's root (GitHub: https://api.github.com, or https://HOST/api/v3 for Enterprise; GitLab: https://gitlab.com; Bitbucket: https://api.bitbucket.org; Gitea: required, its root URL).
---@field context? string             The status's name; `%(prop:NAME)s` is filled from the build (default "moonbot/%(prop:buildername)s").
---@field name? string                Unique among reporters (default: "<forge>_status").
---@field generators? moonbot.Generator[] Whose statuses to set: their builders, tags and branches (default: every build).
---@field max_attempts? integer       Tries before a status that keeps failing is given up (default 10).
---@field timeout? integer|string     Seconds one request may take (default 10).

---@class moonbot.ChatArgs
---@field name? string                Unique among reporters (default: the kind).
---@field generators? moonbot.Generator[] What to report (default: every finished build).
---@field format_fn? fun(build: table): string The text from the build (default: "<builder> #<number> <result> on <branch>: <url>").
---@field template? string          A Jinja2 template of the text instead: build, buildername, build_url, results, result_names, workername, summary, event …
---@field max_attempts? integer       Tries before a message that keeps failing is given up (default 10).
---@field timeout? integer|string     Seconds one request may take (default 10).

---@class moonbot.WebhookChatArgs: moonbot.ChatArgs
---@field webhook string              The incoming webhook's URL (it is the credential: keep it out of version control).

---@class moonbot.MatrixArgs: moonbot.ChatArgs
---@field homeserver string           The homeserver's URL (https://matrix.example.org).
---@field room string                 The room id (!abc:example.org).
---@field token string                The bot account's access token.

---@class moonbot.ZulipArgs: moonbot.ChatArgs
---@field site string                 The Zulip's URL (https://example.zulipchat.com).
---@field stream string               The stream (channel) to post to.
---@field topic? string               The topic (default "builds").
---@field email string                The bot's e-mail.
---@field api_key string              The bot's API key.

---@class moonbot.SmtpArgs
---@field host string                 The mail relay.
---@field port? integer               Default 587 (starttls), 465 (tls), 25 (none).
---@field tls? "none"|"starttls"|"tls" Default "starttls".
---@field user? string
---@field password? string            Read it from a file or the environment in master.lua.

---@class moonbot.MailArgs
---@field from string                 The sender ("CI <ci@example.org>").
---@field smtp moonbot.SmtpArgs
---@field name? string                Unique among reporters (default "mail").
---@field extra_recipients? string[]  Always mailed.
---@field send_to_interested_users? boolean Mail the authors of the build's changes (default true).
---@field lookup? string|fun(name: string): string An author without an address: a domain (name@domain) or a function.
---@field extra_headers? table<string, string>
---@field generators? moonbot.Generator[] What to report (default: failing, passing and warnings builds).
---@field format_fn? fun(build: table): { subject: string, body: string } The message (default: builder, result, branch; link, changes, failing steps and the failed log's last lines).
---@field template? string          A Jinja2 template of the body instead: build, buildername, build_url, results, result_names, workername, blamelist, summary, buildset, builds, worker …
---@field subject? string           A Jinja2 template of the subject instead.
---@field add_logs? boolean|string[] Attach every log of the reported builds (true), or those named ("log" or "step.log"); each one's last 10,000 lines.
---@field max_attempts? integer       Tries before a mail that keeps failing is given up (default 10).
---@field timeout? integer|string     Seconds one SMTP exchange may take (default 10).

---@class moonbot.GitHubCommentArgs
---@field token string                A GitHub token that may comment on the repository's pull requests.
---@field base_url? string            Default https://api.github.com (Enterprise: https://HOST/api/v3).
---@field name? string                Unique among reporters (default "github_comment").
---@field generators? moonbot.Generator[] What to report (default: every finished build).
---@field format_fn? fun(build: table): string|nil The comment (nil: none; default "Build <builder> #<number> <result>: <url>").
---@field template? string          A Jinja2 template of the comment instead (empty: none).
---@field max_attempts? integer       Tries before a comment that keeps failing is given up (default 10).
---@field timeout? integer|string     Seconds one request may take (default 10).

---@class moonbot.Reporter

local reporters = {}

--- POSTs each reported build as JSON (Buildbot's HttpStatusPush).
---@type fun(args: moonbot.HttpPushArgs): moonbot.Reporter
reporters.http_push = constructor("reporters.http_push")

--- Sets a GitHub commit status for each commit a build builds: pending when queued, then the result (Buildbot's GitHubStatusPush).
---@type fun(args: moonbot.StatusArgs): moonbot.Reporter
reporters.github_status = constructor("reporters.github_status")

--- Sets a GitLab commit status: pending when queued, running, then the result (Buildbot's GitLabStatusPush).
---@type fun(args: moonbot.StatusArgs): moonbot.Reporter
reporters.gitlab_status = constructor("reporters.gitlab_status")

--- Sets a Gitea commit status: pending when queued, then the result (Buildbot's GiteaStatusPush).
---@type fun(args: moonbot.StatusArgs): moonbot.Reporter
reporters.gitea_status = constructor("reporters.gitea_status")

--- Sets a Bitbucket Cloud build status: INPROGRESS when queued, then the result (Buildbot's BitbucketStatusPush).
---@type fun(args: moonbot.StatusArgs): moonbot.Reporter
reporters.bitbucket_status = constructor("reporters.bitbucket_status")

--- Posts a line per reported build to a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat).
---@type fun(args: moonbot.WebhookChatArgs): moonbot.Reporter
reporters.slack = constructor("reporters.slack")

--- Comments on the pull request a build builds (its `github.number` property), with the result and the link (Buildbot's GitHubCommentPush).
---@type fun(args: moonbot.GitHubCommentArgs): moonbot.Reporter
reporters.github_comment = constructor("reporters.github_comment")

--- Mails reported builds to the authors of their changes and to fixed addresses (Buildbot's MailNotifier).
---@type fun(args: moonbot.MailArgs): moonbot.Reporter
reporters.mail = constructor("reporters.mail")

--- Posts a line per reported build to a Discord webhook.
---@type fun(args: moonbot.WebhookChatArgs): moonbot.Reporter
reporters.discord = constructor("reporters.discord")

--- Sends a room message per reported build through Matrix's client-server API.
---@type fun(args: moonbot.MatrixArgs): moonbot.Reporter
reporters.matrix = constructor("reporters.matrix")

--- Posts a stream message per reported build to Zulip.
---@type fun(args: moonbot.ZulipArgs): moonbot.Reporter
reporters.zulip = constructor("reporters.zulip")

M.reporters = reporters

---A template rendered when its step runs (Buildbot's `Interpolate`).
---@class moonbot.Interpolate
---@field template string

---A build property's value when its step runs (Buildbot's `Property`).
---@class moonbot.Property
---@field name string

---A secret's value when its step runs; it never shows in logs or the API.
---@class moonbot.SecretRef
---@field name string

---A step argument: a plain value, or one the running build fills in.
---@alias moonbot.Renderable string|number|boolean|moonbot.Interpolate|moonbot.Property|moonbot.SecretRef|fun(props: table<string, any>): any

--- A string rendered when its step runs, with Buildbot's whole syntax:
--- `%(prop:NAME)s`, `%(src:CODEBASE:ATTR)s` (`%(src::branch)s` for the default
--- codebase), `%(secret:NAME)s`, `%(worker:ATTR)s` and `%(kw:NAME)s`, each
--- optionally with `:-default`, `:~default_if_false`, `:+if_present`,
--- `:?|if_present|if_absent` or `:#?|if_true|if_false` (replacements may hold
--- substitutions); `%%` is a percent sign. The template is checked when the
--- configuration loads: a mistake is an error at this line.
---@param template string
---@param kw? table<string, moonbot.Renderable> Values for `%(kw:NAME)s`.
---@return moonbot.Interpolate
function M.interpolate(template, kw)
  if type(template) ~= "string" then
    error("interpolate expects a string, got " .. type(template), 2)
  end
  if kw ~= nil and type(kw) ~= "table" then
    error("interpolate: the keywords must be a table, got " .. type(kw), 2)
  end
  return { _kind = "interpolate", _where = where(2), template = template, kw = kw }
end

--- A build property's value when the step runs; `default` (itself possibly a
--- renderable) when the property is missing or false, as Buildbot's
--- `Property(name, default=…)`. With `{ default_when_false = false }`, only a
--- missing property takes the default.
---@param name string
---@param default? moonbot.Renderable
---@param options? { default_when_false?: boolean }
---@return moonbot.Property
function M.property(name, default, options)
  if type(name) ~= "string" then
    error("property expects a name, got " .. type(name), 2)
  end
  local when_false = true
  if options ~= nil then
    if type(options) ~= "table" then
      error("property: options must be a table, got " .. type(options), 2)
    end
    for k in pairs(options) do
      if k ~= "default_when_false" then
        error("property: unknown option '" .. tostring(k) .. "'", 2)
      end
    end
    when_false = options.default_when_false ~= false
  end
  return {
    _kind = "property",
    _where = where(2),
    name = name,
    default = default,
    default_when_false = when_false,
  }
end

--- A secret's value when the step runs, from the providers in `secrets`.
---@param name string
---@return moonbot.SecretRef
function M.secret(name)
  if type(name) ~= "string" then
    error("secret expects a name, got " .. type(name), 2)
  end
  return { _kind = "secret", _where = where(2), name = name }
end

---@class moonbot.SecretsProvider

---@class moonbot.SecretsFilesArgs
---@field dir string  Directory (relative to the master directory) with one file per secret, named as the secret; files must not be readable by others (chmod 600).

---@class moonbot.SecretsEnvArgs
---@field prefix string  The secret NAME is the environment variable PREFIX..NAME of the master.

local secrets = {}

--- Secrets read from files, one per secret (Buildbot's SecretInAFile).
---@type fun(args: moonbot.SecretsFilesArgs): moonbot.SecretsProvider
secrets.files = constructor("secrets.files")

--- Secrets read from the master's environment.
---@type fun(args: moonbot.SecretsEnvArgs): moonbot.SecretsProvider
secrets.env = constructor("secrets.env")

M.secrets = secrets

---@class moonbot.ChangeHook
---@field secret? string    The secret set in the forge's webhook (GitHub signs with it, GitLab sends it as its token); deliveries must then carry it.
---@field secret_file? string  Instead of `secret`: a file of the master directory holding it (not readable by every user).
---@field strict? boolean   Require `secret` (default false).
---@field codebase? string  The changes' codebase (default "").
---@field project? string   The changes' project (default: the forge's owner/name).
---@field token? string     The forges (not `base`): an API token, to fetch a pull request's changed files.
---@field token_file? string  Instead of `token`: a file of the master directory holding it.
---@field github_api_endpoint? string GitHub: the API's base (default "https://api.github.com").
---@field api_url? string   Gitea, GitLab and Bitbucket: the API's base (default: the repository's host's /api/v1 or /api/v4; bitbucket.org's API; Bitbucket Server needs it).

---@class moonbot.Www
---@field port? integer             HTTP port (default 8010; 0 picks a free one).
---@field bind? string              HTTP address (default "127.0.0.1").
---@field hosts? string[]           Host names the master answers to besides loopback and `bind`.
---@field max_connections? integer  Web connections open at once, /ws included (default 1000).
---@field idle_timeout? integer|string  Seconds (or "30s") to send a request's headers (default 30).
---@field change_hooks? { github?: moonbot.ChangeHook, gitlab?: moonbot.ChangeHook, gitea?: moonbot.ChangeHook, bitbucketcloud?: moonbot.ChangeHook, bitbucketserver?: moonbot.ChangeHook, base?: moonbot.ChangeHook }  Forge webhooks at /change_hook/DIALECT; only these answer.

---@class moonbot.Config
---@field title? string
---@field title_url? string
---@field buildbot_url? string         Public URL of the web UI (used in links; https makes cookies Secure).
---@field www? moonbot.Www
---@field protocols? { quic?: { port?: integer, bind?: string, idle_timeout?: integer } }
---@field db? { url?: string }
---@field reconfig? { watch?: boolean, debounce_ms?: integer }  Reload on save of master.lua or a file it requires (default true, 300 ms).
---@field workers? moonbot.Worker[]
---@field builders? moonbot.Builder[]
---@field schedulers? moonbot.Scheduler[]
---@field change_sources? moonbot.ChangeSource[]  Pollers; webhooks are `www.change_hooks`.
---@field reporters? moonbot.Reporter[]  Who is told about builds (`mb.reporters.*`).
---@field auth? table                  Users, API tokens and who may do what (see the README).
---@field janitor? moonbot.JanitorArgs How long history is kept (no section: all of it).
---@field artifacts? moonbot.ArtifactsArgs Where uploads are kept on the master, and for how long.
---@field collapse_requests? moonbot.CollapseRequests  Every builder's default (default true).
---@field properties? table<string, any>  Properties every build gets (the lowest layer, source "Global").
---@field secrets? moonbot.SecretsProvider[]  Where `mb.secret` and `%(secret:NAME)s` look, in order.
---@field allow_master_shell? boolean  Let builders run `mb.steps.master_shell` commands on the master (default false).
---@field prioritize_builders? fun(builders: {name: string, priority: integer, tags: string[]}[]): (string|{name: string})[]  The order builders get free workers in; a builder left out waits.
---@field max_retries? integer        Builds of a request that may end RETRY before it ends EXCEPTION (default 5).

---@alias moonbot.Duration integer|string Seconds, or a number with one unit: "90s", "30m", "24h", "180d".

---@class moonbot.JanitorArgs
---@field build_horizon? moonbot.Duration  Delete builds (steps, logs, properties) that completed longer ago.
---@field log_horizon? moonbot.Duration    Delete the content of logs of builds that completed longer ago; the build stays.
---@field change_horizon? moonbot.Duration Delete changes older than this, with their files and properties.
---@field every? moonbot.Duration          Time between two passes (default "1h").

---@class moonbot.LockAccess

---@class moonbot.Lock
local Lock = {}
Lock.__index = Lock

--- Use this lock in a builder's or step's `locks`: "counting" (up to `max_count` holders) or "exclusive" (alone).
---@param mode "counting"|"exclusive"
---@return moonbot.LockAccess
function Lock:access(mode)
  return { _kind = "lock_access", _where = where(2), lock = self, mode = mode }
end

---@class moonbot.MasterLockArgs
---@field name string
---@field max_count? integer   Holders at once in counting mode (default 1).

---@class moonbot.WorkerLockArgs
---@field name string
---@field max_count? integer   Holders at once on each worker in counting mode (default 1).
---@field max_count_for_worker? table<string, integer>  Another count on some workers.

M.locks = {}

--- A lock counted on the whole master (Buildbot's MasterLock).
---@param args moonbot.MasterLockArgs
---@return moonbot.Lock
function M.locks.master(args)
  local t = tagged("lock.master", args, 2)
  return setmetatable(t, Lock)
end

--- A lock counted on each worker (Buildbot's WorkerLock).
---@param args moonbot.WorkerLockArgs
---@return moonbot.Lock
function M.locks.worker(args)
  local t = tagged("lock.worker", args, 2)
  return setmetatable(t, Lock)
end

--- Buildbot's result codes, for `decode_rc`, `hide_step_if` and functions that read results.
M.results = {
  SUCCESS = 0,
  WARNINGS = 1,
  FAILURE = 2,
  SKIPPED = 3,
  EXCEPTION = 4,
  RETRY = 5,
  CANCELLED = 6,
}

M.version = "0.1.0"

---@class moonbot.LuaShellArgs
---@field command moonbot.Command     A shell string or an argv list.
---@field workdir? string             Relative to the builder's directory (default "build").
---@field env? table<string, string|false>
---@field timeout? integer            Seconds without output (default 1200).
---@field max_time? integer
---@field collect_stdout? boolean     Also return the command's stdout (and stderr) as strings (default false).
---@field want_stdout? boolean
---@field want_stderr? boolean
---@field initial_stdin? string

---@class moonbot.LuaLog
local LuaLog = {}
LuaLog.__index = LuaLog

---@class moonbot.LuaBuild
local LuaBuild = {}
LuaBuild.__index = LuaBuild

---@class moonbot.LuaStep
---@field name string         The step's name.
---@field build moonbot.LuaBuild  The build: add steps to it.
local LuaStep = {}
LuaStep.__index = LuaStep

local yield = coroutine.yield

-- Ask the master for something and wait for the answer; an error in the
-- answer is raised at the caller of the step method.
local function ask(request, level)
  local answer = yield(request)
  if type(answer) ~= "table" then
    error("a Lua step's requests go through its step methods", level or 3)
  end
  if answer.error then
    error(answer.error, level or 3)
  end
  return answer
end

local function named_args(method, args)
  if type(args) ~= "table" then
    error(method .. " expects a table of named arguments, got " .. type(args), 3)
  end
  local copy = {}
  for k, v in pairs(args) do
    copy[k] = v
  end
  return copy
end

--- Write `text` into this log.
---@param text string
function LuaLog:write(text)
  ask({ op = "write", log = self.name, text = tostring(text), where = where(2) })
end

--- Run a command on the worker, its output into the step's `stdio` log.
--- Returns the exit code (nil when it was killed), and with `collect_stdout`
--- its stdout and stderr.
---@param args moonbot.LuaShellArgs
---@return integer? rc
---@return string? stdout
---@return string? stderr
function LuaStep:shell(args)
  local a = ask({ op = "shell", args = named_args("step:shell", args), where = where(2) })
  return a.rc, a.stdout, a.stderr
end

--- The step's log `name` (made when first asked for).
---@param name string
---@return moonbot.LuaLog
function LuaStep:add_log(name)
  ask({ op = "add_log", name = name, where = where(2) })
  return setmetatable({ name = name }, LuaLog)
end

--- A build property's value (nil when unset).
---@param name string
---@return any
function LuaStep:property(name)
  return self._properties[name]
end

--- Set a build property, for this step and the ones after it.
---@param name string
---@param value any
function LuaStep:set_property(name, value)
  ask({ op = "set_property", name = name, value = value, where = where(2) })
  self._properties[name] = value
end

--- What the step shows once it is done.
---@param text string
function LuaStep:set_summary(text)
  ask({ op = "set_summary", text = tostring(text), where = where(2) })
end

--- Upload from the worker into the build's artifacts: `mb.steps.file_upload`'s
--- arguments, or `directory_upload`'s with `directory = true`. Returns the result.
---@param args table
---@return moonbot.Result
function LuaStep:upload(args)
  return ask({ op = "upload", args = named_args("step:upload", args), where = where(2) }).result
end

--- Download to the worker: `mb.steps.file_download`'s arguments (`mastersrc`),
--- `string_download`'s (`s`) or `directory_download`'s (`mastersrc` with
--- `directory = true`). Returns the result.
---@param args table
---@return moonbot.Result
function LuaStep:download(args)
  return ask({ op = "download", args = named_args("step:download", args), where = where(2) }).result
end

-- The coroutines of running Lua steps (their requests go to the master by
-- yielding; elsewhere, additions are recorded for the call's build).
local step_threads = setmetatable({}, { __mode = "k" })

local function add_steps(after, method, list)
  local copy = named_args(method, list)
  if step_threads[coroutine.running()] then
    ask({ op = "add_steps", after = after, steps = copy, where = where(3) }, 4)
  else
    local refused = add_steps_now(after == "current", copy)
    if refused then error(refused, 3) end
  end
end

--- Add steps to run right after the current one (in the order given).
---@param list moonbot.Step[]
function LuaBuild:add_steps_after_current(list)
  add_steps("current", "add_steps_after_current", list)
end

--- Add steps to run after the build's last one.
---@param list moonbot.Step[]
function LuaBuild:add_steps_after_last(list)
  add_steps("last", "add_steps_after_last", list)
end

--- The running build, for functions it calls (a renderable, `do_step_if`):
--- `mb.build:add_steps_after_current{ … }` adds steps after the step whose
--- function it is. A Lua step has its own as `step.build`.
M.build = setmetatable({}, LuaBuild)

-- The master runs each Lua step as a coroutine of this function (it takes
-- it out of the module before master.lua runs).
function M._step_runner(run, info)
  step_threads[coroutine.running()] = true
  local build = setmetatable({}, LuaBuild)
  local step = setmetatable({ name = info.name, build = build, _properties = info.properties or {} }, LuaStep)
  return run(step)
end

return M
