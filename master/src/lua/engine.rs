//! Running master.lua: one Lua state per config generation, on its own thread.
//!
//! Only `lua/` touches mlua, and only this file runs it. Loading evaluates master.lua with the embedded
//! `moonbot` module and turns the returned table into a [`RawValue`] tree that the
//! compiler can read on any thread. Lua functions found in the tree stay in the
//! generation's state and are called later through [`LuaGeneration::call`]; the
//! thread lives as long as a config or a running build holds the generation, so a
//! build keeps the functions it started with after a reconfig.

use super::error::ConfigError;
use super::task::{LuaScope, LuaTask, Resumed, Start, TaskLimits};
use super::value::{FnHome, LuaFn, RawKey, RawValue};
use mlua::{Function, HookTriggers, Lua, Table, Thread, Value, VmState};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

/// What a Lua state may use: memory for the whole state, and instructions
/// for loading master.lua and for each build-time call. A master.lua that
/// loops or allocates without end is refused (the running configuration
/// stays) instead of hanging the reload or aborting the master; a build-time
/// function that does ends its step EXCEPTION. Each can be changed with an
/// environment variable of the master (see [`LuaLimits::from_env`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LuaLimits {
    pub memory_bytes: usize,
    pub load_instructions: u64,
    pub call_instructions: u64,
    /// `checkconfig --sandbox`: a file someone sent you, checked without
    /// `os`, `io`, `debug` or C modules, and reading Lua files only from the
    /// master directory (see [`SANDBOX`]).
    pub sandbox: bool,
}

impl Default for LuaLimits {
    fn default() -> Self {
        LuaLimits {
            memory_bytes: 256 << 20,
            // A few seconds of Lua; a real master.lua needs well under 1%.
            load_instructions: 1_000_000_000,
            call_instructions: 100_000_000,
            sandbox: false,
        }
    }
}

impl LuaLimits {
    /// The defaults, changed by `MOONBOT_LUA_MEMORY_MB`,
    /// `MOONBOT_LUA_LOAD_INSTRUCTIONS` and `MOONBOT_LUA_CALL_INSTRUCTIONS`
    /// where they are set to a positive number.
    pub fn from_env() -> LuaLimits {
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
        };
        let d = LuaLimits::default();
        LuaLimits {
            memory_bytes: read("MOONBOT_LUA_MEMORY_MB")
                .map_or(d.memory_bytes, |mb| (mb as usize).saturating_mul(1 << 20)),
            load_instructions: read("MOONBOT_LUA_LOAD_INSTRUCTIONS").unwrap_or(d.load_instructions),
            call_instructions: read("MOONBOT_LUA_CALL_INSTRUCTIONS").unwrap_or(d.call_instructions),
            sandbox: false,
        }
    }
}

/// The hook runs every this many instructions.
const HOOK_EVERY: u32 = 10_000;

/// Most values the returned table (or a build-time function's result) may
/// hold, so copying it out cannot take unbounded memory outside Lua's limit.
const MAX_VALUES: usize = 1_000_000;

/// The instructions left to the running load or call, and whether its caller
/// stopped waiting; read by the instruction hook.
#[derive(Default)]
struct Budget {
    left: AtomicU64,
    limit: AtomicU64,
    /// The most memory the state may use while a task runs (0: only the
    /// state's own limit).
    memory_cap: AtomicUsize,
    cancel: Mutex<Option<Arc<AtomicBool>>>,
}

impl Budget {
    fn start(&self, instructions: u64, cancel: Option<Arc<AtomicBool>>) {
        self.left.store(instructions, Ordering::Relaxed);
        self.limit.store(instructions, Ordering::Relaxed);
        self.memory_cap.store(0, Ordering::Relaxed);
        *self.cancel.lock().unwrap_or_else(|e| e.into_inner()) = cancel;
    }

    /// Resume a task with `left` of its `limits`' instructions, and its
    /// memory counted from the state's size now.
    fn resume_task(&self, lua: &Lua, left: u64, limits: &TaskLimits) {
        self.start(limits.instructions, None);
        self.left.store(left, Ordering::Relaxed);
        let cap = lua.used_memory().saturating_add(limits.memory_bytes);
        self.memory_cap.store(cap, Ordering::Relaxed);
    }

    fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }

    /// Install the hook that spends this budget on `lua`.
    fn watch(self: &Arc<Self>, lua: &Lua) -> mlua::Result<()> {
        let budget = self.clone();
        // Calls too, not only instruction counts: a loop that catches the
        // interruption with `pcall` would otherwise be interrupted inside the
        // protected call every time; once the budget is spent, the next call
        // of any function (`pcall` itself) fails outside the protection.
        lua.set_global_hook(
            HookTriggers::new()
                .every_nth_instruction(HOOK_EVERY)
                .on_calls(),
            move |lua, debug| {
                let place = || {
                    let source = debug.source();
                    format!(
                        "{}:{}",
                        source.short_src.as_deref().unwrap_or("?"),
                        debug.current_line().unwrap_or(0)
                    )
                };
                let cancelled = budget
                    .cancel
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .is_some_and(|c| c.load(Ordering::Relaxed));
                if cancelled {
                    return Err(mlua::Error::runtime(format!(
                        "{}: stopped: the build no longer waits for this function",
                        place()
                    )));
                }
                let cap = budget.memory_cap.load(Ordering::Relaxed);
                if cap > 0 && lua.used_memory() > cap {
                    // Counted once: the error's own handling allocates.
                    budget.memory_cap.store(0, Ordering::Relaxed);
                    return Err(mlua::Error::runtime(format!(
                        "{}: ran over its memory budget",
                        place()
                    )));
                }
                let left = budget.left.load(Ordering::Relaxed);
                let counting = matches!(debug.event(), mlua::debug::DebugEvent::Count);
                if left <= u64::from(HOOK_EVERY) {
                    return Err(mlua::Error::runtime(format!(
                        "{}: ran over its budget of {} Lua instructions (an endless loop?)",
                        place(),
                        budget.limit.load(Ordering::Relaxed)
                    )));
                }
                if counting {
                    budget
                        .left
                        .store(left - u64::from(HOOK_EVERY), Ordering::Relaxed);
                }
                Ok(VmState::Continue)
            },
        )
    }
}

