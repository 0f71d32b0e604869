//! `clipql`: CLIP zero-shot image classification over image collections, in SQL.
//!
//! This binary parses arguments and wires `datafusion-clip` into a
//! DataFusion session; the work happens in the library crates.

mod batch;
mod cluster;
mod output;
mod redact;
mod resume;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clip_runtime::Dtype;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{LogicalPlan, Statement};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast;

/// Run CLIP zero-shot image classification over image collections with SQL.
#[derive(Debug, Parser)]
#[command(name = "clipql", disable_version_flag = true)]
struct Cli {
    /// Print the ClipQL, DataFusion and ONNX Runtime versions.
    #[arg(short = 'V', long = "version")]
    version: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run SQL statements; the last statement's result is printed.
    Sql(SqlArgs),
    /// Label every image under folders, globs or files; one output row per image.
    Classify(ClassifyArgs),
    /// Write every image's embedding, for clip_classify_embedding later; one row per image.
    Embed(EmbedArgs),
    /// Inspect models: the HF cache, or one model's files and settings.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Run a Ballista scheduler with ClipQL: clients send it queries with --cluster.
    Scheduler(cluster::SchedulerArgs),
    /// Run a Ballista executor with ClipQL: it registers with a scheduler and runs tasks.
    Executor(cluster::ExecutorArgs),
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Download a model's ONNX files from the HF hub into the HF cache ($HF_HOME/hub).
    Pull {
        /// An HF repo id, e.g. Xenova/clip-vit-base-patch32.
        repo: String,

        /// Which tower files to fetch.
        #[arg(long, default_value_t = Dtype::Fp32)]
        dtype: Dtype,

        /// No progress bars.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the models in the local HF cache ($HF_HOME/hub) that ClipQL can load.
    List,
    /// Show a model's files, dtypes, embedding dim, image size, context length and logit_scale.
    Info {
        /// A model directory or an HF repo id in the local cache.
        model: String,
    },
}

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

async fn run_model(command: ModelCommand) -> Result<u8, DataFusionError> {
    match command {
        ModelCommand::Pull { repo, dtype, quiet } => {
            let report = clip_runtime::hub::pull(&repo, dtype, show_progress(quiet))
                .await
                .map_err(external)?;
            let fetched = report.files.iter().filter(|f| f.downloaded).count();
            let bytes: u64 = report
                .files
                .iter()
                .filter(|f| f.downloaded)
                .map(|f| f.size)
                .sum();
            for f in &report.files {
                let how = if f.downloaded { "downloaded" } else { "cached" };
                eprintln!("  {how}\t{}\t{}", f.size, f.name);
            }
            if let Some(w) = &report.warning {
                eprintln!("warning: {w}");
            }
            eprintln!(
                "{repo} ({dtype}) at commit {}: {fetched} of {} files downloaded ({bytes} bytes)",
                report.commit,
                report.files.len()
            );
            println!("{}", report.dir.display());
        }
        ModelCommand::List => {
            let models = clip_runtime::hub::cached_models();
            if models.is_empty() {
                let cache = clip_runtime::hub::hub_cache_dir().map_or_else(
                    || "(no HF_HOME or HOME)".to_string(),
                    |d| d.display().to_string(),
                );
                eprintln!("no ClipQL-loadable models in the HF cache at {cache}");
            }
            for m in models {
                let dtypes: Vec<String> = clip_runtime::available_dtypes(&m.path)
                    .iter()
                    .map(|d| d.to_string())
                    .collect();
                println!("{}\t{}\t{}", m.repo_id, dtypes.join(","), m.path.display());
            }
        }
        ModelCommand::Info { model } => {
            let dir = clip_runtime::hub::resolve_model(&model).map_err(external)?;
            if !dir.is_dir() {
                return Err(DataFusionError::Plan(format!(
                    "{model} is not a folder; a repo id would name a model in the HF cache"
                )));
            }
            let config = clip_runtime::ModelConfig::from_dir(&dir).map_err(external)?;
            let preprocess =
                clip_runtime::PreprocessConfig::from_file(&dir.join("preprocessor_config.json"))
                    .map_err(external)?;
            let dtypes = clip_runtime::available_dtypes(&dir);
            println!("model: {model}");
            println!("path: {}", dir.display());
            println!(
                "dtypes: {}",
                dtypes
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("embedding_dim: {}", config.projection_dim);
            match preprocess.crop {
                Some((h, w)) => println!("image_size: {h}x{w}"),
                None => println!("image_size: (no centre crop)"),
            }
            println!("context_length: {}", config.context_length);
            let scale = dtypes
                .first()
                .ok_or_else(|| {
                    DataFusionError::Plan(format!("{}: no tower files under onnx/", dir.display()))
                })
                .and_then(|d| {
                    clip_runtime::load_shared(
                        &dir,
                        clip_runtime::ModelOptions::default().with_dtype(*d),
                    )
                    .and_then(|m| m.logit_scale())
                    .map_err(external)
                });
            match scale {
                Ok(s) => println!("logit_scale: {s}"),
                Err(e) => println!("logit_scale: unavailable ({e})"),
            }
            println!("files:");
            let mut files: Vec<(String, u64)> = Vec::new();
            for sub in ["", "onnx"] {
                if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
                    for e in entries.flatten() {
                        if let Ok(meta) = std::fs::metadata(e.path())
                            && meta.is_file()
                        {
                            let name = e.file_name().to_string_lossy().into_owned();
                            let name = if sub.is_empty() {
                                name
                            } else {
                                format!("{sub}/{name}")
                            };
                            files.push((name, meta.len()));
                        }
                    }
                }
            }
            files.sort();
            for (name, size) in files {
                println!("  {name}\t{size}");
            }
        }
    }
    Ok(EXIT_OK)
}

/// Exit code when every image was classified.
const EXIT_OK: u8 = 0;
/// Exit code for a fatal error: nothing (or nothing complete) was written.
const EXIT_FATAL: u8 = 1;
/// Exit code when the output was written but some images failed.
const EXIT_SOME_FAILED: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnError {
    /// Record the image with a NULL label and its reason in `error`.
    Null,
    /// Stop at the first bad image, writing nothing.
    Fail,
}

/// What every batch command takes.
#[derive(Debug, Args)]
struct BatchArgs {
    /// Folders (searched recursively), globs or image files.
    #[arg(required = true)]
    sources: Vec<String>,

