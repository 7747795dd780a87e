//! The types the data API answers with, in Buildbot 4.3's terms: each
//! entity's fields and their types (`master/buildbot/data/*.py`'s
//! `EntityType`s). They make `/application.spec` (each route's `type_spec`)
//! and let the compatibility test check that every answer carries Buildbot's
//! field names. moonbot's own additions (artifacts, janitor passes, config
//! reloads) are here too, so the spec lists every route.

use serde_json::{Value, json};

/// The type of one field.
#[derive(Debug)]
pub(crate) enum FieldType {
    Integer,
    String,
    Boolean,
    /// Seconds since the epoch.
    DateTime,
    /// A name Buildbot restricts to `[a-zA-Z_-][a-zA-Z0-9._-]*`.
    Identifier,
    JsonObject,
    Binary,
    /// `{name: [value, source]}`.
    SourcedProperties,
    /// Another entity, by its type name.
    Entity(&'static str),
    List(&'static FieldType),
    /// The inner type, or null.
    Nullable(&'static FieldType),
}

/// An entity: its type name, its collection's name, and its fields.
#[derive(Debug)]
pub(crate) struct EntityType {
    pub name: &'static str,
    /// `None` for a type found only inside another (a step's URLs).
    pub plural: Option<&'static str>,
    pub fields: &'static [(&'static str, FieldType)],
}

/// The entity type named `name`.
pub(crate) fn entity(name: &str) -> Option<&'static EntityType> {
    ENTITY_TYPES.iter().find(|e| e.name == name)
}

impl FieldType {
    /// Buildbot's name for the type (`types.*.name`).
    fn name(&self) -> &'static str {
        match self {
            FieldType::Integer => "integer",
            FieldType::String => "string",
            FieldType::Boolean => "boolean",
            FieldType::DateTime => "datetime",
            FieldType::Identifier => "identifier",
            FieldType::JsonObject => "jsonobject",
            FieldType::Binary => "binary",
            FieldType::SourcedProperties => "sourcedproperties",
            FieldType::Entity(name) => name,
            FieldType::List(_) => "list",
            FieldType::Nullable(inner) => inner.name(),
        }
    }

    /// Buildbot's `getSpec()` of the type.
    fn spec(&self) -> Value {
        match self {
            FieldType::Entity(name) => {
                entity(name).map_or_else(|| json!({"name": name}), EntityType::spec)
            }
            FieldType::List(of) => json!({"type": "list", "of": of.spec()}),
            FieldType::Nullable(inner) => {
                let mut spec = inner.spec();
                spec["can_be_null"] = true.into();
                spec
            }
            other => json!({"name": other.name()}),
        }
    }
}

