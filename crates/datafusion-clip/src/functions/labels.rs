//! The label-list argument of the scoring functions: its planning-time
//! checks, its limits, and the per-batch reader ([`LabelSets`]).
//!
//! A label list is a list of strings (each label is its own prompt), or a
//! list of `{label, prompts}` structs (`clip_prompts` makes them): a prompt
//! ensemble, where the label's text embedding is the mean of its prompts'
//! normalised embeddings, normalised again, as the CLIP paper does.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::ColumnarValue;

/// How to write a label list, for error messages.
pub(crate) const LABELS_HINT: &str = "pass a list literal such as ['a photo of a cat', 'a photo of a dog'] or a list-of-strings column, or for several prompts per label clip_prompts(['cat', 'dog'], ['a photo of a {}', 'a drawing of a {}'])";

fn is_string(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

pub(crate) fn is_string_list(dt: &DataType) -> bool {
    matches!(dt, DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) if is_string(f.data_type()))
}

/// The labels argument must be a list of strings, or of `{label: string,
/// prompts: list of strings}` structs.
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
        dt if is_string(dt) => Ok(()),
        DataType::Struct(fields)
            if fields.len() == 2
                && fields
                    .find("label")
                    .is_some_and(|(_, f)| is_string(f.data_type()))
                && fields
                    .find("prompts")
                    .is_some_and(|(_, f)| is_string_list(f.data_type())) =>
        {
            Ok(())
        }
        DataType::Struct(fields) => plan_err!(
            "{function}: a label struct must have exactly the fields label (a string) and \
             prompts (a list of strings), got {}; {LABELS_HINT}",
            fields
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DataType::Null => plan_err!("{function}: the label list is empty; {LABELS_HINT}"),
        other => plan_err!(
            "{function}: the labels must be strings, got a list of {other}; {LABELS_HINT}"
        ),
    }
}

/// One list of labels: the names the output shows and, for a prompt
/// ensemble, each label's prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Labels {
    /// What the output calls each label.
    pub(crate) names: Vec<String>,
    /// Each label's prompts; `None`: each name is its own only prompt.
    pub(crate) prompts: Option<Vec<Vec<String>>>,
}

impl Labels {
    fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every text the text tower must embed for this list.
    fn texts(&self) -> Box<dyn Iterator<Item = &String> + '_> {
        match &self.prompts {
            None => Box::new(self.names.iter()),
            Some(p) => Box::new(p.iter().flatten()),
        }
    }
}

/// The most labels one list may hold. ImageNet-21k has 21,843 classes; a
/// list far longer is a mistake (a column passed where a literal was meant,
/// say), and each label costs a text-tower run.
pub const MAX_LABELS: usize = 100_000;

/// The longest label, in bytes. The text tower reads 77 tokens (CLIP) or 64
/// (SigLIP), about 300 characters; the rest is cut off unread.
pub const MAX_LABEL_BYTES: usize = 4096;

