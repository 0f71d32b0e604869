//! What the `clip_*` functions share: argument checks at planning time,
//! reading image and label arguments, scoring, and building results.

use std::collections::HashMap;
use std::sync::Arc;

use clip_runtime::{ClipModel, Embedding, ImageError, label_probabilities, ranked};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, ListArray, StringArray, StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err, resources_err};
use datafusion::logical_expr::{ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs};

use crate::image_origin::image_source;
use crate::options::{ClipOptions, OnError};
use crate::planning::PlanningContext;

/// How to write a label list, for error messages.
pub(crate) const LABELS_HINT: &str = "pass a list literal such as ['a photo of a cat', 'a photo of a dog'] or a list-of-strings column";

/// The type of `clip_scores` results: `List<Struct<label: Utf8, score: Float32>>`.
pub fn scores_type() -> DataType {
    DataType::List(score_item_field())
}

fn score_item_field() -> FieldRef {
    Arc::new(Field::new_list_field(
        DataType::Struct(score_fields()),
        true,
    ))
}

fn score_fields() -> Fields {
    Fields::from(vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ])
}

/// The type of embeddings: `FixedSizeList<Float32, dim>`.
pub(crate) fn embedding_type(dim: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        dim as i32,
    )
}

pub(crate) fn check_arity(
    function: &str,
    args: &[DataType],
    expected: usize,
    usage: &str,
) -> Result<()> {
    if args.len() != expected {
        return plan_err!(
            "{function} takes {expected} argument{}, got {}. Write {usage}",
            if expected == 1 { "" } else { "s" },
            args.len()
        );
    }
    Ok(())
}

/// The image argument must be binary.
pub(crate) fn check_image_type(function: &str, dt: &DataType) -> Result<()> {
    match dt {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null => Ok(()),
        other => plan_err!(
            "{function} expects the image as Binary, LargeBinary or BinaryView (encoded file bytes), \
             got {other}. Read images with an IMAGE table or read_images('folder/') and pass its \
             `image` column; for a column of file paths, read the files instead of passing the paths"
        ),
    }
}

/// The labels argument must be a list of strings.
pub(crate) fn check_labels_type(function: &str, dt: &DataType) -> Result<()> {
    let item = match dt {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => f.data_type(),
        DataType::Null => return plan_err!("{function}: the label list is NULL; {LABELS_HINT}"),
        other => {
            return plan_err!(
                "{function}: the labels must be a list of strings, got {other}; {LABELS_HINT}"
            );
        }
    };
    match item {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(()),
        DataType::Null => plan_err!("{function}: the label list is empty; {LABELS_HINT}"),
        other => plan_err!(
            "{function}: the labels must be strings, got a list of {other}; {LABELS_HINT}"
        ),
    }
}

/// The most labels one list may hold. ImageNet-21k has 21,843 classes; a
/// list far longer is a mistake (a column passed where a literal was meant,
/// say), and each label costs a text-tower run.
pub const MAX_LABELS: usize = 100_000;

/// The longest label, in bytes. The text tower reads 77 tokens (CLIP) or 64
/// (SigLIP), about 300 characters; the rest is cut off unread.
pub const MAX_LABEL_BYTES: usize = 4096;

