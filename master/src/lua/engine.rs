//! Running master.lua: one Lua state per config generation, on its own thread.
//!
//! Only `lua/` touches mlua, and only this file runs it. Loading evaluates master.lua with the embedded
//! `moonbot` module and turns the returned table into a [`RawValue`] tree that the
//! compiler can read on any thread. Lua functions found in the tree stay in the
//! generation's state and are called later through [`LuaGeneration::call`]; the
//! thread lives as long as a config or a running build holds the generation, so a
//! build keeps the functions it started with after a reconfig.

use super::error::ConfigError;
use super::value::{LuaFn, RawKey, RawValue};
use mlua::{Function, Lua, Table, Value};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// The `moonbot` Lua module, embedded so the binary needs no files beside it.
pub const STDLIB_SOURCE: &str = include_str!("../../../lua-stdlib/moonbot.lua");

/// The name master.lua's chunk gets, so Lua errors read `master.lua:LINE: …`.
pub const CONFIG_FILE: &str = "master.lua";

const MAX_DEPTH: usize = 64;

struct CallJob {
    function: usize,
    props: serde_json::Value,
    reply: oneshot::Sender<Result<RawValue, String>>,
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
    jobs: mpsc::Sender<CallJob>,
    /// master.lua and every file it `require`d from the master directory, so
    /// the watcher knows which edits call for a reload.
    pub files: Vec<PathBuf>,
}

impl LuaGeneration {
    /// Evaluate `master_dir/master.lua` and return what it returned.
    pub fn load(master_dir: &Path) -> Result<(LuaGeneration, RawValue), Vec<ConfigError>> {
        let dir = master_dir.to_path_buf();
        let (result_tx, result_rx) = mpsc::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel::<CallJob>();
        std::thread::Builder::new()
            .name("lua-config".into())
            .spawn(move || {
                let (lua, functions, raw) = match evaluate(&dir) {
                    Ok(loaded) => loaded,
                    Err(errors) => {
                        let _ = result_tx.send(Err(errors));
                        return;
                    }
                };
                let files = source_files(&lua, &dir);
                let _ = result_tx.send(Ok((raw, files)));
                // Serve calls until every handle to this generation is gone.
                while let Ok(job) = jobs_rx.recv() {
                    let result = call_function(&lua, &functions, job.function, &job.props);
                    let _ = job.reply.send(result);
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
                files,
            },
            raw,
        ))
    }

    /// Call a function of this generation with the build's properties.
    pub async fn call(
        &self,
        function: &LuaFn,
        props: serde_json::Value,
    ) -> Result<RawValue, CallError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(CallJob {
                function: function.index,
                props,
                reply,
            })
            .map_err(|_| CallError::StateGone)?;
        rx.await
            .map_err(|_| CallError::Stopped)?
            .map_err(|message| CallError::Failed {
                message,
                defined_at: function.defined_at.clone(),
            })
    }
}

fn evaluate(dir: &Path) -> Result<(Lua, Vec<Function>, RawValue), Vec<ConfigError>> {
    let lua = Lua::new();
    let file = dir.join(CONFIG_FILE);
    let source = std::fs::read(&file).map_err(|e| {
        vec![ConfigError::whole_file(format!(
            "cannot read {}: {e}",
            file.display()
        ))]
    })?;
    setup(&lua, dir).map_err(|e| vec![ConfigError::whole_file(lua_message(&e))])?;
    let value: Value = lua
        .load(&source[..])
        .set_name(format!("@{CONFIG_FILE}"))
        .eval()
        .map_err(|e| vec![ConfigError::from_lua_message(&lua_message(&e))])?;
    let fingerprints = lua
        .load("return package.loaded.moonbot._fingerprints")
        .eval::<Option<Table>>()
        .ok()
        .flatten();
    let mut collector = FunctionCollector {
        dir,
        config_source: &source,
        fingerprints,
        sources: Default::default(),
        functions: Vec::new(),
    };
    let raw = to_raw(&value, &mut |f| Ok(collector.collect(f)), 0).map_err(|e| {
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
    let module: Table = lua.load(STDLIB_SOURCE).set_name("@moonbot.lua").eval()?;
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
    Ok(())
}

/// The useful part of an mlua error: the Lua message (`master.lua:3: …`),
/// without mlua's prefix and the traceback.
fn lua_message(e: &mlua::Error) -> String {
    let text = match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => return lua_message(cause),
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

fn to_raw(
    value: &Value,
    on_function: &mut FunctionHandler<'_>,
    depth: usize,
) -> Result<RawValue, String> {
    if depth > MAX_DEPTH {
        return Err("tables nested too deep (a table that contains itself?)".into());
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
                entries.push((key, to_raw(&v, on_function, depth + 1)?));
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
/// definition plus the fingerprint the `moonbot` module recorded for closures
/// it made (`interpolate` closures share their code and differ only in their
/// template). Source text, not bytecode: Lua's bytecode carries the line a
/// function starts on, so a comment added above it would look like a change.
struct FunctionCollector<'a> {
    dir: &'a Path,
    config_source: &'a [u8],
    fingerprints: Option<Table>,
    /// Lines of each source file read so far, by Lua chunk name.
    sources: std::collections::HashMap<String, Option<Vec<String>>>,
    functions: Vec<Function>,
}

impl FunctionCollector<'_> {
    fn lines_of(&mut self, chunk: &str) -> Option<&Vec<String>> {
        let (dir, config_source) = (self.dir, self.config_source);
        self.sources
            .entry(chunk.to_string())
            .or_insert_with(|| {
                let text = match chunk.strip_prefix('@')? {
                    CONFIG_FILE => String::from_utf8_lossy(config_source).into_owned(),
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
        let fingerprint: Option<String> = self
            .fingerprints
            .as_ref()
            .and_then(|t| t.raw_get(f.clone()).ok());
        fingerprint.hash(&mut hasher);
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
        }
    }
}

fn call_function(
    lua: &Lua,
    functions: &[Function],
    index: usize,
    props: &serde_json::Value,
) -> Result<RawValue, String> {
    let function = functions
        .get(index)
        .ok_or_else(|| format!("no function #{index} in this config generation"))?;
    let arg = json_to_lua(lua, props).map_err(|e| lua_message(&e))?;
    let result: Value = function.call(arg).map_err(|e| lua_message(&e))?;
    // Functions returned at build time are not callable later: they are not kept.
    to_raw(
        &result,
        &mut |_| Err("a build-time function must return data, not a function".into()),
        0,
    )
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
