//! ClipQL on an Apache DataFusion Ballista cluster.
//!
//! Ballista ships plans as protobuf and functions by name, so every process
//! of a cluster needs ClipQL wired in the same way:
//!
//! | process | what this crate gives it |
//! |---|---|
//! | client | [`remote_context`]: a `SessionContext` whose queries run on the cluster |
//! | scheduler | [`scheduler_config`]: plans with the `clip_*` functions, the `IMAGE` table and the `clip.*` options |
//! | executor | [`executor_config`]: runs the tasks, with the functions, the options and the object stores |
//!
//! In each: the `clip_*` functions; the `clip.*` options registered, so
//! Ballista carries a client's `SET clip.…` to the scheduler and executors
//! instead of dropping the keys; [`datafusion_clip::ClipLogicalCodec`] and
//! [`datafusion_clip::ClipPhysicalCodec`] over Ballista's own codecs, for the
//! `IMAGE` table and its scan; and [`datafusion_clip::runtime_env`]'s object
//! stores (local files, and S3 with the same credential resolution as local
//! mode).
//!
//! A query's `clip.model` (a folder, or an HF repo id) is resolved by each
//! process on its own machine: the client and the scheduler read the model's
//! `config.json` to plan, and each executor loads the ONNX towers on its first
//! task and keeps them for later tasks.

use std::sync::Arc;
use std::time::Duration;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::{
    SessionConfigExt, ballista_aggregate_functions, ballista_scalar_functions,
    ballista_window_functions,
};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use ballista_executor::executor_process::ExecutorProcessConfig;
use ballista_scheduler::config::SchedulerConfig;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_clip::{ClipLogicalCodec, ClipObjectStoreRegistry, ClipOptions, ClipPhysicalCodec};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;

/// The URL scheme of a cluster address: `df://HOST:PORT`.
pub const CLUSTER_SCHEME: &str = "df://";

/// How long [`remote_context`] waits to reach the scheduler.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// ClipQL's logical codec over Ballista's.
pub fn logical_codec() -> Arc<dyn LogicalExtensionCodec> {
    Arc::new(ClipLogicalCodec::new(Arc::new(
        BallistaLogicalExtensionCodec::default(),
    )))
}

/// ClipQL's physical codec over Ballista's.
pub fn physical_codec() -> Arc<dyn PhysicalExtensionCodec> {
    Arc::new(ClipPhysicalCodec::new(Arc::new(
        BallistaPhysicalExtensionCodec::default(),
    )))
}

/// A Ballista session config with the `clip.*` options and ClipQL's codecs.
/// Set `clip.*` values on it (or with `SET`) as in local mode.
pub fn session_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_option_extension(ClipOptions::default())
        .with_ballista_logical_extension_codec(logical_codec())
        .with_ballista_physical_extension_codec(physical_codec())
}

/// A runtime with ClipQL's object stores, spilling under `temp_dir` if given.
fn runtime(temp_dir: Option<&str>) -> Result<Arc<RuntimeEnv>> {
    let builder = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(ClipObjectStoreRegistry::new()));
    match temp_dir {
        Some(dir) => builder.with_temp_file_path(dir).build_arc(),
        None => builder.build_arc(),
    }
}

/// The scheduler's session for one client session: Ballista's defaults,
/// ClipQL registered, and ClipQL's object stores (the scheduler lists a
/// table's files when it plans a scan).
pub fn scheduler_session(config: SessionConfig) -> Result<SessionState> {
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime(None)?)
        .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
        .with_scalar_functions(ballista_scalar_functions())
        .with_aggregate_functions(ballista_aggregate_functions())
        .with_window_functions(ballista_window_functions())
        .build();
    let ctx = SessionContext::new_with_state(state);
    datafusion_clip::register_all(&ctx)?;
    Ok(ctx.state())
}