    /// Model directory or HF repo id (pulled if not cached). Default: Xenova/clip-vit-base-patch32.
    #[arg(long, env = "CLIPQL_MODEL")]
    model: Option<String>,

    /// Which tower files to load (clip.dtype).
    #[arg(long, default_value_t = Dtype::Fp32)]
    dtype: Dtype,

    /// The image column of Parquet sources: Binary/BinaryView, or an HF-datasets {bytes, path}
    /// struct (detected when there is one). Giving it reads every source as Parquet.
    #[arg(long)]
    image_column: Option<String>,

    /// What a bad image does.
    #[arg(long, value_enum, default_value_t = OnError::Null)]
    on_error: OnError,

    /// Images per vision-tower run (clip.batch_size).
    #[arg(long)]
    batch_size: Option<usize>,

    /// ONNX Runtime threads (clip.intra_threads; default: all cores).
    #[arg(long)]
    threads: Option<usize>,

    /// Decode JPEGs at 1/2, 1/4 or 1/8 size when that still covers the model's input
    /// (clip.fast_jpeg): several times faster on phone photos; embeddings differ slightly
    /// from a full decode (BENCHMARKS.md measures it).
    #[arg(long)]
    fast_jpeg: bool,

    /// Set any session option before the job plans, e.g. `--set clip.sessions=2` or
    /// `--set datafusion.execution.target_partitions=4` (repeatable; see `SHOW ALL` in
    /// `clipql sql`).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    set: Vec<(String, String)>,

    /// No progress bar or summary.
    #[arg(long, short)]
    quiet: bool,

    /// At the end, print where the time went: images decoded, decode and inference time,
    /// batches, text-tower runs, cache hits (what EXPLAIN ANALYZE shows for SQL).
    #[arg(long, short)]
    verbose: bool,

    /// Skip images an earlier run over the same --output finished (same path, size and
    /// modification time), whether that run completed or was interrupted.
    #[arg(long)]
    resume: bool,

    /// Run on a Ballista cluster: the scheduler's address, df://HOST:PORT (see
    /// `clipql scheduler`). Sources are read by the executors; the output is written here.
    #[arg(long, value_name = "df://HOST:PORT", env = "CLIPQL_CLUSTER")]
    cluster: Option<String>,
}

#[derive(Debug, Args)]
struct ClassifyArgs {
    #[command(flatten)]
    batch: BatchArgs,

    /// Candidate labels.
    #[arg(long, num_args = 1.., required_unless_present = "labels_file", conflicts_with = "labels_file")]
    labels: Vec<String>,