/// The `moonbot` Lua module, embedded so the binary needs no files beside it.
pub const STDLIB_SOURCE: &str = include_str!("../../../lua-stdlib/moonbot.lua");

/// The name master.lua's chunk gets, so Lua errors read `master.lua:LINE: …`.
pub const CONFIG_FILE: &str = "master.lua";

const MAX_DEPTH: usize = 64;

/// What the generation's thread is asked to do.
pub(super) enum Job {
    Call(CallJob),
    StartTask(Start),
    Resume {
        task: u64,
        answer: serde_json::Value,
        reply: oneshot::Sender<Resumed>,
    },
    ForgetTask(u64),
    ReleaseScope(u64),
}

pub(super) struct CallJob {
    function: usize,
    /// The arguments, in order.
    args: Vec<serde_json::Value>,
    /// Set when the caller stops waiting (the build was stopped): the call
    /// is interrupted at its next hook.
    cancel: Arc<AtomicBool>,
    /// Whether the function may add steps to the build (`mb.build:add_steps_*`).
    in_build: bool,
    reply: oneshot::Sender<Result<(RawValue, Vec<AddedSteps>), String>>,
}

/// Steps a build-time function added to its build: after the current step
/// (`true`) or after the last, and the list of step tables.
pub type AddedSteps = (bool, RawValue);

/// Where `mb.build:add_steps_*` called outside a Lua step puts what it
/// adds: a list while a build-time call that allows it runs, else `None`.
#[derive(Default)]
struct Additions(Option<Vec<(bool, Value)>>);

/// Sets a call's cancel flag if the waiting future is dropped before the
/// answer came (`None` once it came).
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = &self.0 {
            cancel.store(true, Ordering::Relaxed);
        }
    }
}

/// Why calling a build-time Lua function gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The generation's thread ended (it cannot while a build holds it).
    #[error("the config generation's Lua state is gone")]
    StateGone,
    #[error("the Lua state stopped during the call")]
    Stopped,
    /// The function raised an error, or returned what cannot be copied out.
    #[error("{message} (function defined at {defined_at})")]
    Failed { message: String, defined_at: String },
}

/// A loaded master.lua: the Lua state that evaluated it, alive on its own thread.
#[derive(Debug)]
pub struct LuaGeneration {
    jobs: mpsc::Sender<Job>,
    /// The last [`LuaScope`] id given out.
    scopes: AtomicU64,
    /// master.lua and every file it `require`d from the master directory, so
    /// the watcher knows which edits call for a reload.
    pub files: Vec<PathBuf>,
}

impl LuaGeneration {
    /// Evaluate `master_dir/master.lua` and return what it returned.
    pub fn load(master_dir: &Path) -> Result<(LuaGeneration, RawValue), Vec<ConfigError>> {
        LuaGeneration::load_with(master_dir, LuaLimits::from_env())
    }

    /// [`LuaGeneration::load`] under the given limits.
    pub fn load_with(
        master_dir: &Path,
        limits: LuaLimits,
    ) -> Result<(LuaGeneration, RawValue), Vec<ConfigError>> {
        LuaGeneration::evaluate_file(master_dir, CONFIG_FILE, limits)
    }

    /// Evaluate a pipeline file (`file`, inside `dir`: a build's copy of
    /// the directory the file is in) in a sandbox of its own, under
    /// `limits`: a state with no `os`, `io` or `debug`, reading Lua files
    /// only from `dir`. Its functions keep this state alive and are
    /// called in it (their [`LuaFn::home`]).
    pub fn load_pipeline(
        dir: &Path,
        file: &str,
        limits: LuaLimits,
    ) -> Result<RawValue, Vec<ConfigError>> {
        let limits = LuaLimits {
            sandbox: true,
            ..limits
        };
        let (generation, mut raw) =
            LuaGeneration::evaluate_file(dir, file, limits).map_err(|errors| {
                errors
                    .into_iter()
                    .map(|mut e| {
                        if e.location == CONFIG_FILE {
                            e.location = file.to_string();
                        }
                        e
                    })
                    .collect::<Vec<_>>()
            })?;
        raw.adopt(&FnHome(generation.jobs.clone()));
        Ok(raw)
    }