/// Refuses a label list over [`MAX_LABELS`] or with a label over
/// [`MAX_LABEL_BYTES`], saying what to write instead.
fn check_label_limits(function: &str, labels: &[String]) -> std::result::Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{function}: {} labels in one list, more than the {MAX_LABELS} it takes; \
             classify against fewer labels (or in several queries)",
            labels.len()
        ));
    }
    if let Some(long) = labels.iter().find(|l| l.len() > MAX_LABEL_BYTES) {
        return Err(format!(
            "{function}: a label of {} bytes (starting {:?}), more than the {MAX_LABEL_BYTES} \
             it takes; the model reads only its first 77 tokens anyway, so shorten it",
            long.len(),
            long.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}

/// A literal label list must be non-empty, free of NULLs and within
/// [`MAX_LABELS`] / [`MAX_LABEL_BYTES`].
pub(crate) fn check_labels_literal(function: &str, scalar: Option<&ScalarValue>) -> Result<()> {
    let Some(scalar) = scalar else {
        return Ok(());
    };
    if scalar.is_null() {
        return plan_err!("{function}: the label list is NULL; {LABELS_HINT}");
    }
    let Some(labels) = scalar_labels(scalar)? else {
        return plan_err!("{function}: the label list contains NULL; {LABELS_HINT}");
    };
    if labels.is_empty() {
        return plan_err!("{function}: the label list is empty; {LABELS_HINT}");
    }
    check_label_limits(function, &labels).map_err(DataFusionError::Plan)
}

/// The embedding argument must be a list of floats.
pub(crate) fn check_embedding_type(
    function: &str,
    dt: &DataType,
    model_dim: Option<usize>,
) -> Result<()> {
    let (item, size) = match dt {
        DataType::FixedSizeList(f, n) => (f.data_type(), Some(*n as usize)),
        DataType::List(f) | DataType::LargeList(f) => (f.data_type(), None),
        DataType::Null => return Ok(()),
        other => {
            return plan_err!(
                "{function} expects an image embedding (a list of floats, as clip_image_embedding returns), got {other}"
            );
        }
    };
    if !matches!(
        item,
        DataType::Float32 | DataType::Float64 | DataType::Float16
    ) {
        return plan_err!("{function} expects a list of floats, got a list of {item}");
    }
    if let (Some(size), Some(dim)) = (size, model_dim)
        && size != dim
    {
        return plan_err!(
            "{function}: the embedding has {size} dimensions but clip.model embeds into {dim}; \
             were the embeddings made with another model?"
        );
    }
    Ok(())
}

fn strings(values: &ArrayRef) -> Result<Option<Vec<String>>> {
    let values = cast(values, &DataType::Utf8)?;
    let values = values.as_string::<i32>();
    if values.null_count() > 0 {
        return Ok(None);
    }
    Ok(Some(
        values
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect(),
    ))
}

/// Labels of a list scalar; `None` when it holds a NULL label.
fn scalar_labels(scalar: &ScalarValue) -> Result<Option<Vec<String>>> {
    let list = match scalar {
        ScalarValue::List(a) => a.value(0),
        ScalarValue::LargeList(a) => a.value(0),
        ScalarValue::FixedSizeList(a) => a.value(0),
        other => return exec_err!("expected a label list, got {other:?}"),
    };
    strings(&list)
}

/// Label sets: one for every row (a literal) or one per row (a column).
pub(crate) enum LabelSets {
    /// The same labels for all rows.
    Same(Option<Vec<String>>),
    /// Each row's own labels; `None` for a NULL, empty or NULL-holding list.
    PerRow(Vec<Option<Vec<String>>>),
}

impl LabelSets {
    /// The labels of a call's argument. A list over the limits (a per-row
    /// list column is only seen here, not at planning) fails the query.
    pub(crate) fn from_arg(function: &str, arg: &ColumnarValue) -> Result<Self> {
        let sets = Self::read(arg)?;
        let lists: Box<dyn Iterator<Item = &Vec<String>>> = match &sets {
            Self::Same(l) => Box::new(l.iter()),
            Self::PerRow(rows) => Box::new(rows.iter().flatten()),
        };
        for labels in lists {
            check_label_limits(function, labels).map_err(DataFusionError::Execution)?;
        }
        Ok(sets)
    }

    fn read(arg: &ColumnarValue) -> Result<Self> {
        match arg {
            ColumnarValue::Scalar(s) if s.is_null() => Ok(Self::Same(None)),
            ColumnarValue::Scalar(s) => Ok(Self::Same(scalar_labels(s)?.filter(|l| !l.is_empty()))),
            ColumnarValue::Array(a) => {
                let row = |i: usize| -> Result<Option<Vec<String>>> {
                    if a.is_null(i) {
                        return Ok(None);
                    }
                    let values = match a.data_type() {
                        DataType::List(_) => a.as_list::<i32>().value(i),
                        DataType::LargeList(_) => a.as_list::<i64>().value(i),
                        DataType::FixedSizeList(_, _) => a.as_fixed_size_list().value(i),
                        other => return exec_err!("expected a list of labels, got {other}"),
                    };
                    Ok(strings(&values)?.filter(|l| !l.is_empty()))
                };
                Ok(Self::PerRow((0..a.len()).map(row).collect::<Result<_>>()?))
            }
        }
    }

    pub(crate) fn get(&self, row: usize) -> Option<&[String]> {
        match self {
            Self::Same(l) => l.as_deref(),
            Self::PerRow(rows) => rows.get(row).and_then(|l| l.as_deref()),
        }
    }

    fn distinct(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        let all: Box<dyn Iterator<Item = &String>> = match self {
            Self::Same(l) => Box::new(l.iter().flatten()),
            Self::PerRow(rows) => Box::new(rows.iter().flatten().flatten()),
        };
        all.map(String::as_str)
            .filter(|s| seen.insert(*s))
            .collect()
    }
}

/// A per-row outcome: NULL input, an embedding, or why there is none.
pub(crate) type RowEmbedding = Option<std::result::Result<Embedding, ImageError>>;

/// Reads a binary argument as per-row byte slices (`None` for NULL).
pub(crate) fn binary_rows(array: &dyn Array) -> Result<Vec<Option<&[u8]>>> {
    Ok(match array.data_type() {
        DataType::Binary => array.as_binary::<i32>().iter().collect(),
        DataType::LargeBinary => array.as_binary::<i64>().iter().collect(),
        DataType::BinaryView => array.as_binary_view().iter().collect(),
        DataType::Null => vec![None; array.len()],
        other => return exec_err!("expected binary image bytes, got {other}"),
    })
}

/// Embeds every row's image. A scalar image is embedded once and shared.
pub(crate) fn embed_image_rows(
    model: &ClipModel,
    options: &ClipOptions,
    arg: &ColumnarValue,
    rows: usize,
) -> Result<Vec<RowEmbedding>> {
    let (array, broadcast) = match arg {
        ColumnarValue::Array(a) => (Arc::clone(a), false),
        ColumnarValue::Scalar(s) => (s.to_array_of_size(1)?, true),
    };
    let bytes = binary_rows(array.as_ref())?;
    let present: Vec<&[u8]> = bytes.iter().flatten().copied().collect();
    let mut embedded = model
        .embed_images(&present, options.batch_size, &options.limits())
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
        .into_iter();
    let per_input: Vec<RowEmbedding> = bytes
        .iter()
        .map(|b| b.and_then(|_| embedded.next()))
        .collect();
    Ok(if broadcast {
        vec![per_input.into_iter().next().flatten(); rows]
    } else {
        per_input
    })
}

/// The image argument's array, when it is one, for naming a failing row's
/// file (see [`image_source`]).
pub(crate) fn image_array(arg: &ColumnarValue) -> Option<&ArrayRef> {
    match arg {
        ColumnarValue::Array(a) => Some(a),
        ColumnarValue::Scalar(_) => None,
    }
}

/// Applies `clip.on_error` to one row's outcome. `images` is the image
/// argument the outcome came from, if any: a strict-mode error names the
/// row's file when it can be traced.
pub(crate) fn usable<'a>(
    function: &str,
    options: &ClipOptions,
    images: Option<&ArrayRef>,
    row: usize,
    outcome: &'a RowEmbedding,
) -> Result<Option<&'a Embedding>> {
    match outcome {
        None => Ok(None),
        Some(Ok(e)) => Ok(Some(e)),
        Some(Err(e)) => match options.on_error {
            OnError::Null => Ok(None),
            OnError::Fail => {
                let image = match images.and_then(|a| image_source(a.as_ref(), row)) {
                    Some(url) => format!("{url} (row {row} of its batch)"),
                    None => format!("in row {row} of its batch"),
                };
                exec_err!(
                    "{function}: the image {image} cannot be used: {e}. \
                     SET clip.on_error = 'null' to get NULL for such images instead, and \
                     clip_image_error(image) for the reason"
                )
            }
        },
    }
}

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
    let scale = options.logit_scale(model)?;
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
            let label_embeddings: Vec<&Embedding> = row_labels.iter().filter_map(|l| texts.get(l.as_str())).collect();
            if image.len() != model.dim() {
                return exec_err!(
                    "{function}: the embedding in row {row} has {} dimensions but clip.model embeds into {}",
                    image.len(),
                    model.dim()
                );
            }
            Ok(Some((row_labels, label_probabilities(image, &label_embeddings, scale))))
        })
        .collect()
}