    /// A file with one label per line (blank lines and lines starting with # are skipped).
    #[arg(long)]
    labels_file: Option<PathBuf>,

    /// Wraps each label into the text CLIP sees, e.g. 'a photo of a {}'; the output shows the bare label.
    #[arg(long)]
    template: Option<String>,

    /// Output file: .parquet, .csv or .jsonl. Without it, a table goes to stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,

    /// Keep the K best labels in `scores` (default: all).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    top_k: Option<usize>,

    /// Add each image's embedding as an `embedding` column.
    #[arg(long)]
    with_embeddings: bool,
}

#[derive(Debug, Args)]
struct EmbedArgs {
    #[command(flatten)]
    batch: BatchArgs,

    /// Output file: .parquet (or .csv, .jsonl) with `path`, `embedding`, `error`.
    #[arg(long, short)]
    output: PathBuf,
}

fn read_labels(args: &ClassifyArgs) -> Result<Vec<String>, DataFusionError> {
    let raw: Vec<String> = match &args.labels_file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| {
                DataFusionError::IoError(e).context(format!("reading {}", file.display()))
            })?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        None => args.labels.clone(),
    };
    let mut seen = std::collections::HashSet::new();
    Ok(raw.into_iter().filter(|l| seen.insert(l.clone())).collect())
}

/// `--set KEY=VALUE`.
fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!(
            "expected KEY=VALUE, e.g. clip.sessions=2, got '{s}'"
        )),
    }
}

async fn run_batch(
    mut batch: BatchArgs,
    task: batch::Task,
    output: Option<PathBuf>,
) -> Result<u8, DataFusionError> {
    // `--set clip.model=M` / `clip.dtype=D` are `--model M` / `--dtype D`
    // (applied last, as every --set is): the model is resolved, pulled and
    // recorded for --resume like one given by --model.
    let mut rest = Vec::with_capacity(batch.set.len());
    for (key, value) in std::mem::take(&mut batch.set) {
        match key.as_str() {
            "clip.model" => batch.model = Some(value),
            "clip.dtype" => {
                batch.dtype = value
                    .parse()
                    .map_err(|e| DataFusionError::Plan(format!("clip.dtype = {value}: {e}")))?
            }
            _ => rest.push((key, value)),
        }
    }
    batch.set = rest;
    let model = model_dir(batch.model.as_deref(), batch.dtype, batch.quiet).await?;
    let model_name = cluster_model_name(batch.model.as_deref(), &model);
    let job = batch::Job {
        cluster: batch.cluster,
        model_name,
        sources: batch.sources,
        task,
        model,
        dtype: batch.dtype,
        output,
        image_column: batch.image_column,
        fail_on_error: batch.on_error == OnError::Fail,
        batch_size: batch.batch_size,
        threads: batch.threads,
        quiet: batch.quiet,
        resume: batch.resume,
        verbose: batch.verbose,
        fast_jpeg: batch.fast_jpeg,
        set: batch.set,
    };
    let summary = batch::run(job).await?;
    Ok(if summary.failures() > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}

async fn run_classify(args: ClassifyArgs) -> Result<u8, DataFusionError> {
    let task = batch::Task::Classify {
        labels: read_labels(&args)?,
        template: args.template,
        top_k: args.top_k,
        with_embeddings: args.with_embeddings,
    };
    run_batch(args.batch, task, args.output).await
}

#[derive(Debug, Args)]
struct SqlArgs {
    /// Model directory or HF repo id (sets clip.model; a repo id is pulled if not cached).
    /// Default: Xenova/clip-vit-base-patch32, pulled only if the SQL calls a CLIP function
    /// and does not set clip.model itself.
    #[arg(long, env = "CLIPQL_MODEL")]
    model: Option<String>,

    /// Which tower files to load (sets clip.dtype).
    #[arg(long)]
    dtype: Option<Dtype>,

    /// How to print the result.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// SQL to run: one or more statements separated by `;`.
    #[arg(
        short = 'c',
        long = "command",
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    command: Option<String>,

    /// A file of SQL statements to run.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,

    /// Run queries on a Ballista cluster: the scheduler's address, df://HOST:PORT (see
    /// `clipql scheduler`).
    #[arg(long, value_name = "df://HOST:PORT", env = "CLIPQL_CLUSTER")]
    cluster: Option<String>,
}

/// Output formats of `clipql sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header; nested values are written as text.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Jsonl,
}

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

