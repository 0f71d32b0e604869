//! The command line: every `clap` type of `clipql`, and how a flag's text
//! is parsed. What each command does is in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clip_runtime::Dtype;
use datafusion_clip::OnError;

use crate::output::OutputFormat;

/// Run CLIP zero-shot image classification over image collections with SQL.
#[derive(Debug, Parser)]
#[command(name = "clipql", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Print the ClipQL, DataFusion and ONNX Runtime versions.
    #[arg(short = 'V', long = "version")]
    pub(crate) version: bool,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor with ClipQL: it registers with a scheduler and runs tasks.
    Executor(ExecutorArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ModelCommand {
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

/// `--on-error`: `clip.on_error`'s own values, parsed by its own parser.
fn on_error_parser() -> impl clap::builder::TypedValueParser<Value = OnError> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["null", "fail"]).try_map(|s| s.parse::<OnError>())
}

/// What every batch command takes.
#[derive(Debug, Args)]
pub(crate) struct BatchArgs {
    /// Folders (searched recursively), globs or image files.
    #[arg(required = true)]
    pub(crate) sources: Vec<String>,

    /// Model directory or HF repo id (pulled if not cached). Default: Xenova/clip-vit-base-patch32.
    #[arg(long, env = "CLIPQL_MODEL")]
    pub(crate) model: Option<String>,

    /// Which tower files to load (clip.dtype).
    #[arg(long, default_value_t = Dtype::Fp32)]
    pub(crate) dtype: Dtype,

    /// The image column of Parquet sources: Binary/BinaryView, or an HF-datasets {bytes, path}
    /// struct (detected when there is one). Giving it reads every source as Parquet.
    #[arg(long)]
    pub(crate) image_column: Option<String>,

    /// What a bad image does: `null` records it with a NULL label and its
    /// reason in `error`; `fail` stops at the first one, writing nothing.
    #[arg(long, value_parser = on_error_parser(), default_value_t = OnError::Null)]
    pub(crate) on_error: OnError,

    /// Images per vision-tower run (clip.batch_size).
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,

    /// ONNX Runtime threads (clip.intra_threads; default: all cores).
    #[arg(long)]
    pub(crate) threads: Option<usize>,

    /// Decode JPEGs at 1/2, 1/4 or 1/8 size when that still covers the model's input
    /// (clip.fast_jpeg): several times faster on phone photos; embeddings differ slightly
    /// from a full decode (BENCHMARKS.md measures it).
    #[arg(long)]
    pub(crate) fast_jpeg: bool,

    /// Set any session option before the job plans, e.g. `--set clip.sessions=2` or
    /// `--set datafusion.execution.target_partitions=4` (repeatable; see `SHOW ALL` in
    /// `clipql sql`).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub(crate) set: Vec<(String, String)>,

    /// No progress bar or summary.
    #[arg(long, short)]
    pub(crate) quiet: bool,

    /// At the end, print where the time went: images decoded, decode and inference time,
    /// batches, text-tower runs, cache hits (what EXPLAIN ANALYZE shows for SQL).
    #[arg(long, short)]
    pub(crate) verbose: bool,

    /// Skip images an earlier run over the same --output finished (same path, size and
    /// modification time), whether that run completed or was interrupted.
    #[arg(long)]
    pub(crate) resume: bool,

