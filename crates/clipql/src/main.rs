//! `clipql`: CLIP zero-shot image classification over image collections, in SQL.
//!
//! This binary parses arguments and wires `datafusion-clip` into a
//! DataFusion session; the work happens in the library crates.

mod cli;
mod commands;
mod job;
mod output;
mod redact;
mod session;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clip_runtime::Dtype;
use datafusion::error::DataFusionError;

use cli::{Cli, Command};
use commands::{batch as batch_command, cluster, model, sql};

fn external(e: clip_runtime::ClipError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Whether to draw progress bars.
fn show_progress(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// The model directory for `--model` (a folder or repo id; default: the
/// default model), pulling a repo id that is not in the HF cache.
async fn model_dir(
    model: Option<&str>,
    dtype: Dtype,
    quiet: bool,
) -> Result<PathBuf, DataFusionError> {
    let name = model.unwrap_or(clip_runtime::hub::DEFAULT_MODEL);
    clip_runtime::hub::ensure_model(name, dtype, show_progress(quiet))
        .await
        .map_err(external)
}

/// Exit code when every image was classified.
const EXIT_OK: u8 = 0;
/// Exit code for a fatal error: nothing (or nothing complete) was written.
const EXIT_FATAL: u8 = 1;
/// Exit code when the output was written but some images failed.
const EXIT_SOME_FAILED: u8 = 3;

fn version() -> String {
    let ort = match clip_runtime::onnxruntime::runtime_info() {
        Ok(info) => format!("{} ({})", info.version, info.path.display()),
        Err(e) => format!("not available: {e}"),
    };
    format!(
        "clipql {}\nDataFusion {}\nONNX Runtime {ort}",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    )
}

/// What `clip.model` should say on a cluster, where every process resolves
/// it on its own machine: a repo id as given (each pulls it into its own HF
/// cache), else the model folder's absolute path.
fn cluster_model_name(given: Option<&str>, dir: &std::path::Path) -> String {
    match given {
        Some(name) if !std::path::Path::new(name).exists() => name.to_string(),
        Some(_) => std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .to_string_lossy()
            .into_owned(),
        None => clip_runtime::hub::DEFAULT_MODEL.to_string(),
    }
}

/// Prints an error and its causes. DataFusion's errors already render their
/// context chain in `Display`, so a cause is printed only if it adds text.
fn print_error(e: &dyn std::error::Error) {
    // A cluster's task errors arrive as Ballista's Debug text: keep the
    // messages inside, as local mode prints them.
    // Secrets given in the SQL are masked (redact.rs).
    let mut printed = redact::redact(&ballista_clip::readable_error(&e.to_string()));
    eprintln!("error: {printed}");
    let mut source = e.source();
    while let Some(cause) = source {
        let text = redact::redact(&ballista_clip::readable_error(&cause.to_string()));
        // Our own errors need no "External error: " in front here either.
        let text = text
            .strip_prefix("External error: ")
            .map_or(text.clone(), str::to_string);
        if !printed.contains(&text) {
            eprintln!("  caused by: {text}");
            printed.push_str(&text);
        }
        source = cause.source();
    }
}

fn main() -> ExitCode {
    // Ballista binds 0.0.0.0 by default; ClipQL's cluster processes bind
    // loopback unless told otherwise (Ballista 55 has no authentication:
    // see cluster::check_bind).
    let loopback = |c: clap::Command| c.mut_arg("bind_host", |a| a.default_value("127.0.0.1"));
    let matches = <Cli as clap::CommandFactory>::command()
        .mut_subcommand("scheduler", loopback)
        .mut_subcommand("executor", loopback)
        .get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if cli.version {
        println!("{}", version());
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        eprintln!("clipql: give a command; see clipql --help");
        return ExitCode::from(2);
    };
    // The client commands log to stderr only when RUST_LOG asks (the
    // scheduler and executor set up their own logging).
    if !matches!(command, Command::Scheduler(_) | Command::Executor(_))
        && let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env()
    {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_env_filter(filter)
            .try_init();
    }
    // Deep plans recurse when a scheduler or executor (de)serialises them:
    // Ballista's own binaries run with 32 MiB stacks.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 * 1024 * 1024)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            print_error(&e);
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::Sql(args) => runtime.block_on(sql::run_sql(args)).map(|()| EXIT_OK),
        Command::Classify(args) => runtime.block_on(batch_command::run_classify(args)),
        Command::Model(command) => runtime.block_on(model::run_model(command)),
        Command::Embed(args) => runtime.block_on(batch_command::run_batch(
            args.batch,
            job::Task::Embed,
            Some(args.output),
        )),
        Command::Scheduler(args) => runtime
            .block_on(cluster::run_scheduler(args))
            .map(|()| EXIT_OK),
        Command::Executor(args) => runtime
            .block_on(cluster::run_executor(args))
            .map(|()| EXIT_OK),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(DataFusionError::External(e)) => {
            // Our own errors need no "External error: " in front.
            print_error(e.as_ref());
            ExitCode::from(EXIT_FATAL)
        }
        Err(e) => {
            print_error(&e);
            ExitCode::from(EXIT_FATAL)
        }
    }
}
