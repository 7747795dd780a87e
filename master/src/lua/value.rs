//! Values copied out of the Lua state: tables as [`RawValue`] trees any
//! thread can read, and Lua functions as [`LuaFn`] handles into the
//! generation that defined them.

/// A key of a Lua table.
#[derive(Debug, Clone, PartialEq)]
pub enum RawKey {
    Int(i64),
    Str(String),
}

impl std::fmt::Display for RawKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawKey::Int(i) => write!(f, "[{i}]"),
            RawKey::Str(s) => f.write_str(s),
        }
    }
}

/// A Lua value copied out of the Lua state.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    Nil,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(String),
    Table(Vec<(RawKey, RawValue)>),
    Function(LuaFn),
    /// Userdata, threads and the like: never valid in a configuration.
    Other(&'static str),
}

impl RawValue {
    /// The Lua type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            RawValue::Nil => "nil",
            RawValue::Bool(_) => "boolean",
            RawValue::Int(_) | RawValue::Num(_) => "number",
            RawValue::Str(_) => "string",
            RawValue::Table(_) => "table",
            RawValue::Function(_) => "function",
            RawValue::Other(t) => t,
        }
    }

    /// Look up a string key of a table.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        match self {
            RawValue::Table(entries) => entries.iter().find_map(|(k, v)| match k {
                RawKey::Str(s) if s == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    /// Convert to JSON (for properties); functions and other values are refused.
    pub fn to_json(&self) -> Result<serde_json::Value, String> {
        Ok(match self {
            RawValue::Nil => serde_json::Value::Null,
            RawValue::Bool(b) => (*b).into(),
            RawValue::Int(i) => (*i).into(),
            RawValue::Num(n) => serde_json::Number::from_f64(*n)
                .map(serde_json::Value::Number)
                .ok_or("numbers must be finite")?,
            RawValue::Str(s) => s.clone().into(),
            RawValue::Table(entries) => {
                if entries.iter().all(|(k, _)| matches!(k, RawKey::Int(_))) && !entries.is_empty() {
                    let mut sorted: Vec<_> = entries.iter().collect();
                    sorted.sort_by_key(|(k, _)| match k {
                        RawKey::Int(i) => *i,
                        RawKey::Str(_) => 0,
                    });
                    serde_json::Value::Array(
                        sorted
                            .into_iter()
                            .map(|(_, v)| v.to_json())
                            .collect::<Result<_, _>>()?,
                    )
                } else {
                    let mut map = serde_json::Map::new();
                    for (k, v) in entries {
                        let key = match k {
                            RawKey::Int(i) => i.to_string(),
                            RawKey::Str(s) => s.clone(),
                        };
                        map.insert(key, v.to_json()?);
                    }
                    serde_json::Value::Object(map)
                }
            }
            RawValue::Function(_) => return Err("a function cannot be stored as data".into()),
            RawValue::Other(t) => return Err(format!("a {t} cannot be stored as data")),
        })
    }
}

/// A handle to a Lua function of one config generation.
///
/// Two handles are equal when their definitions' source texts are: the
/// index and position differ between generations even for an untouched
/// function. Other values a function captures from enclosing scopes are not
/// compared; that only affects the reported diff, since new builds always use
/// the newest generation's functions (see `config::diff`).
#[derive(Debug, Clone)]
pub struct LuaFn {
    /// Index into the generation's function table.
    pub index: usize,
    /// Where the function was defined (`master.lua:12`).
    pub defined_at: String,
    /// Hash of the function's definition (see above).
    pub code_hash: u64,
    /// The Lua state the function lives in when it is not the config's
    /// own: a pipeline file's, or one a Lua step handed over. `None`: the
    /// generation it is called through.
    pub home: Option<FnHome>,
}

/// The way to a Lua state's thread; holding it keeps that state alive.
#[derive(Clone)]
pub struct FnHome(pub(super) std::sync::mpsc::Sender<super::engine::Job>);

impl std::fmt::Debug for FnHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnHome")
    }
}

impl RawValue {
    /// Give every function in this value (without one) the home `home`.
    pub(super) fn adopt(&mut self, home: &FnHome) {
        match self {
            RawValue::Function(f) if f.home.is_none() => f.home = Some(home.clone()),
            RawValue::Table(entries) => entries.iter_mut().for_each(|(_, v)| v.adopt(home)),
            _ => {}
        }
    }
}

impl PartialEq for LuaFn {
    fn eq(&self, other: &Self) -> bool {
        self.code_hash == other.code_hash
    }
}
