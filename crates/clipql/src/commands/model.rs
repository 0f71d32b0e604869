//! `clipql model pull | list | info`: the HF cache and one model's files.

use datafusion::error::DataFusionError;

use crate::cli::ModelCommand;
use crate::{EXIT_OK, external, show_progress};

pub(crate) async fn run_model(command: ModelCommand) -> Result<u8, DataFusionError> {
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
            println!("family: {}", config.family.model_type());
            let rule = config.family.scoring_rule();
            println!("scoring: {} ({})", rule.name(), rule.meaning());
            println!("embedding_dim: {}", config.projection_dim);
            match preprocess.fixed_size() {
                Some((h, w)) => println!("image_size: {h}x{w}"),
                None => println!("image_size: (each image's own: no centre crop or exact resize)"),
            }
            println!("context_length: {}", config.context_length);
            println!("text: {}", describe_text(&dir, &config).map_err(external)?);
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
                    .and_then(|m| m.trained_logits())
                    .map_err(external)
                });
            match scale {
                Ok(t) => {
                    println!("logit_scale: {}", t.scale);
                    if rule == clip_runtime::ScoringRule::Sigmoid {
                        println!("logit_bias: {}", t.bias);
                    }
                }
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

/// How texts are tokenised, as `tokenizer_config.json` and `tokenizer.json`
/// settle it: the pad token and side, and who places BOS / EOS.
fn describe_text(
    dir: &std::path::Path,
    config: &clip_runtime::ModelConfig,
) -> clip_runtime::Result<String> {
    let settings =
        clip_runtime::TokenizerSettings::from_dir(dir, config.family.default_pad_token())?;
    let tokenizer = clip_runtime::TextTokenizer::from_file(
        &dir.join("tokenizer.json"),
        config.context_length,
        &settings,
    )?;
    let side = match tokenizer.padding_side() {
        clip_runtime::PaddingSide::Right => "right",
        clip_runtime::PaddingSide::Left => "left",
    };
    let specials = match &settings.specials {
        None => "special tokens from tokenizer.json's template".to_string(),
        Some(s) => format!(
            "tokenizer_config.json: {} first, {} last",
            s.bos.as_deref().unwrap_or("nothing"),
            s.eos.as_deref().unwrap_or("nothing")
        ),
    };
    let padding = match config.family.text_padding() {
        clip_runtime::TextPadding::MaxLength => "to the context length",
        clip_runtime::TextPadding::Longest => "to the batch's longest",
    };
    Ok(format!(
        "padded {padding} with {:?} on the {side}; {specials}",
        settings.pad_token
    ))
}