/// Refuses a label list over [`MAX_LABELS`] (labels, or prompts in all)
/// or with a label or prompt over [`MAX_LABEL_BYTES`], saying what to
/// write instead.
fn check_label_limits(function: &str, labels: &Labels) -> std::result::Result<(), String> {
    let count = labels.texts().count().max(labels.names.len());
    if count > MAX_LABELS {
        return Err(format!(
            "{function}: {count} labels in one list, more than the {MAX_LABELS} it takes; \
             classify against fewer labels (or in several queries)"
        ));
    }
    if let Some(long) = labels
        .names
        .iter()
        .chain(labels.texts())
        .find(|l| l.len() > MAX_LABEL_BYTES)
    {
        return Err(format!(
            "{function}: a label of {} bytes (starting {:?}), more than the {MAX_LABEL_BYTES} \
             it takes; the model reads only its first 77 tokens anyway, so shorten it",
            long.len(),
            long.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}

/// A literal label list must be non-empty, free of NULLs, give every label
/// a prompt, and stay within [`MAX_LABELS`] / [`MAX_LABEL_BYTES`].
pub(crate) fn check_labels_literal(function: &str, scalar: Option<&ScalarValue>) -> Result<()> {
    let Some(scalar) = scalar else {
        return Ok(());
    };
    if scalar.is_null() {
        return plan_err!("{function}: the label list is NULL; {LABELS_HINT}");
    }
    let labels = match scalar_labels(scalar)? {
        Err(problem) => return plan_err!("{function}: {problem}; {LABELS_HINT}"),
        Ok(None) => return plan_err!("{function}: the label list contains NULL; {LABELS_HINT}"),
        Ok(Some(labels)) => labels,
    };
    if labels.is_empty() {
        return plan_err!("{function}: the label list is empty; {LABELS_HINT}");
    }
    check_label_limits(function, &labels).map_err(DataFusionError::Plan)
}

pub(crate) fn strings(values: &ArrayRef) -> Result<Option<Vec<String>>> {
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

/// The items of a list array's row.
pub(crate) fn list_row(list: &dyn Array, row: usize) -> Result<ArrayRef> {
    Ok(match list.data_type() {
        DataType::List(_) => list.as_list::<i32>().value(row),
        DataType::LargeList(_) => list.as_list::<i64>().value(row),
        DataType::FixedSizeList(_, _) => list.as_fixed_size_list().value(row),
        other => return exec_err!("expected a list of labels, got {other}"),
    })
}

/// One label list from its items: `Ok(None)` when it holds a NULL (the row
/// gets NULL), `Err` for a label with no prompts (a mistake, not data).
type Read = std::result::Result<Option<Labels>, String>;

fn read_labels(values: &ArrayRef) -> Result<Read> {
    let DataType::Struct(_) = values.data_type() else {
        return Ok(Ok(strings(values)?.map(|names| Labels {
            names,
            prompts: None,
        })));
    };
    let structs = values.as_struct();
    if structs.null_count() > 0 {
        return Ok(Ok(None));
    }
    let (Some(names), Some(prompt_lists)) = (
        structs.column_by_name("label"),
        structs.column_by_name("prompts"),
    ) else {
        return exec_err!("a label struct needs the fields label and prompts");
    };
    let Some(names) = strings(names)? else {
        return Ok(Ok(None));
    };
    let mut prompts = Vec::with_capacity(names.len());
    for (row, name) in names.iter().enumerate() {
        if prompt_lists.is_null(row) {
            return Ok(Err(format!("label {name:?} has NULL prompts")));
        }
        match strings(&list_row(prompt_lists.as_ref(), row)?)? {
            None => return Ok(Err(format!("label {name:?} has a NULL prompt"))),
            Some(p) if p.is_empty() => {
                return Ok(Err(format!(
                    "label {name:?} has an empty prompt list: give it at least one prompt"
                )));
            }
            Some(p) => prompts.push(p),
        }
    }
    Ok(Ok(Some(Labels {
        names,
        prompts: Some(prompts),
    })))
}

/// Labels of a list scalar.
fn scalar_labels(scalar: &ScalarValue) -> Result<Read> {
    let list = match scalar {
        ScalarValue::List(a) => a.value(0),
        ScalarValue::LargeList(a) => a.value(0),
        ScalarValue::FixedSizeList(a) => a.value(0),
        other => return exec_err!("expected a label list, got {other:?}"),
    };
    read_labels(&list)
}

/// Label sets: one for every row (a literal) or one per row (a column).
pub(crate) enum LabelSets {
    /// The same labels for all rows.
    Same(Option<Labels>),
    /// Each row's own labels; `None` for a NULL, empty or NULL-holding list.
    PerRow(Vec<Option<Labels>>),
}

impl LabelSets {
    /// The labels of a call's argument. A list over the limits, or a label
    /// without prompts (a per-row list column is only seen here, not at
    /// planning), fails the query.
    pub(crate) fn from_arg(function: &str, arg: &ColumnarValue) -> Result<Self> {
        let sets = Self::read(function, arg)?;
        let lists: Box<dyn Iterator<Item = &Labels>> = match &sets {
            Self::Same(l) => Box::new(l.iter()),
            Self::PerRow(rows) => Box::new(rows.iter().flatten()),
        };
        for labels in lists {
            check_label_limits(function, labels).map_err(DataFusionError::Execution)?;
        }
        Ok(sets)
    }

    fn read(function: &str, arg: &ColumnarValue) -> Result<Self> {
        let checked = |read: Read| -> Result<Option<Labels>> {
            match read {
                Ok(labels) => Ok(labels.filter(|l| !l.is_empty())),
                Err(problem) => exec_err!("{function}: {problem}"),
            }
        };
        match arg {
            ColumnarValue::Scalar(s) if s.is_null() => Ok(Self::Same(None)),
            ColumnarValue::Scalar(s) => Ok(Self::Same(checked(scalar_labels(s)?)?)),
            ColumnarValue::Array(a) => {
                let row = |i: usize| -> Result<Option<Labels>> {
                    if a.is_null(i) {
                        return Ok(None);
                    }
                    checked(read_labels(&list_row(a.as_ref(), i)?)?)
                };
                Ok(Self::PerRow((0..a.len()).map(row).collect::<Result<_>>()?))
            }
        }
    }

    pub(crate) fn get(&self, row: usize) -> Option<&Labels> {
        match self {
            Self::Same(l) => l.as_ref(),
            Self::PerRow(rows) => rows.get(row).and_then(|l| l.as_ref()),
        }
    }

    /// Every distinct text the text tower must embed.
    pub(crate) fn distinct(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        let all: Box<dyn Iterator<Item = &String>> = match self {
            Self::Same(l) => Box::new(l.iter().flat_map(Labels::texts)),
            Self::PerRow(rows) => Box::new(rows.iter().flatten().flat_map(Labels::texts)),
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
