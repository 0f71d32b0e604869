//! `clip_prompts(labels, templates) -> List<Struct<label: Utf8, prompts: List<Utf8>>>`:
//! a prompt ensemble for every label, each template's `{}` replaced by it.
//!
//! ```sql
//! SELECT name, clip_classify(image, clip_prompts(['cat', 'dog'], ['a photo of a {}', 'a drawing of a {}']))
//! FROM images;
//! ```
//!
//! Every scoring function takes the result as its labels: a label's text
//! embedding is then the mean of its prompts' normalised embeddings,
//! normalised again (the CLIP paper's prompt ensembling), and the output
//! names the label, not the prompts. Each distinct prompt is embedded once
//! per process, as any label is. It needs no model. NULL in gives NULL out.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Array, ArrayRef, ListArray, StringArray, StructArray};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err, resources_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};

use super::Doc;
use super::args::check_arity;
use super::labels::{is_string_list, list_row, strings};
use super::results::{nullable_field, utf8_list_type, utf8_lists};

const USAGE: &str = "clip_prompts(['cat', 'dog'], ['a photo of a {}', 'a drawing of a {}'])";

/// `clip_prompts(labels, templates)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClipPrompts {
    signature: Signature,
}

impl Default for ClipPrompts {
    fn default() -> Self {
        Self::new()
    }
}

impl ClipPrompts {
    /// A new instance.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn entry_fields() -> Fields {
    Fields::from(vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("prompts", utf8_list_type(), false),
    ])
}

fn item_field() -> FieldRef {
    Arc::new(Field::new_list_field(
        DataType::Struct(entry_fields()),
        false,
    ))
}

/// What is wrong with a template list, if anything.
fn template_problem(templates: &[String]) -> Option<String> {
    if templates.is_empty() {
        return Some(
            "the template list is empty: give at least one, such as 'a photo of a {}'".into(),
        );
    }
    templates.iter().find(|t| !t.contains("{}")).map(|t| {
        format!("the template {t:?} has no {{}} for the label; write e.g. 'a photo of a {{}}'")
    })
}

/// The strings of a list literal (`None`: not a literal, or NULL-holding).
fn literal_strings(scalar: Option<&ScalarValue>) -> Result<Option<Vec<String>>> {
    let list = match scalar {
        Some(ScalarValue::List(a)) if !a.is_null(0) => a.value(0),
        Some(ScalarValue::LargeList(a)) if !a.is_null(0) => a.value(0),
        Some(ScalarValue::FixedSizeList(a)) if !a.is_null(0) => a.value(0),
        _ => return Ok(None),
    };
    strings(&list)
}

impl ScalarUDFImpl for ClipPrompts {
    fn name(&self) -> &str {
        "clip_prompts"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(self.name(), arg_types, 2, USAGE)?;
        for (what, dt) in [("labels", &arg_types[0]), ("templates", &arg_types[1])] {
            if !is_string_list(dt) {
                return plan_err!(
                    "clip_prompts: the {what} must be a list of strings, got {dt}; write {USAGE}"
                );
            }
        }
        Ok(arg_types.to_vec())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(item_field()))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if let Some(templates) = literal_strings(args.scalar_arguments.get(1).copied().flatten())?
            && let Some(problem) = template_problem(&templates)
        {
            return plan_err!("clip_prompts: {problem}");
        }
        Ok(nullable_field(self.name(), DataType::List(item_field())))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: OnceLock<Documentation> = OnceLock::new();
        Some(
            Doc {
                description: "A prompt ensemble for every label, each template's `{}` replaced by the label, as `List<Struct<label: Utf8, prompts: List<Utf8>>>`. Every scoring function takes it as its labels: a label's text embedding is the mean of its prompts' normalised embeddings, normalised again (the CLIP paper's prompt ensembling), and the output names the label. Needs no model.",
                syntax: "clip_prompts(labels, templates)",
                example: "SELECT name, clip_classify(image, clip_prompts(['cat', 'dog'], ['a photo of a {}', 'a drawing of a {}'])) AS label FROM images;",
                arguments: &[
                    ("labels", "The labels: a list of strings (a literal or a column)."),
                    ("templates", "The prompts to make of each label: a list of strings, each with one `{}` where the label goes."),
                ],
            }
            .get(&DOC),
        )
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let labels = args.args[0].to_array(rows)?;
        let templates = args.args[1].to_array(rows)?;
        let read = |list: &ArrayRef, row: usize| -> Result<Option<Vec<String>>> {
            if list.is_null(row) {
                return Ok(None);
            }
            strings(&list_row(list.as_ref(), row)?)
        };
        let mut names: Vec<String> = Vec::new();
        let mut prompts: Vec<Vec<String>> = Vec::new();
        let mut offsets = vec![0i32];
        let mut valid = Vec::with_capacity(rows);
        for row in 0..rows {
            let (Some(row_labels), Some(row_templates)) =
                (read(&labels, row)?, read(&templates, row)?)
            else {
                valid.push(false);
                offsets.push(offsets[offsets.len() - 1]);
                continue;
            };
            if let Some(problem) = template_problem(&row_templates) {
                return exec_err!("clip_prompts: {problem} (row {row})");
            }
            for label in row_labels {
                prompts.push(
                    row_templates
                        .iter()
                        .map(|t| t.replace("{}", &label))
                        .collect(),
                );
                names.push(label);
            }
            valid.push(true);
            let Ok(end) = i32::try_from(names.len()) else {
                return resources_err!(
                    "clip_prompts: one batch holds {} labels, more than a List column holds",
                    names.len()
                );
            };
            offsets.push(end);
        }
        let entries = StructArray::try_new(
            entry_fields(),
            vec![
                Arc::new(StringArray::from_iter_values(&names)) as ArrayRef,
                utf8_lists(prompts.iter().map(|p| Some(p.iter().map(String::as_str))))?,
            ],
            None,
        )?;
        Ok(ColumnarValue::Array(Arc::new(ListArray::try_new(
            item_field(),
            OffsetBuffer::new(offsets.into()),
            Arc::new(entries),
            Some(NullBuffer::from(valid)),
        )?)))
    }
}