    fn evaluate_file(
        dir: &Path,
        file: &str,
        limits: LuaLimits,
    ) -> Result<(LuaGeneration, RawValue), Vec<ConfigError>> {
        let dir = dir.to_path_buf();
        let file = file.to_string();
        let (result_tx, result_rx) = mpsc::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("lua-config".into())
            .spawn(move || {
                let budget = Arc::new(Budget::default());
                let (lua, functions, raw) = match evaluate(&dir, &file, &limits, &budget) {
                    Ok(loaded) => loaded,
                    Err(errors) => {
                        let _ = result_tx.send(Err(errors));
                        return;
                    }
                };
                let files = source_files(&lua, &dir);
                let _ = result_tx.send(Ok((raw, files)));
                let mut state = Served {
                    lua,
                    budget,
                    functions,
                    transient: HashMap::new(),
                    next_transient: TRANSIENT_BASE,
                    tasks: HashMap::new(),
                    next_task: 0,
                };
                // Serve calls and tasks until every handle to this generation is gone.
                while let Ok(job) = jobs_rx.recv() {
                    state.serve(job, &limits);
                }
            })
            .map_err(|e| vec![ConfigError::whole_file(format!("cannot start Lua: {e}"))])?;
        let (raw, files) = result_rx.recv().map_err(|_| {
            vec![ConfigError::whole_file(
                "the Lua interpreter stopped while loading".to_string(),
            )]
        })??;
        Ok((
            LuaGeneration {
                jobs: jobs_tx,
                scopes: AtomicU64::new(0),
                files,
            },
            raw,
        ))
    }

    /// The thread that runs `function`: its home, or this generation's.
    fn jobs_of<'a>(&'a self, function: &'a LuaFn) -> &'a mpsc::Sender<Job> {
        function.home.as_ref().map_or(&self.jobs, |home| &home.0)
    }

    /// A new scope for the functions a build's tasks hand over.
    pub fn scope(&self) -> LuaScope {
        LuaScope {
            id: self.scopes.fetch_add(1, Ordering::Relaxed) + 1,
            jobs: self.jobs.clone(),
        }
    }

    /// Start `function` as a task (a Lua step's `run`): the `moonbot`
    /// module's step runner calls it with a step object made from `info`
    /// (`name`, `properties`), in a coroutine that runs until it first asks
    /// for something or ends.
    pub async fn start_task(
        &self,
        scope: &LuaScope,
        function: &LuaFn,
        info: serde_json::Value,
        limits: TaskLimits,
    ) -> Result<(LuaTask, Resumed), CallError> {
        let (reply, rx) = oneshot::channel();
        let jobs = self.jobs_of(function).clone();
        jobs.send(Job::StartTask(Start {
            function: function.clone(),
            args: vec![info],
            scope: scope.id,
            limits,
            reply,
        }))
        .map_err(|_| CallError::StateGone)?;
        let (id, first) = rx
            .await
            .map_err(|_| CallError::Stopped)?
            .map_err(|message| CallError::Failed {
                message,
                defined_at: function.defined_at.clone(),
            })?;
        let task = LuaTask { id, jobs };
        let first = task.adopted(first);
        Ok((task, first))
    }

    /// Call a function of this generation with one argument (a build's
    /// properties, a change …).
    pub async fn call(
        &self,
        function: &LuaFn,
        props: serde_json::Value,
    ) -> Result<RawValue, CallError> {
        self.call_with(function, vec![props]).await
    }

    /// Call a function of this generation with several arguments.
    pub async fn call_with(
        &self,
        function: &LuaFn,
        args: Vec<serde_json::Value>,
    ) -> Result<RawValue, CallError> {
        self.call_inner(function, args, false).await.map(|(v, _)| v)
    }

    /// [`LuaGeneration::call_with`] for a build's step (a renderable, a
    /// `do_step_if`): also gives the steps it added with `mb.build:add_steps_*`.
    pub async fn call_in_build(
        &self,
        function: &LuaFn,
        args: Vec<serde_json::Value>,
    ) -> Result<(RawValue, Vec<AddedSteps>), CallError> {
        self.call_inner(function, args, true).await
    }

    async fn call_inner(
        &self,
        function: &LuaFn,
        args: Vec<serde_json::Value>,
        in_build: bool,
    ) -> Result<(RawValue, Vec<AddedSteps>), CallError> {
        let (reply, rx) = oneshot::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        self.jobs_of(function)
            .send(Job::Call(CallJob {
                function: function.index,
                args,
                cancel: cancel.clone(),
                in_build,
                reply,
            }))
            .map_err(|_| CallError::StateGone)?;
        let mut guard = CancelOnDrop(Some(cancel));
        let answer = rx.await;
        // Answered: nothing left to interrupt.
        guard.0 = None;
        answer
            .map_err(|_| CallError::Stopped)?
            .map_err(|message| CallError::Failed {
                message,
                defined_at: function.defined_at.clone(),
            })
    }
}

fn evaluate(
    dir: &Path,
    file_name: &str,
    limits: &LuaLimits,
    budget: &Arc<Budget>,
) -> Result<(Lua, Vec<Function>, RawValue), Vec<ConfigError>> {
    let lua = Lua::new();
    let limited = lua
        .set_memory_limit(limits.memory_bytes)
        .and_then(|_| budget.watch(&lua));
    if let Err(e) = limited {
        return Err(vec![ConfigError::whole_file(format!(
            "cannot limit the Lua state: {e}"
        ))]);
    }
    budget.start(limits.load_instructions, None);
    let file = dir.join(file_name);
    let source = std::fs::read(&file).map_err(|e| {
        vec![ConfigError::whole_file(format!(
            "cannot read {}: {e}",
            file.display()
        ))]
    })?;
    setup(&lua, dir).map_err(|e| vec![ConfigError::whole_file(lua_message(&e))])?;
    if limits.sandbox {
        sandbox(&lua, dir).map_err(|e| vec![ConfigError::whole_file(lua_message(&e))])?;
    }
    let value: Value = lua
        .load(&source[..])
        .set_name(format!("@{file_name}"))
        .set_mode(mlua::chunk::ChunkMode::Text)
        .eval()
        .map_err(|e| vec![ConfigError::from_lua_message(&lua_message(&e))])?;
    let mut collector = FunctionCollector {
        dir,
        config_file: file_name,
        config_source: &source,
        sources: Default::default(),
        functions: Vec::new(),
    };
    let raw = to_raw(&value, &mut |f| Ok(collector.collect(f))).map_err(|e| {
        vec![ConfigError::whole_file(format!(
            "in the returned table: {e}"
        ))]
    })?;
    let functions = collector.functions;
    Ok((lua, functions, raw))
}

