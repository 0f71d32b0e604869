//! Reading the functions' arguments: the checks made at planning time (arity,
//! types) and the per-batch readers of image bytes and stored embeddings
//! (label lists: `labels.rs`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::ColumnarValue;

use clip_runtime::{Embedding, ImageError};

pub(crate) fn check_arity(
    function: &str,
    args: &[DataType],
    expected: usize,
    usage: &str,
) -> Result<()> {
    check_arity_between(function, args, expected..=expected, usage)
}

/// The call has between `expected.start()` and `expected.end()` arguments.
pub(crate) fn check_arity_between(
    function: &str,
    args: &[DataType],
    expected: std::ops::RangeInclusive<usize>,
    usage: &str,
) -> Result<()> {
    if !expected.contains(&args.len()) {
        let (low, high) = (*expected.start(), *expected.end());
        let count = if low == high {
            low.to_string()
        } else {
            format!("{low} or {high}")
        };
        return plan_err!(
            "{function} takes {count} argument{}, got {}. Write {usage}",
            if high == 1 { "" } else { "s" },
            args.len()
        );
    }
    Ok(())
}

/// How to write `k`, for error messages.
const K_HINT: &str = "give the number of labels to keep, a positive integer such as 5";

/// The optional `k` argument (how many labels to keep) must be an integer.
pub(crate) fn check_k_type(function: &str, dt: &DataType) -> Result<()> {
    match dt {
        dt if dt.is_integer() => Ok(()),
        DataType::Null => {
            plan_err!("{function}: k is NULL; {K_HINT}, or leave it out for every label")
        }
        other => plan_err!("{function}: k must be an integer, got {other}; {K_HINT}"),
    }
}

/// A literal `k` must be at least 1.
pub(crate) fn check_k_literal(function: &str, scalar: Option<&ScalarValue>) -> Result<()> {
    match scalar.map(|s| s.cast_to(&DataType::Int64)).transpose()? {
        Some(ScalarValue::Int64(None)) => {
            plan_err!("{function}: k is NULL; {K_HINT}, or leave it out for every label")
        }
        Some(ScalarValue::Int64(Some(k))) if k < 1 => {
            plan_err!("{function}: k is {k}; {K_HINT}")
        }
        _ => Ok(()),
    }
}

/// Each row's `k` (`None`: every label). A per-row `k` column below 1 or
/// NULL fails the batch, as a literal one fails planning.
pub(crate) fn k_rows(
    function: &str,
    arg: Option<&ColumnarValue>,
    rows: usize,
) -> Result<Vec<Option<usize>>> {
    let Some(arg) = arg else {
        return Ok(vec![None; rows]);
    };
    let values = cast(&arg.to_array(rows)?, &DataType::Int64)?;
    let values = values.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    (0..rows)
        .map(|row| match (values.is_null(row), values.value(row)) {
            (true, _) => exec_err!("{function}: k is NULL in row {row}; {K_HINT}"),
            (false, k) if k < 1 => exec_err!("{function}: k is {k} in row {row}; {K_HINT}"),
            (false, k) => Ok(Some(usize::try_from(k).unwrap_or(usize::MAX))),
        })
        .collect()
}

/// How to write a threshold, for error messages.
const THRESHOLD_HINT: &str = "scores are probabilities, so give a number from 0 to 1 such as 0.3";

/// The `threshold` argument of `clip_tags` must be a number.
pub(crate) fn check_threshold_type(function: &str, dt: &DataType) -> Result<()> {
    match dt {
        dt if dt.is_numeric() => Ok(()),
        DataType::Null => plan_err!("{function}: threshold is NULL; {THRESHOLD_HINT}"),
        other => plan_err!("{function}: threshold must be a number, got {other}; {THRESHOLD_HINT}"),
    }
}

fn threshold_problem(t: f64) -> Option<&'static str> {
    if t.is_nan() {
        Some("is not a number")
    } else if !(0.0..=1.0).contains(&t) {
        Some("is out of range")
    } else {
        None
    }
}

/// A literal threshold must be from 0 to 1.
pub(crate) fn check_threshold_literal(function: &str, scalar: Option<&ScalarValue>) -> Result<()> {
    match scalar.map(|s| s.cast_to(&DataType::Float64)).transpose()? {
        Some(ScalarValue::Float64(None)) => {
            plan_err!("{function}: threshold is NULL; {THRESHOLD_HINT}")
        }
        Some(ScalarValue::Float64(Some(t))) => match threshold_problem(t) {
            Some(problem) => plan_err!("{function}: threshold {t} {problem}; {THRESHOLD_HINT}"),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Each row's threshold. A per-row column out of range or NULL fails the
/// batch, as a literal one fails planning.
pub(crate) fn threshold_rows(function: &str, arg: &ColumnarValue, rows: usize) -> Result<Vec<f32>> {
    let values = cast(&arg.to_array(rows)?, &DataType::Float64)?;
    let values = values.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    (0..rows)
        .map(|row| {
            if values.is_null(row) {
                return exec_err!("{function}: threshold is NULL in row {row}; {THRESHOLD_HINT}");
            }
            let t = values.value(row);
            match threshold_problem(t) {
                Some(problem) => {
                    exec_err!("{function}: threshold {t} in row {row} {problem}; {THRESHOLD_HINT}")
                }
                None => Ok(t as f32),
            }
        })
        .collect()
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

/// The image argument's array, when it is one, for naming a failing row's
/// file (see [`image_source`]).
pub(crate) fn image_array(arg: &ColumnarValue) -> Option<&ArrayRef> {
    match arg {
        ColumnarValue::Array(a) => Some(a),
        ColumnarValue::Scalar(_) => None,
    }
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