/// Wires ClipQL into a scheduler's config (parsed from Ballista's own flags).
pub fn scheduler_config(config: SchedulerConfig) -> SchedulerConfig {
    let mut config = config
        .with_override_config_producer(Arc::new(session_config))
        .with_override_session_builder(Arc::new(scheduler_session));
    config.override_logical_codec = Some(logical_codec());
    config.override_physical_codec = Some(physical_codec());
    config
}

/// Ballista's functions plus ClipQL's, for executors.
pub fn function_registry() -> BallistaFunctionRegistry {
    let mut registry = BallistaFunctionRegistry::default();
    for udf in datafusion_clip::all_functions() {
        registry
            .scalar_functions
            .insert(udf.name().to_string(), udf);
    }
    registry
}

/// Wires ClipQL into an executor's config (parsed from Ballista's own
/// flags). `default_model` becomes the executor's `clip.model` for queries
/// that do not set one; a query's own `clip.model` wins.
pub fn executor_config(
    mut config: ExecutorProcessConfig,
    default_model: Option<String>,
) -> Result<ExecutorProcessConfig> {
    let mut base = session_config();
    if let Some(model) = &default_model {
        base.options_mut().set("clip.model", model)?;
    }
    let work_dir = config.work_dir.clone();
    config.override_function_registry = Some(Arc::new(function_registry()));
    config.override_config_producer = Some(Arc::new(move || base.clone()));
    config.override_runtime_producer = Some(Arc::new(move |_: &SessionConfig| {
        runtime(work_dir.as_deref())
    }));
    config.override_logical_codec = Some(logical_codec());
    config.override_physical_codec = Some(physical_codec());
    Ok(config)
}

/// `HOST:PORT` of a `df://HOST:PORT` cluster address.
pub fn parse_cluster_url(url: &str) -> Result<(String, u16)> {
    let usage = || {
        DataFusionError::Configuration(format!(
            "the cluster address must look like df://HOST:PORT (the scheduler's --bind-host \
             and --bind-port, e.g. df://127.0.0.1:50050), got '{url}'"
        ))
    };
    let rest = url.strip_prefix(CLUSTER_SCHEME).ok_or_else(usage)?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(usage)?;
    let port: u16 = port.parse().map_err(|_| usage())?;
    if host.is_empty() || host.contains('/') {
        return Err(usage());
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// A `SessionContext` whose queries run on the Ballista cluster at `url`
/// (`df://HOST:PORT`), with ClipQL registered as [`datafusion_clip::register_all`]
/// does for a local one. `config` carries `clip.*` and other settings; build
/// it from [`session_config`].
///
/// Fails within [`CONNECT_TIMEOUT`] when nothing answers at `url`.
pub async fn remote_context(url: &str, config: SessionConfig) -> Result<SessionContext> {
    let (host, port) = parse_cluster_url(url)?;
    let reach = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await;
    let why = match reach {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())),
    };
    if let Some(why) = why {
        return Err(DataFusionError::Execution(format!(
            "cannot reach the Ballista scheduler at {url}: {why}. Start one with \
             `clipql scheduler --bind-host {host} --bind-port {port}`, or check the address"
        )));
    }
    let config = config
        .with_ballista_logical_extension_codec(logical_codec())
        .with_ballista_physical_extension_codec(physical_codec());
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime(None)?)
        .build();
    let ctx = SessionContext::remote_with_state(&format!("df://{host}:{port}"), state).await?;
    // Ballista's upgrade resets the scalar functions to its own list.
    datafusion_clip::register_all(&ctx)?;
    Ok(ctx)
}

/// What Ballista puts before a failed task's error, which it writes with
/// `Debug` (`DataFusionError(Shared(External(...Execution("..."))))`).
const TASK_ERROR: &str = "Task failed due to runtime execution error: ";

