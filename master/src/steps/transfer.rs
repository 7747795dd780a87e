//! Moving files between worker and master (Buildbot's transfer steps):
//! `file_upload`, `directory_upload` and `multiple_file_upload` (worker to
//! master: each upload becomes an artifact of the build, linked from the
//! step), and `file_download`, `directory_download` (a moonbot addition),
//! `string_download` and `json_property_download` (master to worker).
//!
//! Worker paths are relative to the step's `workdir` (default `build`) under
//! the builder's directory. An upload's `masterdest` is relative to the
//! build's own artifact directory: the master decides where bytes go, and
//! `crate::artifacts` refuses any destination that would leave it.

use super::{Compiled, RemoteIo, StepContext, StepHost, StepKind};
use crate::artifacts::{ArtifactError, Incoming, Outgoing};
use crate::lua::Fields;
use crate::render::Renderable;
use crate::results::{EXCEPTION, FAILURE, SUCCESS, worst};
use moonbot_worker::protocol::{Compression, RemoteCommand};
use serde_json::{Value, json};

/// Which upload a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    File,
    Directory,
    /// `multiple_file_upload`: each source a file or a directory; with
    /// `glob`, each source a pattern matched on the worker.
    Multiple {
        glob: bool,
    },
}

/// `file_upload`, `directory_upload` and `multiple_file_upload`.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadStep {
    pub kind: UploadKind,
    /// `workersrc`, or `workersrcs` (a list), relative to `workdir`.
    pub sources: Renderable,
    /// Relative to the build's artifacts; a directory for
    /// `multiple_file_upload`. Default: the source's file name.
    pub masterdest: Option<Renderable>,
    pub workdir: Renderable,
    /// Permission bits of an uploaded file on the master.
    pub mode: Option<u32>,
    pub max_size: Option<u64>,
    pub compress: Option<Compression>,
    /// A link added to the step besides the artifacts' own (Buildbot's `url`).
    pub url: Option<Renderable>,
    pub url_text: Option<String>,
}

/// Where a download's bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DownloadSource {
    /// `file_download`'s `mastersrc`: a file on the master (relative to the
    /// master's directory).
    File(Renderable),
    /// `string_download`'s `s`.
    String(Renderable),
    /// `json_property_download`: the build's properties and source stamps.
    Properties,
    /// `directory_download`'s `mastersrc`: a directory on the master, sent
    /// as a tar stream (compressed as asked).
    Directory {
        dir: Renderable,
        compress: Option<Compression>,
    },
}

/// `file_download`, `directory_download`, `string_download` and
/// `json_property_download`.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadStep {
    pub source: DownloadSource,
    /// Relative to `workdir`.
    pub workerdest: Renderable,
    pub workdir: Renderable,
    pub mode: Option<u32>,
}

fn workdir(f: &mut Fields<'_>) -> Renderable {
    crate::render::field(f, "workdir")
        .unwrap_or_else(|| Renderable::Literal(Value::String("build".into())))
}

fn required(f: &mut Fields<'_>, key: &'static str) -> Option<Renderable> {
    let value = crate::render::field(f, key);
    if f.get(key).is_none() {
        let msg = format!("{}: '{key}' is required", f.what);
        f.error(msg);
    }
    value
}

/// `mode`: permission bits, as a number (write `tonumber("755", 8)` or `493`).
fn mode(f: &mut Fields<'_>) -> Option<u32> {
    f.integer("mode", 0, 0o7777).map(|m| m as u32)
}

/// `compress`: `"gz"` or `"bz2"` (Buildbot's), none by default.
fn compression(f: &mut Fields<'_>) -> Option<Compression> {
    let name = f.string("compress")?;
    let parsed = Compression::parse(&name);
    if parsed.is_none() {
        let msg = format!(
            "{}: 'compress' must be \"gz\" or \"bz2\", not {name:?}",
            f.what
        );
        f.error(msg);
    }
    parsed
}

fn max_size(f: &mut Fields<'_>) -> Option<u64> {
    f.integer("max_size", 1, i64::MAX).map(|n| n as u64)
}