/// master.lua and the modules it loaded from files inside the master directory.
fn source_files(lua: &Lua, dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![dir.join(CONFIG_FILE)];
    let found: mlua::Result<Vec<String>> = lua
        .load(
            r#"
            local files = {}
            for name in pairs(package.loaded) do
              local path = type(name) == "string" and package.searchpath(name, package.path)
              if path then files[#files + 1] = path end
            end
            return files
            "#,
        )
        .set_name("=moonbot")
        .eval();
    for path in found.unwrap_or_default() {
        let path = PathBuf::from(path);
        let path = path.canonicalize().unwrap_or(path);
        if path.starts_with(dir) && !files.contains(&path) {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Make `require "moonbot"` work and let master.lua require files beside it.
fn setup(lua: &Lua, dir: &Path) -> mlua::Result<()> {
    // Level 0 is this Rust function itself, as with debug.getinfo.
    let position = lua.create_function(|lua, level: usize| {
        Ok(lua
            .inspect_stack(level, |frame| {
                let file = frame
                    .source()
                    .short_src
                    .map(|s| s.into_owned())
                    .unwrap_or_else(|| "?".into());
                format!("{file}:{}", frame.current_line().unwrap_or(0))
            })
            .unwrap_or_else(|| "?".into()))
    })?;
    lua.globals().set("__moonbot_position", position)?;
    // `mb.build:add_steps_*` outside a Lua step: recorded for the build while
    // a build-time call runs, an error anywhere else.
    // It answers why it refused (the module raises that at the caller).
    let add_steps = lua.create_function(|lua, (after_current, list): (bool, Value)| {
        Ok(match lua.app_data_mut::<Additions>() {
            Some(mut additions) if additions.0.is_some() => {
                additions
                    .0
                    .get_or_insert_with(Vec::new)
                    .push((after_current, list));
                None
            }
            _ => Some("mb.build:add_steps_* works only while a build runs its steps"),
        })
    })?;
    lua.globals().set("__moonbot_add_steps", add_steps)?;
    let module: Table = lua.load(STDLIB_SOURCE).set_name("@moonbot.lua").eval()?;
    // The Lua step runner leaves the module for the registry.
    let runner: Function = module.get("_step_runner")?;
    module.set("_step_runner", Value::Nil)?;
    lua.set_named_registry_value(STEP_RUNNER, runner)?;
    let package: Table = lua.globals().get("package")?;
    let loaded: Table = package.get("loaded")?;
    loaded.set("moonbot", module)?;
    let dir: PathBuf = dir.to_path_buf();
    let lua_dir = dir.to_string_lossy();
    let old_path: String = package.get("path")?;
    package.set(
        "path",
        format!("{lua_dir}/?.lua;{lua_dir}/?/init.lua;{old_path}"),
    )?;
    lua.load(TEXT_CHUNKS_ONLY).set_name("=moonbot").exec()?;
    Ok(())
}

/// Lua source only, never precompiled chunks (`string.dump`'s bytecode): Lua
/// does not verify bytecode, and a crafted chunk can read and write the
/// master's memory. `load`, `loadfile`, `dofile` and `require`'s search of
/// Lua files all load text; `io` and `os` stay, as master.lua is trusted.
const TEXT_CHUNKS_ONLY: &str = r#"
local load, loadfile, searchpath = load, loadfile, package.searchpath
-- `...` is the environment when one is given: a nil passed on would become
-- the chunk's _ENV.
function _G.load(chunk, name, _, ...) return load(chunk, name, "t", ...) end
function _G.loadfile(file, _, ...) return loadfile(file, "t", ...) end
function _G.dofile(file)
  local f = assert(loadfile(file, "t"))
  return f()
end
package.searchers[2] = function(name)
  local path, err = searchpath(name, package.path)
  if not path then return err end
  -- The global loadfile: the text-only one below, or the sandbox's.
  local f, failed = _G.loadfile(path, "t")
  if not f then
    error(("error loading module '%s' from file '%s':\n\t%s"):format(name, path, failed), 2)
  end
  return f, path
end
"#;

/// Close the ways out of the Lua state for `checkconfig --sandbox`: no
/// `os`, `io` or `debug` (whose registry reaches both), no C modules, and
/// `require`, `loadfile` and `dofile` read only files inside the master
/// directory, after resolving `..` and symlinks.
fn sandbox(lua: &Lua, dir: &Path) -> mlua::Result<()> {
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let inside = lua.create_function(move |_, path: String| {
        Ok(Path::new(&path)
            .canonicalize()
            .is_ok_and(|p| p.starts_with(&root)))
    })?;
    lua.globals().set("__moonbot_inside", inside)?;
    lua.load(SANDBOX).set_name("=moonbot-sandbox").exec()
}

const SANDBOX: &str = r#"
-- require's Lua searcher loads through the global loadfile, confined here.
local inside, loadfile = __moonbot_inside, loadfile
__moonbot_inside = nil
os, io, debug = nil, nil, nil
package.loaded.os, package.loaded.io, package.loaded.debug = nil, nil, nil
package.cpath, package.loadlib = "", nil
package.searchers[3], package.searchers[4] = nil, nil
local function confined(file)
  if type(file) ~= "string" or not inside(file) then
    error(("'%s' is outside the sandbox's directory"):format(tostring(file)), 3)
  end
end
function _G.loadfile(file, mode, ...) confined(file); return loadfile(file, mode, ...) end
function _G.dofile(file)
  confined(file)
  local f = assert(loadfile(file, "t"))
  return f()
end
"#;

/// The useful part of an mlua error: the Lua message (`master.lua:3: …`),
/// without mlua's prefix and the traceback.
fn lua_message(e: &mlua::Error) -> String {
    let text = match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => return lua_message(cause),
        mlua::Error::MemoryError(m) => format!("reached the Lua memory limit ({m})"),
        other => other.to_string(),
    };
    text.lines()
        .take_while(|l| !l.starts_with("stack traceback"))
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_string()
}

/// Turns a Lua function met while copying a value into its [`LuaFn`] handle,
/// or refuses it.
type FunctionHandler<'a> = dyn FnMut(&Function) -> Result<LuaFn, String> + 'a;

fn to_raw(value: &Value, on_function: &mut FunctionHandler<'_>) -> Result<RawValue, String> {
    to_raw_counted(value, on_function, 0, &mut 0)
}

fn to_raw_counted(
    value: &Value,
    on_function: &mut FunctionHandler<'_>,
    depth: usize,
    values: &mut usize,
) -> Result<RawValue, String> {
    if depth > MAX_DEPTH {
        return Err("tables nested too deep (a table that contains itself?)".into());
    }
    *values += 1;
    if *values > MAX_VALUES {
        return Err(format!("more than {MAX_VALUES} values in one table"));
    }
    Ok(match value {
        Value::Nil => RawValue::Nil,
        Value::Boolean(b) => RawValue::Bool(*b),
        Value::Integer(i) => RawValue::Int(*i),
        Value::Number(n) => RawValue::Num(*n),
        Value::String(s) => RawValue::Str(s.to_string_lossy()),
        Value::Table(t) => {
            let mut entries = Vec::new();
            for pair in t.clone().pairs::<Value, Value>() {
                let (k, v) = pair.map_err(|e| e.to_string())?;
                let key = match k {
                    Value::Integer(i) => RawKey::Int(i),
                    Value::String(s) => RawKey::Str(s.to_string_lossy()),
                    other => {
                        return Err(format!(
                            "table keys must be strings or integers, not {}",
                            other.type_name()
                        ));
                    }
                };
                entries.push((key, to_raw_counted(&v, on_function, depth + 1, values)?));
            }
            // Lua's iteration order is arbitrary: sort so that configs compare
            // equal and errors come out in a stable order.
            entries.sort_by(|(a, _), (b, _)| match (a, b) {
                (RawKey::Int(x), RawKey::Int(y)) => x.cmp(y),
                (RawKey::Int(_), RawKey::Str(_)) => std::cmp::Ordering::Less,
                (RawKey::Str(_), RawKey::Int(_)) => std::cmp::Ordering::Greater,
                (RawKey::Str(x), RawKey::Str(y)) => x.cmp(y),
            });
            RawValue::Table(entries)
        }
        Value::Function(f) => RawValue::Function(on_function(f)?),
        other => RawValue::Other(other.type_name()),
    })
}

/// Gives the functions of a loading config their handles and identities.
///
/// A function's identity for reconfig diffs is the source text of its
/// definition. Source text, not bytecode: Lua's bytecode carries the line a
/// function starts on, so a comment added above it would look like a change.
struct FunctionCollector<'a> {
    dir: &'a Path,
    /// The file evaluated (`master.lua`), and its text.
    config_file: &'a str,
    config_source: &'a [u8],
    /// Lines of each source file read so far, by Lua chunk name.
    sources: std::collections::HashMap<String, Option<Vec<String>>>,
    functions: Vec<Function>,
}

impl FunctionCollector<'_> {
    fn lines_of(&mut self, chunk: &str) -> Option<&Vec<String>> {
        let (dir, config_file, config_source) = (self.dir, self.config_file, self.config_source);
        self.sources
            .entry(chunk.to_string())
            .or_insert_with(|| {
                let text = match chunk.strip_prefix('@')? {
                    name if name == config_file => {
                        String::from_utf8_lossy(config_source).into_owned()
                    }
                    "moonbot.lua" => STDLIB_SOURCE.to_string(),
                    path => std::fs::read_to_string(dir.join(path)).ok()?,
                };
                Some(text.lines().map(str::to_string).collect())
            })
            .as_ref()
    }

    fn identity(&mut self, f: &Function) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let info = f.info();
        let text = match (&info.source, info.line_defined, info.last_line_defined) {
            (Some(chunk), Some(first), Some(last)) if first >= 1 => self
                .lines_of(chunk)
                .and_then(|lines| lines.get(first - 1..last.min(lines.len())))
                .map(|l| l.join("\n")),
            _ => None,
        };
        match text {
            Some(text) => text.hash(&mut hasher),
            None => f.dump(true).hash(&mut hasher),
        }
        hasher.finish()
    }

    fn collect(&mut self, f: &Function) -> LuaFn {
        let info = f.info();
        let defined_at = format!(
            "{}:{}",
            info.short_src.unwrap_or_else(|| "?".into()),
            info.line_defined.unwrap_or(0)
        );
        let code_hash = self.identity(f);
        self.functions.push(f.clone());
        LuaFn {
            index: self.functions.len() - 1,
            defined_at,
            code_hash,
            home: None,
        }
    }
}