/// A `Utf8` column of `values`, or a resources error where their bytes would
/// pass the 2 GiB its 32-bit offsets hold (building it regardless panics).
fn utf8_column(values: Vec<Option<&str>>) -> Result<ArrayRef> {
    let total: usize = values.iter().flatten().map(|v| v.len()).sum();
    if i32::try_from(total).is_err() {
        return resources_err!(
            "one output batch's label text totals {total} bytes, more than a Utf8 column \
             holds (2 GiB): lower clip.batch_size (or datafusion.execution.batch_size for \
             Parquet), or use fewer or shorter labels"
        );
    }
    Ok(Arc::new(StringArray::from(values)))
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

/// Every label with its probability, highest first.
pub(crate) fn score_lists(scored: &[RowScores<'_>]) -> Result<ArrayRef> {
    let rows = scored.iter().map(|s| {
        s.as_ref().map(|(labels, probs)| {
            ranked(probs)
                .into_iter()
                .map(|i| (labels[i].as_str(), probs[i]))
        })
    });
    scores_array(rows)
}

/// Builds a `clip_scores`-typed column (`List<Struct<label, score>>`) from
/// per-row `(label, score)` entries in the order given; `None` is a NULL row.
pub fn scores_array<'a, R, E>(rows: R) -> Result<ArrayRef>
where
    R: IntoIterator<Item = Option<E>>,
    E: IntoIterator<Item = (&'a str, f32)>,
{
    let mut offsets = vec![0i32];
    let mut valid = Vec::new();
    let mut labels: Vec<&str> = Vec::new();
    let mut scores: Vec<f32> = Vec::new();
    for row in rows {
        valid.push(row.is_some());
        for (label, score) in row.into_iter().flatten() {
            labels.push(label);
            scores.push(score);
        }
        let Ok(end) = i32::try_from(labels.len()) else {
            return resources_err!(
                "one output batch holds {} (label, score) entries, more than a List \
                 column holds: lower clip.batch_size, or use fewer labels",
                labels.len()
            );
        };
        offsets.push(end);
    }
    let structs = StructArray::try_new(
        score_fields(),
        vec![
            utf8_column(labels.into_iter().map(Some).collect())?,
            Arc::new(Float32Array::from(scores)),
        ],
        None,
    )?;
    Ok(Arc::new(ListArray::try_new(
        score_item_field(),
        OffsetBuffer::new(offsets.into()),
        Arc::new(structs),
        Some(NullBuffer::from(valid)),
    )?))
}

/// A `FixedSizeList<Float32, dim>` of per-row embeddings (NULL where absent).
pub(crate) fn embedding_array(rows: &[Option<&Embedding>], dim: usize) -> Result<ArrayRef> {
    let mut values = Vec::with_capacity(rows.len() * dim);
    for row in rows {
        match row {
            Some(e) if e.len() == dim => values.extend_from_slice(e),
            Some(e) => return exec_err!("embedding has {} dimensions, expected {dim}", e.len()),
            None => values.extend(std::iter::repeat_n(0.0, dim)),
        }
    }
    let DataType::FixedSizeList(field, _) = embedding_type(dim) else {
        unreachable!("embedding_type is a fixed-size list")
    };
    let nulls = NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<_>>());
    Ok(Arc::new(FixedSizeListArray::try_new(
        field,
        dim as i32,
        Arc::new(Float32Array::from(values)),
        Some(nulls),
    )?))
}

/// Reads stored embeddings (any float list type) as normalised vectors.
pub(crate) fn stored_embeddings(arg: &ColumnarValue, rows: usize) -> Result<Vec<RowEmbedding>> {
    let (array, broadcast) = match arg {
        ColumnarValue::Array(a) => (Arc::clone(a), false),
        ColumnarValue::Scalar(s) => (s.to_array_of_size(1)?, true),
    };
    let row = |i: usize| -> Result<RowEmbedding> {
        if array.is_null(i) {
            return Ok(None);
        }
        let values = match array.data_type() {
            DataType::FixedSizeList(_, _) => array.as_fixed_size_list().value(i),
            DataType::List(_) => array.as_list::<i32>().value(i),
            DataType::LargeList(_) => array.as_list::<i64>().value(i),
            DataType::Null => return Ok(None),
            other => return exec_err!("expected an embedding list, got {other}"),
        };
        let values = cast(&values, &DataType::Float32)?;
        let values = values.as_primitive::<datafusion::arrow::datatypes::Float32Type>();
        if values.null_count() > 0 {
            return Ok(None);
        }
        let mut v: Vec<f32> = values.values().to_vec();
        clip_runtime::l2_normalize(&mut v);
        Ok(Some(Ok(Embedding::from(v))))
    };
    let per_input: Vec<RowEmbedding> = (0..array.len()).map(row).collect::<Result<_>>()?;
    Ok(if broadcast {
        vec![per_input.into_iter().next().flatten(); rows]
    } else {
        per_input
    })
}

/// The nullable return field every function uses.
pub(crate) fn nullable_field(name: &str, dt: DataType) -> FieldRef {
    Arc::new(Field::new(name, dt, true))
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
}

/// The shared body of `clip_classify`, `clip_scores`,
/// `clip_classify_embedding` and `clip_scores_embedding`, which differ only
/// in their input and output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scoring {
    pub name: &'static str,
    pub usage: &'static str,
    pub input: ScoreInput,
    pub output: ScoreOutput,
}

impl Scoring {
    pub(crate) fn coerce_types(
        &self,
        planning: &PlanningContext,
        arg_types: &[DataType],
    ) -> Result<Vec<DataType>> {
        check_arity(self.name, arg_types, 2, self.usage)?;
        match self.input {
            ScoreInput::Image => check_image_type(self.name, &arg_types[0])?,
            ScoreInput::Embedding => {
                check_embedding_type(self.name, &arg_types[0], planning.dim_if_known())?
            }
        }
        check_labels_type(self.name, &arg_types[1])?;
        Ok(arg_types.to_vec())
    }

    pub(crate) fn return_type(&self) -> DataType {
        match self.output {
            ScoreOutput::TopLabel => DataType::Utf8,
            ScoreOutput::Scores => scores_type(),
        }
    }

    pub(crate) fn return_field(
        &self,
        planning: &PlanningContext,
        args: ReturnFieldArgs,
    ) -> Result<FieldRef> {
        planning.require_model(self.name)?;
        check_labels_literal(self.name, args.scalar_arguments.get(1).copied().flatten())?;
        Ok(nullable_field(self.name, self.return_type()))
    }

    pub(crate) fn invoke(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let options = ClipOptions::from_config(&args.config_options);
        let model = options.model(self.name)?;
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
            ScoreOutput::Scores => score_lists(&scored)?,
        }))
    }
}