/// Compile an upload step of `kind`.
pub fn compile_upload(f: &mut Fields<'_>, kind: UploadKind) -> Compiled {
    let sources = match kind {
        UploadKind::Multiple { .. } => required(f, "workersrcs"),
        _ => required(f, "workersrc"),
    };
    let kind = match kind {
        UploadKind::Multiple { .. } => UploadKind::Multiple {
            glob: f.boolean("glob", false),
        },
        other => other,
    };
    let compress = match kind {
        UploadKind::File if f.get("compress").is_some() => {
            let msg = format!("{}: 'compress' is for directory uploads", f.what);
            f.error(msg);
            None
        }
        _ => compression(f),
    };
    let Some(sources) = sources else {
        return Compiled {
            kind: None,
            default_name: "upload".into(),
        };
    };
    let step = UploadStep {
        kind,
        sources,
        masterdest: crate::render::field(f, "masterdest"),
        workdir: workdir(f),
        mode: mode(f),
        max_size: max_size(f),
        compress,
        url: crate::render::field(f, "url"),
        url_text: f.string("url_text"),
    };
    let default_name = match kind {
        UploadKind::File => "upload",
        UploadKind::Directory => "upload directory",
        UploadKind::Multiple { .. } => "upload files",
    };
    Compiled {
        kind: Some(StepKind::Upload(Box::new(step))),
        default_name: default_name.into(),
    }
}

/// Compile `file_download` (`mastersrc`), `directory_download`
/// (`mastersrc`, `compress`), `string_download` (`s`) or
/// `json_property_download` (neither).
pub fn compile_download(f: &mut Fields<'_>, tag: &str) -> Compiled {
    let source = match tag {
        "file_download" => required(f, "mastersrc").map(DownloadSource::File),
        "string_download" => required(f, "s").map(DownloadSource::String),
        "directory_download" => {
            let compress = compression(f);
            required(f, "mastersrc").map(|dir| DownloadSource::Directory { dir, compress })
        }
        _ => Some(DownloadSource::Properties),
    };
    let workerdest = required(f, "workerdest");
    let step = match (source, workerdest) {
        (Some(source), Some(workerdest)) => Some(DownloadStep {
            source,
            workerdest,
            workdir: workdir(f),
            mode: mode(f),
        }),
        _ => None,
    };
    Compiled {
        kind: step.map(|s| StepKind::Download(Box::new(s))),
        default_name: "download".into(),
    }
}

/// `dir/name` on the worker: `name` under the step's workdir (an absolute
/// `name` stays as it is).
fn worker_path<H: StepHost>(ctx: &StepContext<'_, H>, workdir: &str, name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        ctx.path(&format!("{workdir}/{name}"))
    }
}

/// The last component of a worker path (the default destination).
fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

