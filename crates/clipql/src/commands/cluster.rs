//! `clipql scheduler` and `clipql executor`: Ballista's own processes, with
//! ClipQL wired in by `ballista-clip`. The flags are Ballista's (its
//! `Config` structs, flattened), plus `--model` and `--dtype`.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::config::LogRotationPolicy;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use clip_runtime::Dtype;
use datafusion::error::DataFusionError;
use tracing_subscriber::EnvFilter;

use crate::cli::{ExecutorArgs, SchedulerArgs};

fn ballista(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Logs to stdout, or to a file under `log_dir`, at `RUST_LOG` or else the
/// process's `--log-level-setting`.
fn init_logging(
    level: &str,
    log_dir: Option<&str>,
    prefix: &str,
    rotation: LogRotationPolicy,
    thread_info: bool,
) {
    let filter = EnvFilter::new(std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or(level.into()));
    let fmt = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_thread_names(thread_info)
        .with_thread_ids(thread_info)
        .with_env_filter(filter);
    let _ = match log_dir {
        Some(dir) => {
            let appender = match rotation {
                LogRotationPolicy::Minutely => tracing_appender::rolling::minutely(dir, prefix),
                LogRotationPolicy::Hourly => tracing_appender::rolling::hourly(dir, prefix),
                LogRotationPolicy::Daily => tracing_appender::rolling::daily(dir, prefix),
                LogRotationPolicy::Never => tracing_appender::rolling::never(dir, prefix),
            };
            fmt.with_writer(appender).try_init()
        }
        None => fmt.try_init(),
    };
}

/// Pulls (a repo id) or checks (a folder) `--model`, returning what a query's
/// `clip.model` should say to mean it here.
async fn prepare_model(model: &str, dtype: Dtype) -> Result<String, DataFusionError> {
    let dir = clip_runtime::hub::ensure_model(model, dtype, false)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    log::info!("model {model} ({dtype}) at {}", dir.display());
    Ok(if std::path::Path::new(model).exists() {
        std::fs::canonicalize(&dir)
            .unwrap_or(dir)
            .to_string_lossy()
            .into_owned()
    } else {
        model.to_string()
    })
}

/// Refuses to listen beyond this machine without `--allow-unauthenticated`.
///
/// Ballista 55's scheduler and executors have no authentication (its
/// clients can send gRPC metadata, but no server checks any), so whoever
/// reaches their ports can run any query, reading any file or bucket the
/// executors can, with their credentials.
fn check_bind(process: &str, host: &str, allow: bool) -> Result<(), DataFusionError> {
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || allow {
        return Ok(());
    }
    Err(DataFusionError::Configuration(format!(
        "clipql {process}: --bind-host {host} would let anyone who reaches this port run \
         queries that read any file or bucket the executors can, with their credentials: \
         Ballista 55 has no authentication. Bind 127.0.0.1 (the default), or, on a private \
         network only trusted clients reach, add --allow-unauthenticated"
    )))
}

/// Runs a scheduler until it is stopped.
pub async fn run_scheduler(args: SchedulerArgs) -> Result<(), DataFusionError> {
    check_bind(
        "scheduler",
        &args.ballista.bind_host,
        args.node.allow_unauthenticated,
    )?;
    let opt = args.ballista;
    init_logging(
        &opt.log_level_setting,
        opt.log_dir.as_deref(),
        &format!(
            "scheduler_{}_{}_{}",
            opt.namespace, opt.external_host, opt.bind_port
        ),
        opt.log_rotation_policy,
        opt.print_thread_info,
    );
    if let Some(model) = &args.model {
        prepare_model(model, args.node.dtype).await?;
    }
    let addr: SocketAddr = format!("{}:{}", opt.bind_host, opt.bind_port)
        .parse()
        .map_err(|e| DataFusionError::Configuration(format!("--bind-host/--bind-port: {e}")))?;
    let config: SchedulerConfig = opt.try_into().map_err(ballista)?;
    let config = ballista_clip::scheduler_config(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista)?;
    start_server(cluster, addr, Arc::new(config))
        .await
        .map_err(ballista)
}

/// Runs an executor until it is stopped.
pub async fn run_executor(args: ExecutorArgs) -> Result<(), DataFusionError> {
    check_bind(
        "executor",
        &args.ballista.bind_host,
        args.node.allow_unauthenticated,
    )?;
    let opt = args.ballista;
    let health_addr: SocketAddr = format!("{}:{}", opt.bind_host, opt.bind_health_port)
        .parse()
        .map_err(|e| {
            DataFusionError::Configuration(format!("--bind-host/--bind-health-port: {e}"))
        })?;
    let config: ExecutorProcessConfig = opt.try_into().map_err(ballista)?;
    init_logging(
        &config.special_mod_log_level,
        config.log_dir.as_deref(),
        &config.log_file_name_prefix(),
        config.log_rotation_policy,
        config.print_thread_info,
    );
    let model = match &args.model {
        Some(model) => Some(prepare_model(model, args.node.dtype).await?),
        None => None,
    };
    let config = ballista_clip::executor_config(config, model)?;
    let (stop_health, stopped) = tokio::sync::oneshot::channel();
    let health =
        ballista_executor::health::spawn_health_server(health_addr, config.health.clone(), stopped);
    let result = start_executor_process(Arc::new(config)).await;
    let _ = stop_health.send(());
    if let Err(e) = health.await {
        log::warn!("health server: {e}");
    }
    result.map_err(ballista)
}
