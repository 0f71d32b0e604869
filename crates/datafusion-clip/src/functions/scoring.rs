//! Scoring images against labels: the shared body of the six scoring
//! functions (`clip_classify`, `clip_scores`, `clip_tags` and their
//! `_embedding` twins), which differ only in their input and output.

use std::collections::HashMap;

use clip_runtime::{ClipModel, Embedding, ensemble, ranked, top_k};
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs};

use super::args::{
    RowEmbedding, check_arity_between, check_embedding_type, check_image_type, check_k_literal,
    check_k_type, check_threshold_literal, check_threshold_type, image_array, k_rows,
    stored_embeddings, threshold_rows,
};
use super::images::{embed_image_rows, usable};
use super::labels::{LabelSets, Labels, check_labels_literal, check_labels_type};
use super::results::{
    nullable_field, scores_array, scores_type, utf8_column, utf8_list_type, utf8_lists,
};
use crate::options::ClipOptions;
use crate::planning::PlanningContext;

/// One row's labels and their probabilities (`None` for a NULL result).
pub(crate) type RowScores<'l> = Option<(&'l [String], Vec<f32>)>;

/// Per-row probabilities over that row's labels.
pub(crate) fn score_rows<'l>(
    function: &str,
    model: &ClipModel,
    options: &ClipOptions,
    images: Option<&ArrayRef>,
    embeddings: &[RowEmbedding],
    labels: &'l LabelSets,
) -> Result<Vec<RowScores<'l>>> {
    let distinct = labels.distinct();
    if distinct.is_empty() {
        return Ok(vec![None; embeddings.len()]);
    }
    let texts: HashMap<&str, Embedding> = distinct
        .iter()
        .copied()
        .zip(
            model
                .embed_texts(&distinct)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?,
        )
        .collect();
    // A prompt ensemble's embedding, once per distinct prompt set.
    let mut ensembles: HashMap<&'l [String], Embedding> = HashMap::new();
    let mut last: Option<(&'l Labels, Vec<Embedding>)> = None;
    let scorer = options.scorer(model)?;
    embeddings
        .iter()
        .enumerate()
        .map(|(row, outcome)| {
            let Some(image) = usable(function, options, images, row, outcome)? else {
                return Ok(None);
            };
            let Some(row_labels) = labels.get(row) else {
                return Ok(None);
            };
            // A literal list is the same `Labels` for every row: its
            // embeddings are gathered once per batch, not once per row.
            if !last.as_ref().is_some_and(|(l, _)| std::ptr::eq(*l, row_labels)) {
                last = Some((row_labels, label_embeddings(row_labels, &texts, &mut ensembles)));
            }
            let Some((_, label_embeddings)) = &last else {
                return Ok(None);
            };
            if image.len() != model.dim() {
                return exec_err!(
                    "{function}: the embedding in row {row} has {} dimensions but clip.model embeds into {}",
                    image.len(),
                    model.dim()
                );
            }
            Ok(Some((
                row_labels.names.as_slice(),
                scorer.probabilities(image, label_embeddings),
            )))
        })
        .collect()
}

/// The text embedding of each of `labels`: a label's own, or its prompt
/// ensemble's (once per distinct prompt set, in `ensembles`).
fn label_embeddings<'l>(
    labels: &'l Labels,
    texts: &HashMap<&str, Embedding>,
    ensembles: &mut HashMap<&'l [String], Embedding>,
) -> Vec<Embedding> {
    match &labels.prompts {
        None => labels
            .names
            .iter()
            .filter_map(|l| texts.get(l.as_str()).cloned())
            .collect(),
        Some(prompt_sets) => prompt_sets
            .iter()
            .map(|prompts| {
                ensembles
                    .entry(prompts.as_slice())
                    .or_insert_with(|| {
                        let members: Vec<&[f32]> = prompts
                            .iter()
                            .filter_map(|p| texts.get(p.as_str()).map(|e| &e[..]))
                            .collect();
                        Embedding::from(ensemble(&members))
                    })
                    .clone()
            })
            .collect(),
    }
}

/// What the first argument of a scoring function is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScoreInput {
    /// Encoded image bytes, embedded by the vision tower.
    Image,
    /// A stored image embedding.
    Embedding,
}

/// What a scoring function returns.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScoreOutput {
    /// The top label (`Utf8`).
    TopLabel,
    /// Every label with its probability, highest first.
    Scores,
    /// The labels whose score reaches a threshold, highest first
    /// (`List<Utf8>`).
    Tags,
}

/// The shared body of the scoring functions, which differ only in their
/// input and output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scoring {
    pub name: &'static str,
    pub usage: &'static str,
    pub input: ScoreInput,
    pub output: ScoreOutput,
    /// What `SHOW FUNCTIONS` says of it.
    pub doc: super::Doc,
}