/// Indices of functions a task handed over start here, above any config's.
const TRANSIENT_BASE: usize = 1 << 40;

/// The name under which the step runner is kept in the registry (where
/// master.lua cannot reach or replace it).
const STEP_RUNNER: &str = "moonbot.step_runner";

/// A task between two resumes.
struct TaskState {
    thread: Thread,
    scope: u64,
    limits: TaskLimits,
    /// Instructions it has left.
    left: u64,
}

/// What the generation's thread keeps: the state, its functions, the
/// functions tasks handed over (by scope), and the tasks.
struct Served {
    lua: Lua,
    budget: Arc<Budget>,
    functions: Vec<Function>,
    transient: HashMap<usize, (u64, Function)>,
    /// The index the next function handed over gets.
    next_transient: usize,
    tasks: HashMap<u64, TaskState>,
    next_task: u64,
}

impl Served {
    fn serve(&mut self, job: Job, limits: &LuaLimits) {
        match job {
            Job::Call(job) => {
                self.budget
                    .start(limits.call_instructions, Some(job.cancel.clone()));
                if job.in_build {
                    self.lua.set_app_data(Additions(Some(Vec::new())));
                }
                let result = self.call_function(job.function, &job.args);
                let added = self
                    .lua
                    .remove_app_data::<Additions>()
                    .and_then(|a| a.0)
                    .unwrap_or_default();
                let result = result.and_then(|value| {
                    let mut steps = Vec::with_capacity(added.len());
                    for (after_current, list) in added {
                        let raw = to_raw(&list, &mut |_| {
                            Err(
                                "steps added from a renderable function cannot hold functions \
                                 (add those from a Lua step)"
                                    .into(),
                            )
                        })?;
                        steps.push((after_current, raw));
                    }
                    Ok((value, steps))
                });
                let _ = job.reply.send(result);
            }
            Job::StartTask(start) => {
                let started = self.start_task(&start);
                let _ = start.reply.send(started);
            }
            Job::Resume {
                task,
                answer,
                reply,
            } => {
                let resumed = match json_to_lua(&self.lua, &answer) {
                    Ok(answer) => self.resume(task, mlua::MultiValue::from_vec(vec![answer])),
                    Err(e) => Resumed::Failed(lua_message(&e)),
                };
                let _ = reply.send(resumed);
            }
            Job::ForgetTask(task) => {
                self.tasks.remove(&task);
            }
            Job::ReleaseScope(scope) => {
                self.transient.retain(|_, (s, _)| *s != scope);
                self.tasks.retain(|_, t| t.scope != scope);
            }
        }
    }