    /// Run on a Ballista cluster: the scheduler's address, df://HOST:PORT (see
    /// `clipql scheduler`). Sources are read by the executors; the output is written here.
    #[arg(long, value_name = "df://HOST:PORT", env = "CLIPQL_CLUSTER")]
    pub(crate) cluster: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ClassifyArgs {
    #[command(flatten)]
    pub(crate) batch: BatchArgs,

    /// Candidate labels.
    #[arg(long, num_args = 1.., required_unless_present = "labels_file", conflicts_with = "labels_file")]
    pub(crate) labels: Vec<String>,

    /// A file with one label per line (blank lines and lines starting with # are skipped).
    #[arg(long)]
    pub(crate) labels_file: Option<PathBuf>,

    /// Wraps each label into the text the model sees, e.g. 'a photo of a {}'; the output shows the bare label. Repeat it for a prompt ensemble: each label's text embedding is then the normalised mean of its prompts'.
    #[arg(long)]
    pub(crate) template: Vec<String>,

    /// Output file: .parquet, .csv or .jsonl. Without it, a table goes to stdout.
    #[arg(long, short)]
    pub(crate) output: Option<PathBuf>,

    /// Keep the K best labels in `scores` (default: all).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) top_k: Option<usize>,

    /// The score a label must reach (0 to 1): below it `label` is NULL ("none of these", with no error), and a `tags` column lists every label that reaches it.
    #[arg(long, value_parser = parse_threshold)]
    pub(crate) threshold: Option<f32>,

    /// Add each image's embedding as an `embedding` column.
    #[arg(long)]
    pub(crate) with_embeddings: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EmbedArgs {
    #[command(flatten)]
    pub(crate) batch: BatchArgs,

    /// Output file: .parquet (or .csv, .jsonl) with `path`, `embedding`, `error`.
    #[arg(long, short)]
    pub(crate) output: PathBuf,
}

/// `--set KEY=VALUE`.
pub(crate) fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!(
            "expected KEY=VALUE, e.g. clip.sessions=2, got '{s}'"
        )),
    }
}

#[derive(Debug, Args)]
pub(crate) struct SqlArgs {
    /// Model directory or HF repo id (sets clip.model; a repo id is pulled if not cached).
    /// Default: Xenova/clip-vit-base-patch32, pulled only if the SQL calls a CLIP function
    /// and does not set clip.model itself.
    #[arg(long, env = "CLIPQL_MODEL")]
    pub(crate) model: Option<String>,

    /// Which tower files to load (sets clip.dtype).
    #[arg(long)]
    pub(crate) dtype: Option<Dtype>,

    /// How to print the result.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub(crate) format: OutputFormat,

    /// SQL to run: one or more statements separated by `;`.
    #[arg(
        short = 'c',
        long = "command",
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    pub(crate) command: Option<String>,

    /// A file of SQL statements to run.
    #[arg(short = 'f', long = "file")]
    pub(crate) file: Option<PathBuf>,

    /// Run queries on a Ballista cluster: the scheduler's address, df://HOST:PORT (see
    /// `clipql scheduler`).
    #[arg(long, value_name = "df://HOST:PORT", env = "CLIPQL_CLUSTER")]
    pub(crate) cluster: Option<String>,
}

/// `clipql scheduler`.
#[derive(Debug, Args)]
pub(crate) struct SchedulerArgs {
    #[command(flatten)]
    pub(crate) ballista: ballista_scheduler::config::Config,

    /// A model (folder or HF repo id) to pull at start, so the scheduler can plan queries
    /// whose clip.model names it. A repo id is pulled into this machine's HF cache.
    #[arg(long, env = "CLIPQL_MODEL")]
    pub(crate) model: Option<String>,

    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

/// What the scheduler and an executor both take.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// Which tower files to pull with --model.
    #[arg(long, default_value_t = Dtype::Fp32)]
    pub(crate) dtype: Dtype,

    /// Allow a --bind-host other than loopback. Ballista 55 has no authentication: anyone
    /// who reaches the ports can run queries that read what this process can read, with its
    /// credentials. Use only on a private network that only trusted clients reach.
    #[arg(long)]
    pub(crate) allow_unauthenticated: bool,
}

/// `clipql executor`.
#[derive(Debug, Args)]
pub(crate) struct ExecutorArgs {
    #[command(flatten)]
    pub(crate) ballista: ballista_executor::config::Config,

    /// The model (folder or HF repo id) for queries that do not set clip.model. A repo id is
    /// pulled into this machine's HF cache at start; the towers load on the first task and
    /// stay loaded.
    #[arg(long, env = "CLIPQL_MODEL")]
    pub(crate) model: Option<String>,

    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

/// `--threshold`: a score, so a number from 0 to 1.
fn parse_threshold(s: &str) -> Result<f32, String> {
    let t: f32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number; give a score from 0 to 1 such as 0.3"))?;
    if (0.0..=1.0).contains(&t) {
        Ok(t)
    } else {
        Err(format!(
            "{t} is out of range: scores are probabilities, so give a number from 0 to 1 such as 0.3"
        ))
    }
}
