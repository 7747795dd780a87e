//! master.lua as Lua: the engine that runs it ([`engine`]: one Lua state per
//! config generation, on its own thread), the values copied out of it
//! ([`value`]), Lua steps' coroutines ([`task`]), the field reader every config section and step kind compiles
//! with ([`fields`]), and the errors they report ([`error`]).
//!
//! Only this module touches mlua. It knows nothing of builders, workers or
//! steps: `config/` and `steps/` give the values their meaning, so both can use
//! this module without importing each other.

pub mod engine;
pub mod error;
pub mod fields;
pub mod task;
pub mod value;

pub use engine::{CONFIG_FILE, CallError, LuaGeneration, LuaLimits};
pub use error::{ConfigError, ConfigErrors};
pub use fields::Fields;
pub use task::{LuaScope, LuaTask, Resumed, TaskLimits};
pub use value::{LuaFn, RawKey, RawValue};