/// Whether SQL text calls a function that needs a model and leaves
/// `clip.model` to us: then `clipql sql` pulls the default model first.
fn needs_default_model(sql: &str) -> bool {
    let sql = sql.to_ascii_lowercase();
    !sql.contains("clip.model")
        && datafusion_clip::all_functions()
            .iter()
            .map(|f| f.name())
            .filter(|name| datafusion_clip::needs_model(name))
            .any(|name| sql.contains(name))
}

/// `SHOW FUNCTIONS` (`Some(None)`) or `SHOW FUNCTIONS LIKE 'p'`
/// (`Some(Some("p"))`), which `datafusion_clip::show_functions` answers so
/// that the `clip_*` functions are listed; `None` for any other statement
/// (other filters go to DataFusion, which says what it supports).
fn show_functions_filter(statement: &DFStatement) -> Option<Option<&str>> {
    let DFStatement::Statement(statement) = statement else {
        return None;
    };
    match statement.as_ref() {
        ast::Statement::ShowFunctions { filter: None } => Some(None),
        ast::Statement::ShowFunctions {
            filter: Some(ast::ShowStatementFilter::Like(pattern)),
        } => Some(Some(pattern.as_str())),
        _ => None,
    }
}

async fn run_sql(args: SqlArgs) -> Result<(), DataFusionError> {
    let sql = match (&args.command, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(file)) => std::fs::read_to_string(file).map_err(|e| {
            DataFusionError::IoError(e).context(format!("reading {}", file.display()))
        })?,
        (None, None) => return Err(DataFusionError::Plan("give SQL with -c or -f".into())),
    };
    // Before anything can fail: an error may quote the SQL.
    redact::remember_secrets(&sql);
    let mut config = match args.cluster {
        Some(_) => ballista_clip::session_config(),
        None => datafusion_clip::session_config(),
    };
    let statements = DFParser::parse_sql(&sql)?;
    if statements.is_empty() {
        return Err(DataFusionError::Plan("no SQL statement given".into()));
    }
    // `SHOW FUNCTIONS LIKE 'clip_scores'` names a function but runs none.
    let runs_functions = statements
        .iter()
        .filter(|s| show_functions_filter(s).is_none())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(";\n");
    let dtype = args.dtype.unwrap_or_default();
    if args.model.is_some() || needs_default_model(&runs_functions) {
        let dir = model_dir(args.model.as_deref(), dtype, false).await?;
        let model = match args.cluster {
            Some(_) => cluster_model_name(args.model.as_deref(), &dir),
            None => dir.to_string_lossy().into_owned(),
        };
        config = config.set_str("clip.model", &model);
    }
    if let Some(dtype) = args.dtype {
        config = config.set_str("clip.dtype", &dtype.to_string());
    }
    let ctx = match &args.cluster {
        Some(url) => ballista_clip::remote_context(url, config).await?,
        None => {
            // information_schema: SHOW FUNCTIONS, SHOW ALL and SHOW TABLES,
            // with each clip_* function's documentation().
            let config = config.with_information_schema(true);
            let ctx = SessionContext::new_with_config_rt(config, datafusion_clip::runtime_env()?)
                .enable_url_table();
            datafusion_clip::register_all(&ctx)?;
            ctx
        }
    };
    let count = statements.len();
    let mut last = None;
    for (i, statement) in statements.into_iter().enumerate() {
        if let Some(like) = show_functions_filter(&statement) {
            let listed = datafusion_clip::show_functions(&ctx, like).await?;
            last = Some(listed.collect().await?);
            continue;
        }
        let plan = ctx.state().statement_to_plan(statement).await?;
        if let LogicalPlan::Statement(Statement::ResetVariable(reset)) = &plan
            && reset.variable.starts_with("clip.")
        {
            datafusion_clip::reset_option(&ctx, &reset.variable)
                .await
                .map_err(|e| e.context(format!("statement {} of {count}", i + 1)))?;
            last = Some(Vec::new());
            continue;
        }
        let df = ctx.execute_logical_plan(plan).await?;
        let batches = df
            .collect()
            .await
            .map_err(|e| e.context(format!("statement {} of {count}", i + 1)))?;
        last = Some(batches);
    }
    let batches = last.unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    output::write(&mut stdout, &batches, args.format)
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
        Command::Sql(args) => runtime.block_on(run_sql(args)).map(|()| EXIT_OK),
        Command::Classify(args) => runtime.block_on(run_classify(args)),
        Command::Model(command) => runtime.block_on(run_model(command)),
        Command::Embed(args) => {
            runtime.block_on(run_batch(args.batch, batch::Task::Embed, Some(args.output)))
        }
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