/// Rewrites a query error from the cluster so that it reads as in local
/// mode: Ballista reports a failed task's error as its `Debug` text, and this
/// keeps the messages inside it (`Job … failed: … clip_classify: the image in
/// row 0 …`). Any other message is returned unchanged.
pub fn readable_error(message: &str) -> String {
    let Some(at) = message.find(TASK_ERROR) else {
        return message.to_string();
    };
    let (head, debug) = message.split_at(at + TASK_ERROR.len());
    let mut messages = Vec::new();
    let mut rest = debug;
    // Each `Variant("…")` holds one message; struct fields (`store: "S3"`)
    // are not messages.
    while let Some(start) = rest.find("(\"") {
        let Some((text, after)) = debug_string(&rest[start + 2..]) else {
            break;
        };
        messages.push(text);
        rest = after;
    }
    if messages.is_empty() {
        return message.to_string();
    }
    format!(
        "{}{}",
        head.trim_end_matches(TASK_ERROR),
        messages.join(": ")
    )
}

/// A `Debug`-quoted string's text (from just after its opening quote), and
/// what follows its closing quote.
fn debug_string(s: &str) -> Option<(String, &str)> {
    let mut text = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((text, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => text.push('\n'),
                'r' => text.push('\r'),
                't' => text.push('\t'),
                '0' => text.push('\0'),
                'u' => {
                    let (open, _) = chars.next()?;
                    let close = s[open..].find('}')? + open;
                    let code = u32::from_str_radix(&s[open + 1..close], 16).ok()?;
                    text.push(char::from_u32(code)?);
                    while chars.next()?.0 < close {}
                }
                other => text.push(other),
            },
            c => text.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_errors_read_as_in_local_mode() {
        let raw = "Job 038H failed: Job failed due to stage 0 failed: Task failed due to runtime \
                   execution error: DataFusionError(Shared(External(DataFusionError(Execution(\
                   \"clip_classify: the image in row 0 cannot be used: cannot decode \\\"x\\\" \
                   \\u{e9}t\\u{e9}. SET clip.on_error = 'null'\")))))";
        assert_eq!(
            readable_error(raw),
            "Job 038H failed: Job failed due to stage 0 failed: clip_classify: the image in \
             row 0 cannot be used: cannot decode \"x\" \u{e9}t\u{e9}. SET clip.on_error = 'null'"
        );
        let nested = "Task failed due to runtime execution error: DataFusionError(Context(\"reading \
                      s3://b/k.jpg\", ObjectStore(NotFound { path: \"k.jpg\" })))";
        assert_eq!(readable_error(nested), "reading s3://b/k.jpg");
        for plain in [
            "Error during planning: clip_classify takes 2 arguments",
            "Task failed due to runtime execution error: Cancelled",
        ] {
            assert_eq!(readable_error(plain), plain);
        }
    }

    #[test]
    fn cluster_urls() {
        assert_eq!(
            parse_cluster_url("df://127.0.0.1:50050").unwrap(),
            ("127.0.0.1".to_string(), 50050)
        );
        assert_eq!(
            parse_cluster_url("df://scheduler.svc:7000/").unwrap(),
            ("scheduler.svc".to_string(), 7000)
        );
        for bad in [
            "127.0.0.1:50050",
            "http://h:1",
            "df://h",
            "df://:5",
            "df://h:port",
            "df://h:99999",
        ] {
            let e = parse_cluster_url(bad).unwrap_err().to_string();
            assert!(e.contains("df://HOST:PORT"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_dead_scheduler_fails_at_once_and_says_how_to_start_one() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = std::time::Instant::now();
        let Err(e) = remote_context(&format!("df://127.0.0.1:{port}"), session_config()).await
        else {
            panic!("nothing listens on {port}");
        };
        let e = e.to_string();
        assert!(started.elapsed() < CONNECT_TIMEOUT, "{e}");
        assert!(e.contains("cannot reach the Ballista scheduler"), "{e}");
        assert!(
            e.contains(&format!(
                "clipql scheduler --bind-host 127.0.0.1 --bind-port {port}"
            )),
            "{e}"
        );
    }
}