/// Defines a scoring function's struct and its `ScalarUDFImpl`, delegating
/// to a [`Scoring`] constant: the four scoring functions differ only there.
macro_rules! scoring_udf {
    ($(#[$doc:meta])* $name:ident, $scoring:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name {
            signature: datafusion::logical_expr::Signature,
            planning: $crate::planning::PlanningContext,
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $name {
            /// A new instance; `register_all` gives it the session's config.
            pub fn new() -> Self {
                Self {
                    signature: datafusion::logical_expr::Signature::user_defined(
                        datafusion::logical_expr::Volatility::Stable,
                    ),
                    planning: $crate::planning::PlanningContext::default(),
                }
            }
        }

        impl datafusion::logical_expr::ScalarUDFImpl for $name {
            fn name(&self) -> &str {
                $scoring.name
            }

            fn signature(&self) -> &datafusion::logical_expr::Signature {
                &self.signature
            }

            fn coerce_types(
                &self,
                arg_types: &[datafusion::arrow::datatypes::DataType],
            ) -> datafusion::common::Result<Vec<datafusion::arrow::datatypes::DataType>> {
                $scoring.coerce_types(&self.planning, arg_types)
            }

            fn return_type(
                &self,
                _arg_types: &[datafusion::arrow::datatypes::DataType],
            ) -> datafusion::common::Result<datafusion::arrow::datatypes::DataType> {
                Ok($scoring.return_type())
            }

            fn return_field_from_args(
                &self,
                args: datafusion::logical_expr::ReturnFieldArgs,
            ) -> datafusion::common::Result<datafusion::arrow::datatypes::FieldRef> {
                $scoring.return_field(&self.planning, args)
            }

            fn with_updated_config(
                &self,
                config: &datafusion::config::ConfigOptions,
            ) -> Option<datafusion::logical_expr::ScalarUDF> {
                Some(datafusion::logical_expr::ScalarUDF::new_from_impl(Self {
                    planning: $crate::planning::PlanningContext::from_config(config),
                    ..self.clone()
                }))
            }

            fn invoke_with_args(
                &self,
                args: datafusion::logical_expr::ScalarFunctionArgs,
            ) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
                $scoring.invoke(args)
            }
        }
    };
}