    fn function(&self, index: usize) -> Option<&Function> {
        match index.checked_sub(TRANSIENT_BASE) {
            None => self.functions.get(index),
            Some(_) => self.transient.get(&index).map(|(_, f)| f),
        }
    }

    fn call_function(&self, index: usize, args: &[serde_json::Value]) -> Result<RawValue, String> {
        let lua = &self.lua;
        let function = self
            .function(index)
            .ok_or_else(|| format!("no function #{index} in this config generation"))?;
        let args = args
            .iter()
            .map(|a| json_to_lua(lua, a))
            .collect::<mlua::Result<mlua::MultiValue>>()
            .map_err(|e| lua_message(&e))?;
        let result: Value = function.call(args).map_err(|e| lua_message(&e))?;
        // Functions returned at build time are not callable later: they are not kept.
        to_raw(&result, &mut |_| {
            Err("a build-time function must return data, not a function".into())
        })
    }

    fn start_task(&mut self, start: &Start) -> Result<(u64, Resumed), String> {
        // Making the coroutine runs Lua too: not on the last task's budget.
        self.budget.start(start.limits.instructions, None);
        let lua = &self.lua;
        let function = self
            .function(start.function.index)
            .ok_or_else(|| {
                format!(
                    "no function #{} in this config generation",
                    start.function.index
                )
            })?
            .clone();
        let runner: Function = lua
            .named_registry_value(STEP_RUNNER)
            .map_err(|e| lua_message(&e))?;
        let thread = lua.create_thread(runner).map_err(|e| lua_message(&e))?;
        let mut args = vec![Value::Function(function)];
        for arg in &start.args {
            args.push(json_to_lua(lua, arg).map_err(|e| lua_message(&e))?);
        }
        self.next_task += 1;
        let id = self.next_task;
        self.tasks.insert(
            id,
            TaskState {
                thread,
                scope: start.scope,
                limits: start.limits,
                left: start.limits.instructions,
            },
        );
        // The first resume passes the function and its arguments.
        Ok((id, self.resume(id, mlua::MultiValue::from_vec(args))))
    }