impl EntityType {
    /// Buildbot's `getSpec()` of an entity: its fields, each with its type.
    pub(crate) fn spec(&self) -> Value {
        json!({
            "type": self.name,
            "fields": self.fields.iter().map(|(name, ty)| json!({
                "name": name, "type": ty.name(), "type_spec": ty.spec(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Buildbot 4.3's entity types, then moonbot's own.
#[rustfmt::skip]
pub(crate) static ENTITY_TYPES: &[EntityType] = &[
    EntityType { name: "build_data", plural: Some("build_data"), fields: &[("buildid", FieldType::Integer), ("name", FieldType::String), ("length", FieldType::Integer), ("value", FieldType::Nullable(&FieldType::Binary)), ("source", FieldType::String)] },
    EntityType { name: "builder", plural: Some("builders"), fields: &[("builderid", FieldType::Integer), ("name", FieldType::String), ("masterids", FieldType::List(&FieldType::Integer)), ("description", FieldType::Nullable(&FieldType::String)), ("description_format", FieldType::Nullable(&FieldType::String)), ("description_html", FieldType::Nullable(&FieldType::String)), ("projectid", FieldType::Nullable(&FieldType::Integer)), ("tags", FieldType::List(&FieldType::String))] },
    EntityType { name: "buildrequest", plural: Some("buildrequests"), fields: &[("buildrequestid", FieldType::Integer), ("buildsetid", FieldType::Integer), ("builderid", FieldType::Integer), ("priority", FieldType::Integer), ("claimed", FieldType::Boolean), ("claimed_at", FieldType::Nullable(&FieldType::DateTime)), ("claimed_by_masterid", FieldType::Nullable(&FieldType::Integer)), ("complete", FieldType::Boolean), ("results", FieldType::Nullable(&FieldType::Integer)), ("submitted_at", FieldType::DateTime), ("complete_at", FieldType::Nullable(&FieldType::DateTime)), ("waited_for", FieldType::Boolean), ("properties", FieldType::Nullable(&FieldType::SourcedProperties))] },
    EntityType { name: "build", plural: Some("builds"), fields: &[("buildid", FieldType::Integer), ("number", FieldType::Integer), ("builderid", FieldType::Integer), ("buildrequestid", FieldType::Integer), ("workerid", FieldType::Integer), ("masterid", FieldType::Integer), ("started_at", FieldType::DateTime), ("complete", FieldType::Boolean), ("complete_at", FieldType::Nullable(&FieldType::DateTime)), ("locks_duration_s", FieldType::Integer), ("results", FieldType::Nullable(&FieldType::Integer)), ("state_string", FieldType::String), ("properties", FieldType::Nullable(&FieldType::SourcedProperties))] },
    EntityType { name: "buildset", plural: Some("buildsets"), fields: &[("bsid", FieldType::Integer), ("external_idstring", FieldType::Nullable(&FieldType::String)), ("reason", FieldType::String), ("rebuilt_buildid", FieldType::Nullable(&FieldType::Integer)), ("submitted_at", FieldType::Integer), ("complete", FieldType::Boolean), ("complete_at", FieldType::Nullable(&FieldType::Integer)), ("results", FieldType::Nullable(&FieldType::Integer)), ("sourcestamps", FieldType::List(&FieldType::Entity("sourcestamp"))), ("parent_buildid", FieldType::Nullable(&FieldType::Integer)), ("parent_relationship", FieldType::Nullable(&FieldType::String))] },
    EntityType { name: "change", plural: Some("changes"), fields: &[("changeid", FieldType::Integer), ("parent_changeids", FieldType::List(&FieldType::Integer)), ("author", FieldType::String), ("committer", FieldType::String), ("files", FieldType::List(&FieldType::String)), ("comments", FieldType::String), ("revision", FieldType::Nullable(&FieldType::String)), ("when_timestamp", FieldType::Integer), ("branch", FieldType::Nullable(&FieldType::String)), ("category", FieldType::Nullable(&FieldType::String)), ("revlink", FieldType::Nullable(&FieldType::String)), ("properties", FieldType::SourcedProperties), ("repository", FieldType::String), ("project", FieldType::String), ("codebase", FieldType::String), ("sourcestamp", FieldType::Entity("sourcestamp"))] },
    EntityType { name: "changesource", plural: Some("changesources"), fields: &[("changesourceid", FieldType::Integer), ("name", FieldType::String), ("master", FieldType::Nullable(&FieldType::Entity("master")))] },
    EntityType { name: "branch", plural: Some("branches"), fields: &[("branchid", FieldType::Integer), ("codebaseid", FieldType::Integer), ("name", FieldType::String), ("commitid", FieldType::Integer), ("last_timestamp", FieldType::Integer)] },
    EntityType { name: "commit", plural: Some("commits"), fields: &[("commitid", FieldType::Integer), ("codebaseid", FieldType::Integer), ("author", FieldType::String), ("committer", FieldType::Nullable(&FieldType::String)), ("comments", FieldType::String), ("when_timestamp", FieldType::Integer), ("revision", FieldType::String), ("parent_commitid", FieldType::Nullable(&FieldType::Integer))] },
    EntityType { name: "commit_graph", plural: Some("commit_graphs"), fields: &[("common", FieldType::Integer), ("to1", FieldType::List(&FieldType::Integer)), ("to2", FieldType::List(&FieldType::Integer))] },
    EntityType { name: "codebase", plural: Some("codebases"), fields: &[("codebaseid", FieldType::Integer), ("projectid", FieldType::Integer), ("name", FieldType::Identifier), ("slug", FieldType::Identifier)] },
    EntityType { name: "forcescheduler", plural: Some("forceschedulers"), fields: &[("name", FieldType::Identifier), ("button_name", FieldType::String), ("label", FieldType::String), ("builder_names", FieldType::List(&FieldType::Identifier)), ("enabled", FieldType::Boolean), ("all_fields", FieldType::List(&FieldType::JsonObject))] },
    EntityType { name: "logchunk", plural: Some("logchunks"), fields: &[("logid", FieldType::Integer), ("firstline", FieldType::Integer), ("content", FieldType::String)] },
    EntityType { name: "log", plural: Some("logs"), fields: &[("logid", FieldType::Integer), ("name", FieldType::String), ("slug", FieldType::Identifier), ("stepid", FieldType::Integer), ("complete", FieldType::Boolean), ("num_lines", FieldType::Integer), ("type", FieldType::Identifier)] },
    EntityType { name: "master", plural: Some("masters"), fields: &[("masterid", FieldType::Integer), ("name", FieldType::String), ("active", FieldType::Boolean), ("last_active", FieldType::DateTime)] },
    EntityType { name: "patch", plural: Some("patches"), fields: &[("patchid", FieldType::Integer), ("body", FieldType::Binary), ("level", FieldType::Integer), ("subdir", FieldType::String), ("author", FieldType::String), ("comment", FieldType::String)] },
    EntityType { name: "project", plural: Some("projects"), fields: &[("projectid", FieldType::Integer), ("name", FieldType::Identifier), ("slug", FieldType::Identifier), ("active", FieldType::Nullable(&FieldType::Boolean)), ("description", FieldType::Nullable(&FieldType::String)), ("description_format", FieldType::Nullable(&FieldType::String)), ("description_html", FieldType::Nullable(&FieldType::String))] },
    EntityType { name: "_property", plural: Some("_properties"), fields: &[("name", FieldType::String), ("source", FieldType::String), ("value", FieldType::JsonObject)] },
    EntityType { name: "property", plural: Some("properties"), fields: &[] },
    EntityType { name: "rootlink", plural: Some("rootlinks"), fields: &[("name", FieldType::String)] },
    EntityType { name: "spec", plural: Some("specs"), fields: &[("path", FieldType::String), ("type", FieldType::String), ("plural", FieldType::String), ("type_spec", FieldType::JsonObject)] },
    EntityType { name: "scheduler", plural: Some("schedulers"), fields: &[("schedulerid", FieldType::Integer), ("name", FieldType::String), ("enabled", FieldType::Boolean), ("master", FieldType::Nullable(&FieldType::Entity("master")))] },
    EntityType { name: "sourcestamp", plural: Some("sourcestamps"), fields: &[("ssid", FieldType::Integer), ("revision", FieldType::Nullable(&FieldType::String)), ("branch", FieldType::Nullable(&FieldType::String)), ("repository", FieldType::String), ("project", FieldType::String), ("codebase", FieldType::String), ("patch", FieldType::Nullable(&FieldType::Entity("patch"))), ("created_at", FieldType::DateTime)] },
    EntityType { name: "step", plural: Some("steps"), fields: &[("stepid", FieldType::Integer), ("number", FieldType::Integer), ("name", FieldType::Identifier), ("buildid", FieldType::Integer), ("started_at", FieldType::Nullable(&FieldType::DateTime)), ("locks_acquired_at", FieldType::Nullable(&FieldType::DateTime)), ("complete", FieldType::Boolean), ("complete_at", FieldType::Nullable(&FieldType::DateTime)), ("results", FieldType::Nullable(&FieldType::Integer)), ("state_string", FieldType::String), ("urls", FieldType::List(&FieldType::Entity("Url"))), ("hidden", FieldType::Boolean)] },
    EntityType { name: "test_result_set", plural: Some("test_result_sets"), fields: &[("test_result_setid", FieldType::Integer), ("builderid", FieldType::Integer), ("buildid", FieldType::Integer), ("stepid", FieldType::Integer), ("description", FieldType::Nullable(&FieldType::String)), ("category", FieldType::String), ("value_unit", FieldType::String), ("tests_passed", FieldType::Nullable(&FieldType::Integer)), ("tests_failed", FieldType::Nullable(&FieldType::Integer)), ("complete", FieldType::Boolean)] },
    EntityType { name: "test_result", plural: Some("test_results"), fields: &[("test_resultid", FieldType::Integer), ("builderid", FieldType::Integer), ("test_result_setid", FieldType::Integer), ("test_name", FieldType::Nullable(&FieldType::String)), ("test_code_path", FieldType::Nullable(&FieldType::String)), ("line", FieldType::Nullable(&FieldType::Integer)), ("duration_ns", FieldType::Nullable(&FieldType::Integer)), ("value", FieldType::String)] },
    EntityType { name: "worker", plural: Some("workers"), fields: &[("workerid", FieldType::Integer), ("name", FieldType::String), ("connected_to", FieldType::List(&FieldType::Entity("master_id"))), ("configured_on", FieldType::List(&FieldType::Entity("master_builder"))), ("workerinfo", FieldType::JsonObject), ("paused", FieldType::Boolean), ("pause_reason", FieldType::Nullable(&FieldType::String)), ("graceful", FieldType::Boolean)] },
    EntityType { name: "Url", plural: None, fields: &[("name", FieldType::String), ("url", FieldType::String)] },
    EntityType { name: "master_id", plural: None, fields: &[("masterid", FieldType::Integer)] },
    EntityType { name: "master_builder", plural: None, fields: &[("masterid", FieldType::Integer), ("builderid", FieldType::Integer)] },
    EntityType { name: "artifact", plural: Some("artifacts"), fields: &[("artifactid", FieldType::Integer), ("buildid", FieldType::Integer), ("stepid", FieldType::Nullable(&FieldType::Integer)), ("name", FieldType::String), ("type", FieldType::String), ("size", FieldType::Integer), ("created_at", FieldType::DateTime), ("expires_at", FieldType::Nullable(&FieldType::DateTime))] },
    EntityType { name: "artifact_file", plural: Some("files"), fields: &[("name", FieldType::String), ("size", FieldType::Integer), ("url", FieldType::String)] },
    EntityType { name: "janitor_pass", plural: Some("janitor_passes"), fields: &[("passid", FieldType::Integer), ("masterid", FieldType::Integer), ("started_at", FieldType::DateTime), ("complete", FieldType::Boolean)] },
    EntityType { name: "config", plural: Some("config"), fields: &[("title", FieldType::String), ("files", FieldType::List(&FieldType::String)), ("last_reload", FieldType::Nullable(&FieldType::JsonObject))] },
    EntityType { name: "reporter", plural: Some("reporters"), fields: &[("name", FieldType::String), ("kind", FieldType::String), ("generators", FieldType::List(&FieldType::String)), ("queued", FieldType::Integer), ("delivered", FieldType::Integer), ("failed", FieldType::Integer), ("dropped", FieldType::Integer), ("last_success_at", FieldType::Nullable(&FieldType::DateTime)), ("last_error", FieldType::Nullable(&FieldType::JsonObject))] },
    EntityType { name: "reload", plural: Some("reloads"), fields: &[("reloadid", FieldType::Integer), ("masterid", FieldType::Integer), ("success", FieldType::Boolean), ("trigger", FieldType::String), ("started_at", FieldType::DateTime)] },
];