pub(crate) use scoring_udf;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn literal(labels: Vec<String>) -> ScalarValue {
        ScalarValue::List(ScalarValue::new_list_nullable(
            &labels
                .into_iter()
                .map(|l| ScalarValue::Utf8(Some(l)))
                .collect::<Vec<_>>(),
            &DataType::Utf8,
        ))
    }

    /// Issue 14, item 9: absurd label lists are refused at planning time
    /// (literals) or when the batch runs (a per-row list column), with a
    /// message, never a panic.
    #[test]
    fn label_lists_over_the_limits_are_refused() {
        let long = "x".repeat(MAX_LABEL_BYTES + 1);
        let err = check_labels_literal("clip_classify", Some(&literal(vec![long.clone()])))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a label of 4097 bytes"), "{err}");
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| i.to_string()).collect();
        let err = check_labels_literal("clip_classify", Some(&literal(many)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("100001 labels in one list"), "{err}");
        let fine: Vec<String> = (0..1000).map(|i| format!("label {i}")).collect();
        assert!(check_labels_literal("clip_classify", Some(&literal(fine))).is_ok());

        let column =
            ScalarValue::iter_to_array([literal(vec!["a".into()]), literal(vec![long])]).unwrap();
        let err = LabelSets::from_arg("clip_scores", &ColumnarValue::Array(column))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("a label of 4097 bytes"), "{err}");
    }

    /// Issue 14, item 9: an output batch whose label text passes 2 GiB is an
    /// error, not an offset-overflow panic (the 1 MiB label is one string,
    /// referenced 2,049 times, so the test allocates almost nothing).
    #[test]
    fn outputs_over_2_gib_of_labels_fail_without_panicking() {
        let label = "y".repeat(1 << 20);
        let rows: Vec<Option<&str>> = vec![Some(label.as_str()); 2049];
        let err = utf8_column(rows).unwrap_err().to_string();
        assert!(err.contains("more than a Utf8 column holds"), "{err}");
        let scores = scores_array((0..2049).map(|_| Some([(label.as_str(), 0.5f32)])))
            .unwrap_err()
            .to_string();
        assert!(scores.contains("more than a Utf8 column holds"), "{scores}");
        assert_eq!(utf8_column(vec![Some("a"), None]).unwrap().len(), 2);
    }
}