    /// Resume task `id` with `answer` (on its first resume: with the
    /// arguments it was started with).
    fn resume(&mut self, id: u64, answer: mlua::MultiValue) -> Resumed {
        let Some(task) = self.tasks.get_mut(&id) else {
            return Resumed::Failed("the Lua step's coroutine is gone".into());
        };
        self.budget.resume_task(&self.lua, task.left, &task.limits);
        let result = task.thread.resume::<Value>(answer);
        task.left = self.budget.left();
        let (thread, scope) = (task.thread.clone(), task.scope);
        match result {
            Ok(value) if thread.is_resumable() => {
                let mut handed = Vec::new();
                let first = self.next_transient;
                let raw = to_raw(&value, &mut |f| {
                    handed.push(f.clone());
                    let info = f.info();
                    Ok(LuaFn {
                        index: first + handed.len() - 1,
                        defined_at: format!(
                            "{}:{}",
                            info.short_src.unwrap_or_else(|| "?".into()),
                            info.line_defined.unwrap_or(0)
                        ),
                        code_hash: 0,
                        home: None,
                    })
                });
                match raw {
                    Ok(raw) => {
                        self.next_transient += handed.len();
                        for (i, f) in handed.into_iter().enumerate() {
                            self.transient.insert(first + i, (scope, f));
                        }
                        Resumed::Asked(raw)
                    }
                    Err(e) => {
                        self.tasks.remove(&id);
                        Resumed::Failed(format!("the step asked with what cannot be read: {e}"))
                    }
                }
            }
            Ok(value) => {
                self.tasks.remove(&id);
                match to_raw(&value, &mut |_| {
                    Err("a Lua step must return a result, not a function".into())
                }) {
                    Ok(raw) => Resumed::Returned(raw),
                    Err(e) => Resumed::Failed(e),
                }
            }
            Err(e) => {
                self.tasks.remove(&id);
                Resumed::Failed(self.traceback(&e))
            }
        }
    }

    /// The error's message and where the coroutine was when it failed
    /// (mlua adds the coroutine's traceback to a runtime error).
    fn traceback(&self, e: &mlua::Error) -> String {
        match e {
            mlua::Error::RuntimeError(text) => text.clone(),
            mlua::Error::CallbackError { cause, traceback } => {
                format!("{}\n{traceback}", self.traceback(cause))
            }
            other => lua_message(other),
        }
    }
}