pub async fn run_upload<H: StepHost>(
    step: &UploadStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    let rendered = async {
        let workdir = ctx.render.render_string(&step.workdir).await?;
        let sources: Vec<String> = match ctx.render.render(&step.sources).await? {
            Value::Array(items) => items
                .iter()
                .map(crate::render::interpolate::value_text)
                .collect(),
            one => vec![crate::render::interpolate::value_text(&one)],
        };
        let dest = match &step.masterdest {
            Some(d) => Some(ctx.render.render_string(d).await?),
            None => None,
        };
        let url = match &step.url {
            Some(u) => Some(ctx.render.render_string(u).await?),
            None => None,
        };
        Ok::<_, crate::render::RenderError>((workdir, sources, dest, url))
    }
    .await;
    let (workdir, sources, dest, url) = match rendered {
        Ok(parts) => parts,
        Err(e) => {
            return ctx
                .cannot_start(&format!("could not render the upload: {e}"))
                .await;
        }
    };
    ctx.host
        .begin(&format!("uploading {}", sources.join(", ")))
        .await?;
    // (worker path, destination, is a directory)
    let mut plan = Vec::new();
    match step.kind {
        UploadKind::File | UploadKind::Directory => {
            let [src] = &sources[..] else {
                let why = format!(
                    "'workersrc' names one file or directory, not {} (use multiple_file_upload)",
                    sources.len()
                );
                ctx.host.header(&why).await?;
                return Ok(FAILURE);
            };
            let name = dest.clone().unwrap_or_else(|| base_name(src).to_string());
            plan.push((
                worker_path(ctx, &workdir, src),
                name,
                step.kind == UploadKind::Directory,
            ));
        }
        UploadKind::Multiple { glob } => {
            let mut found = Vec::new();
            for src in &sources {
                if glob {
                    let pattern = worker_path(ctx, &workdir, src);
                    let (result, outcome) = ctx
                        .run_command_with(RemoteCommand::Glob { pattern }, RemoteIo::Log)
                        .await?;
                    if result != SUCCESS {
                        return Ok(result);
                    }
                    found.extend(outcome.and_then(|o| o.files).unwrap_or_default());
                } else {
                    found.push(worker_path(ctx, &workdir, src));
                }
            }
            for path in found {
                let stat = ctx
                    .run_command_with(RemoteCommand::Stat { path: path.clone() }, RemoteIo::Log)
                    .await?;
                let Some(stat) = stat.1.and_then(|o| o.stat) else {
                    return Ok(if stat.0 == SUCCESS { EXCEPTION } else { stat.0 });
                };
                if !stat.exists {
                    ctx.host.header(&format!("{path} does not exist")).await?;
                    return Ok(FAILURE);
                }
                let name = base_name(&path).to_string();
                let name = match &dest {
                    Some(dir) => format!("{}/{name}", dir.trim_end_matches('/')),
                    None => name,
                };
                plan.push((path, name, stat.is_dir));
            }
            if plan.is_empty() {
                ctx.host.header("no file to upload").await?;
            }
        }
    }
    let mut result = SUCCESS;
    for (path, name, is_dir) in plan {
        let one = upload_one(step, ctx, path, &name, is_dir).await?;
        result = worst(result, one);
        if one != SUCCESS {
            break;
        }
    }
    if let Some(url) = url
        && result == SUCCESS
    {
        let text = step.url_text.clone().unwrap_or_else(|| url.clone());
        ctx.host.add_url(&text, &url).await?;
    }
    Ok(result)
}

/// Upload one file or directory at `path` on the worker to `name`.
async fn upload_one<H: StepHost>(
    step: &UploadStep,
    ctx: &mut StepContext<'_, H>,
    path: String,
    name: &str,
    is_dir: bool,
) -> Result<i32, H::Error> {
    let artifacts = ctx.artifacts;
    let max = step.max_size.unwrap_or(artifacts.max_size);
    let incoming = if is_dir {
        artifacts
            .store
            .receive_tree(artifacts.buildid, name, step.compress, max)
            .await
            .map(Incoming::Tree)
    } else {
        artifacts
            .store
            .receive_file(artifacts.buildid, name, max)
            .await
            .map(Incoming::File)
    };
    let mut incoming = match incoming {
        Ok(incoming) => incoming,
        Err(e) => {
            ctx.host
                .header(&format!("cannot upload to {name:?}: {e}"))
                .await?;
            return Ok(FAILURE);
        }
    };
    let what = if is_dir { "directory" } else { "file" };
    ctx.host
        .header(&format!("uploading {what} {path} to artifact {name}"))
        .await?;
    let command = if is_dir {
        RemoteCommand::UploadDirectory {
            path,
            compress: step.compress,
            max_size: Some(max),
        }
    } else {
        RemoteCommand::UploadFile {
            path,
            max_size: Some(max),
        }
    };
    let (result, _) = ctx
        .run_command_with(command, RemoteIo::Receive(&mut incoming))
        .await?;
    if result != SUCCESS {
        incoming.abandon().await;
        return Ok(result);
    }
    match incoming.finish(step.mode).await {
        Ok(stored) => {
            ctx.host
                .header(&format!(
                    "stored {} bytes in {} file(s)",
                    stored.size, stored.files
                ))
                .await?;
            ctx.host.add_artifact(name, what, &stored).await?;
            Ok(SUCCESS)
        }
        Err(
            e @ (ArtifactError::Untar(_) | ArtifactError::TooLarge(_) | ArtifactError::Path(_)),
        ) => {
            ctx.host.header(&format!("upload refused: {e}")).await?;
            Ok(FAILURE)
        }
        Err(e) => {
            ctx.host
                .header(&format!("could not store the upload: {e}"))
                .await?;
            Ok(EXCEPTION)
        }
    }
}

