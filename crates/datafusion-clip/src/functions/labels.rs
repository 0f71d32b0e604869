//! The label-list argument of the scoring functions: its planning-time
//! checks, its limits, and the per-batch reader ([`LabelSets`]).

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::ColumnarValue;

/// How to write a label list, for error messages.
pub(crate) const LABELS_HINT: &str = "pass a list literal such as ['a photo of a cat', 'a photo of a dog'] or a list-of-strings column";

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

    pub(crate) fn distinct(&self) -> Vec<&str> {
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
}