impl Scoring {
    pub(crate) fn coerce_types(
        &self,
        planning: &PlanningContext,
        arg_types: &[DataType],
    ) -> Result<Vec<DataType>> {
        let arity = match self.output {
            ScoreOutput::TopLabel => 2..=2,
            ScoreOutput::Scores => 2..=3,
            ScoreOutput::Tags => 3..=3,
        };
        check_arity_between(self.name, arg_types, arity, self.usage)?;
        match self.input {
            ScoreInput::Image => check_image_type(self.name, &arg_types[0])?,
            ScoreInput::Embedding => {
                check_embedding_type(self.name, &arg_types[0], planning.dim_if_known())?
            }
        }
        check_labels_type(self.name, &arg_types[1])?;
        match (self.output, arg_types.get(2)) {
            (ScoreOutput::Tags, Some(t)) => check_threshold_type(self.name, t)?,
            (_, Some(k)) => check_k_type(self.name, k)?,
            (_, None) => {}
        }
        Ok(arg_types.to_vec())
    }

    pub(crate) fn return_type(&self) -> DataType {
        match self.output {
            ScoreOutput::TopLabel => DataType::Utf8,
            ScoreOutput::Scores => scores_type(),
            ScoreOutput::Tags => utf8_list_type(),
        }
    }

    pub(crate) fn return_field(
        &self,
        planning: &PlanningContext,
        args: ReturnFieldArgs,
    ) -> Result<FieldRef> {
        planning.require_model(self.name)?;
        check_labels_literal(self.name, args.scalar_arguments.get(1).copied().flatten())?;
        let third = args.scalar_arguments.get(2).copied().flatten();
        match self.output {
            ScoreOutput::Tags => check_threshold_literal(self.name, third)?,
            _ => check_k_literal(self.name, third)?,
        }
        Ok(nullable_field(self.name, self.return_type()))
    }

    pub(crate) fn invoke(
        &self,
        planning: &PlanningContext,
        args: ScalarFunctionArgs,
    ) -> Result<ColumnarValue> {
        let options = ClipOptions::from_config(&args.config_options);
        let model = planning.handle.model(&options, self.name)?;
        let labels = LabelSets::from_arg(self.name, &args.args[1])?;
        let (images, embeddings) = match self.input {
            ScoreInput::Image => (
                image_array(&args.args[0]),
                embed_image_rows(&model, &options, &args.args[0], args.number_rows)?,
            ),
            ScoreInput::Embedding => (None, stored_embeddings(&args.args[0], args.number_rows)?),
        };
        let scored = score_rows(self.name, &model, &options, images, &embeddings, &labels)?;
        Ok(ColumnarValue::Array(match self.output {
            ScoreOutput::TopLabel => top_labels(&scored)?,
            ScoreOutput::Scores => score_lists(
                &scored,
                &k_rows(self.name, args.args.get(2), args.number_rows)?,
            )?,
            ScoreOutput::Tags => tag_lists(
                &scored,
                &threshold_rows(self.name, &args.args[2], args.number_rows)?,
            )?,
        }))
    }
}

/// The top label of each row.
pub(crate) fn top_labels(scored: &[RowScores<'_>]) -> Result<ArrayRef> {
    utf8_column(
        scored
            .iter()
            .map(|s| {
                s.as_ref().and_then(|(labels, probs)| {
                    clip_runtime::argmax(probs).map(|i| labels[i].as_str())
                })
            })
            .collect(),
    )
}

/// Each row's labels with their probabilities, highest first: all of them,
/// or that row's `k`.
pub(crate) fn score_lists(scored: &[RowScores<'_>], k: &[Option<usize>]) -> Result<ArrayRef> {
    let rows = scored.iter().zip(k).map(|(s, k)| {
        s.as_ref().map(|(labels, probs)| {
            let order = match k {
                Some(k) => top_k(probs, *k),
                None => ranked(probs),
            };
            order.into_iter().map(|i| (labels[i].as_str(), probs[i]))
        })
    });
    scores_array(rows)
}

/// Each row's labels whose score reaches that row's threshold, highest
/// first (an empty list when none does).
pub(crate) fn tag_lists(scored: &[RowScores<'_>], thresholds: &[f32]) -> Result<ArrayRef> {
    let rows = scored.iter().zip(thresholds).map(|(s, &t)| {
        s.as_ref().map(|(labels, probs)| {
            ranked(probs)
                .into_iter()
                .take_while(move |&i| probs[i] >= t)
                .map(|i| labels[i].as_str())
        })
    });
    utf8_lists(rows)
}