pub async fn run_download<H: StepHost>(
    step: &DownloadStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    let rendered = async {
        let workdir = ctx.render.render_string(&step.workdir).await?;
        let dest = ctx.render.render_string(&step.workerdest).await?;
        let source = match &step.source {
            DownloadSource::File(r) => Source::File(ctx.render.render_string(r).await?),
            DownloadSource::Directory { dir, compress } => {
                Source::Directory(ctx.render.render_string(dir).await?, *compress)
            }
            DownloadSource::String(r) => {
                Source::Bytes(ctx.render.render_string(r).await?.into_bytes())
            }
            DownloadSource::Properties => Source::Bytes(properties_document(ctx).into_bytes()),
        };
        Ok::<_, crate::render::RenderError>((workdir, dest, source))
    }
    .await;
    let (workdir, dest, source) = match rendered {
        Ok(parts) => parts,
        Err(e) => {
            return ctx
                .cannot_start(&format!("could not render the download: {e}"))
                .await;
        }
    };
    let path = worker_path(ctx, &workdir, &dest);
    ctx.host.begin(&format!("downloading to {dest}")).await?;
    let (command, outgoing, from) = match source {
        Source::Bytes(bytes) => {
            let size = bytes.len() as u64;
            let command = RemoteCommand::DownloadFile {
                path: path.clone(),
                mode: step.mode,
                size,
            };
            (
                command,
                Outgoing::Bytes(bytes),
                format!("{size} bytes from the master"),
            )
        }
        Source::File(mastersrc) => {
            let file = ctx.master_dir.join(&mastersrc);
            match std::fs::metadata(&file) {
                Ok(meta) if meta.is_file() => {
                    let command = RemoteCommand::DownloadFile {
                        path: path.clone(),
                        mode: step.mode,
                        size: meta.len(),
                    };
                    (
                        command,
                        Outgoing::File(file),
                        format!("{} bytes of {mastersrc}", meta.len()),
                    )
                }
                Ok(_) => {
                    ctx.host
                        .header(&format!("{mastersrc} is not a file on the master"))
                        .await?;
                    return Ok(FAILURE);
                }
                Err(e) => {
                    ctx.host
                        .header(&format!("cannot read {mastersrc} on the master: {e}"))
                        .await?;
                    return Ok(FAILURE);
                }
            }
        }
        Source::Directory(mastersrc, compress) => {
            let dir = ctx.master_dir.join(&mastersrc);
            if !dir.is_dir() {
                ctx.host
                    .header(&format!("{mastersrc} is not a directory on the master"))
                    .await?;
                return Ok(FAILURE);
            }
            let command = RemoteCommand::DownloadDirectory {
                path: path.clone(),
                compress,
            };
            (
                command,
                Outgoing::Tree { dir, compress },
                format!("directory {mastersrc}"),
            )
        }
    };
    ctx.host
        .header(&format!("downloading {from} to {path}"))
        .await?;
    Ok(ctx
        .run_command_with(command, RemoteIo::Send(outgoing))
        .await?
        .0)
}

/// A download's source, rendered.
enum Source {
    Bytes(Vec<u8>),
    File(String),
    Directory(String, Option<Compression>),
}

/// What `json_property_download` writes: Buildbot's JSONPropertiesDownload
/// document, `{"properties": {…}, "sourcestamps": […]}`.
fn properties_document<H: StepHost>(ctx: &StepContext<'_, H>) -> String {
    let sourcestamps: Vec<Value> = ctx
        .render
        .sources
        .iter()
        .map(|s| {
            json!({
                "codebase": s.codebase,
                "branch": s.branch,
                "revision": s.revision,
                "repository": s.repository,
                "project": s.project,
            })
        })
        .collect();
    let properties = ctx.render.properties_json();
    let document = json!({ "properties": properties, "sourcestamps": sourcestamps });
    ctx.render.redactor.redact(&document.to_string())
}