fn json_to_lua(lua: &Lua, value: &serde_json::Value) -> mlua::Result<Value> {
    Ok(match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(items) => {
            let t = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                t.set(i + 1, json_to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
        serde_json::Value::Object(map) => {
            let t = lua.create_table()?;
            for (k, v) in map {
                t.set(k.as_str(), json_to_lua(lua, v)?)?;
            }
            Value::Table(t)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SMALL: LuaLimits = LuaLimits {
        memory_bytes: 32 << 20,
        load_instructions: 20_000_000,
        call_instructions: 20_000_000,
        sandbox: false,
    };

    #[test]
    fn the_sandbox_has_no_os_or_io_and_reads_only_the_master_directory() {
        let sandboxed = LuaLimits {
            sandbox: true,
            ..SMALL
        };
        let refused = |lua: &str, expected: &str| {
            let dir = master_dir(lua);
            std::fs::write(dir.path().join("helper.lua"), "return { n = 7 }").unwrap();
            let errors = LuaGeneration::load_with(dir.path(), sandboxed).unwrap_err();
            let text = format!("{errors:?}");
            assert!(text.contains(expected), "{lua}: {text}");
            // The same file loads (or fails differently) without the sandbox.
            LuaGeneration::load_with(dir.path(), SMALL)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        };
        assert!(refused("os.execute('true') return {}", "global 'os'").is_ok());
        assert!(refused("io.open('/etc/hostname') return {}", "global 'io'").is_ok());
        assert!(
            refused(
                "return dofile('/etc/hostname')",
                "outside the sandbox's directory"
            )
            .is_err()
        );
        assert!(
            refused(
                "return loadfile('/etc/hostname')",
                "outside the sandbox's directory"
            )
            .is_ok()
        );
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("evil.lua"), "return {}").unwrap();
        // Modules and files beside master.lua still load, with the globals.
        let dir = master_dir("");
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            format!(
                "local h = require 'helper' local f = loadfile('{}/more.lua') \
                 return {{ title = 'x' .. h.n .. f() }}",
                dir.path().display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("helper.lua"), "return { n = tostring(7) }").unwrap();
        std::fs::write(dir.path().join("more.lua"), "return string.rep('y', 2)").unwrap();
        for limits in [sandboxed, SMALL] {
            let (_, raw) = LuaGeneration::load_with(dir.path(), limits).unwrap();
            assert!(format!("{raw:?}").contains("x7yy"), "{raw:?}");
        }
        // A symlink out of the directory is outside too.
        let dir = master_dir("return require 'linked'");
        std::os::unix::fs::symlink(
            outside.path().join("evil.lua"),
            dir.path().join("linked.lua"),
        )
        .unwrap();
        let errors = LuaGeneration::load_with(dir.path(), sandboxed).unwrap_err();
        assert!(format!("{errors:?}").contains("outside the sandbox's directory"));
        assert!(LuaGeneration::load_with(dir.path(), SMALL).is_ok());
    }

    fn master_dir(lua: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), lua).unwrap();
        dir
    }

    fn load_error(lua: &str) -> String {
        let dir = master_dir(lua);
        let errors = LuaGeneration::load_with(dir.path(), SMALL).unwrap_err();
        errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_master_lua_that_loops_or_allocates_is_refused() {
        let looping = load_error("local n = 0\nwhile true do n = n + 1 end\n");
        assert!(
            looping.contains("budget of 20000000 Lua instructions"),
            "{looping}"
        );
        assert!(
            looping.contains("master.lua") && looping.contains('2'),
            "{looping}"
        );
        // A loop that catches the interruption is still ended.
        let stubborn = load_error("while true do pcall(function() while true do end end) end\n");
        assert!(stubborn.contains("budget"), "{stubborn}");
        let hungry =
            load_error("local t = {}\nfor i = 1, 1e9 do t[i] = string.rep('x', 64) .. i end\n");
        assert!(hungry.contains("memory limit"), "{hungry}");
        // Within the limits, a config loads.
        let dir = master_dir("local t = {}\nfor i = 1, 1000 do t[i] = i end\nreturn { n = #t }\n");
        assert!(LuaGeneration::load_with(dir.path(), SMALL).is_ok());
    }

    #[test]
    fn only_lua_source_loads_never_bytecode() {
        let dumped = Lua::new()
            .load("return 1")
            .into_function()
            .unwrap()
            .dump(false);
        // master.lua itself.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), &dumped).unwrap();
        let errors = LuaGeneration::load_with(dir.path(), SMALL).unwrap_err();
        assert!(errors[0].to_string().contains("binary chunk"), "{errors:?}");
        // load, loadfile, dofile and require from master.lua.
        let compiled = dir.path().join("compiled.lua");
        std::fs::write(&compiled, &dumped).unwrap();
        let compiled = compiled.display();
        for how in [
            "assert(load(string.dump(function() return 1 end)))".to_string(),
            format!("assert(loadfile('{compiled}'))"),
            format!("dofile('{compiled}')"),
            "require 'compiled'".to_string(),
        ] {
            std::fs::write(
                dir.path().join(CONFIG_FILE),
                format!("{how}\nreturn {{}}\n"),
            )
            .unwrap();
            let errors = LuaGeneration::load_with(dir.path(), SMALL).unwrap_err();
            assert!(
                errors[0].to_string().contains("binary chunk"),
                "{how}: {errors:?}"
            );
        }
        // Source still loads every way.
        std::fs::write(dir.path().join("plain.lua"), "return 2\n").unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            format!(
                "return {{ a = load('return 1')(), b = dofile('{}'), c = require 'plain' }}\n",
                dir.path().join("plain.lua").display()
            ),
        )
        .unwrap();
        let (_, raw) = LuaGeneration::load_with(dir.path(), SMALL).unwrap();
        assert_eq!(
            raw,
            RawValue::Table(vec![
                (RawKey::Str("a".into()), RawValue::Int(1)),
                (RawKey::Str("b".into()), RawValue::Int(2)),
                (RawKey::Str("c".into()), RawValue::Int(2)),
            ])
        );
    }

    fn functions(raw: &RawValue) -> std::collections::HashMap<String, LuaFn> {
        let RawValue::Table(entries) = raw else {
            panic!("{raw:?}")
        };
        entries
            .iter()
            .filter_map(|(k, v)| match (k, v) {
                (RawKey::Str(name), RawValue::Function(f)) => Some((name.clone(), f.clone())),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn functions_add_steps_only_while_a_build_runs_them() {
        let dir = master_dir(
            "local mb = require 'moonbot'\n\
             return { add = function(p) mb.build:add_steps_after_last { mb.steps.shell { command = 'x' } } return 1 end,\n\
             fn_in = function(p) mb.build:add_steps_after_current { mb.steps.shell { command = function() end } } end }\n",
        );
        let (lua, raw) = LuaGeneration::load_with(dir.path(), SMALL).unwrap();
        let f = functions(&raw);
        let (value, added) = lua
            .call_in_build(&f["add"], vec![serde_json::json!({})])
            .await
            .unwrap();
        assert_eq!(value, RawValue::Int(1));
        assert_eq!(added.len(), 1);
        assert!(!added[0].0, "after the last");
        assert!(format!("{:?}", added[0].1).contains("step.shell"));
        // Outside a build's steps (a scheduler's function …): an error.
        let refused = lua
            .call_with(&f["add"], vec![serde_json::json!({})])
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains(
                "master.lua:2: mb.build:add_steps_* works only while a build runs its steps"
            ),
            "{refused}"
        );
        // Functions cannot leave a plain call inside added steps.
        let refused = lua
            .call_in_build(&f["fn_in"], vec![serde_json::json!({})])
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("cannot hold functions"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn a_build_time_function_that_loops_fails_or_is_stopped() {
        let dir = master_dir(
            "return { spin = function() while true do end end, hello = function(p) return 'hi ' .. p.who end }\n",
        );
        let (lua, raw) = LuaGeneration::load_with(dir.path(), SMALL).unwrap();
        let f = functions(&raw);
        let failed = lua
            .call(&f["spin"], serde_json::json!({}))
            .await
            .unwrap_err();
        assert!(failed.to_string().contains("budget"), "{failed}");
        // The state serves the next call.
        let hi = lua
            .call(&f["hello"], serde_json::json!({"who": "ana"}))
            .await;
        assert_eq!(hi.unwrap(), RawValue::Str("hi ana".into()));

        // A caller that stops waiting (a stopped build) interrupts the call:
        // with a budget of minutes, the next call is still answered at once.
        let patient = LuaLimits {
            call_instructions: u64::MAX,
            ..SMALL
        };
        let (lua, raw) = LuaGeneration::load_with(dir.path(), patient).unwrap();
        let f = functions(&raw);
        let spinning = tokio::time::timeout(
            Duration::from_millis(200),
            lua.call(&f["spin"], serde_json::json!({})),
        )
        .await;
        assert!(spinning.is_err(), "the endless call timed out");
        // Bounded only so that a regression fails instead of hanging.
        let hi = tokio::time::timeout(
            Duration::from_secs(60),
            lua.call(&f["hello"], serde_json::json!({"who": "bob"})),
        )
        .await
        .expect("the interrupted call let the next one run");
        assert_eq!(hi.unwrap(), RawValue::Str("hi bob".into()));
    }
}
