//! Building the functions' Arrow results: label columns, `clip_scores`
//! lists, `clip_tags` lists and embedding columns, each checked against the 2 GiB a 32-bit
//! offset column holds.

use std::sync::Arc;

use clip_runtime::Embedding;
use datafusion::arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, ListArray, StringArray, StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{Result, exec_err, resources_err};

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

/// A `Utf8` column of `values`, or a resources error where their bytes would
/// pass the 2 GiB its 32-bit offsets hold (building it regardless panics).
pub(crate) fn utf8_column(values: Vec<Option<&str>>) -> Result<ArrayRef> {
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

/// The type of `clip_tags` results: `List<Utf8>`.
pub fn utf8_list_type() -> DataType {
    DataType::List(utf8_item_field())
}

fn utf8_item_field() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Utf8, false))
}

/// Builds a `List<Utf8>` column from per-row labels in the order given;
/// `None` is a NULL row.
pub fn utf8_lists<'a, R, E>(rows: R) -> Result<ArrayRef>
where
    R: IntoIterator<Item = Option<E>>,
    E: IntoIterator<Item = &'a str>,
{
    let mut offsets = vec![0i32];
    let mut valid = Vec::new();
    let mut labels: Vec<Option<&str>> = Vec::new();
    for row in rows {
        valid.push(row.is_some());
        labels.extend(row.into_iter().flatten().map(Some));
        let Ok(end) = i32::try_from(labels.len()) else {
            return resources_err!(
                "one output batch holds {} labels, more than a List column holds: \
                 lower clip.batch_size, or use fewer labels",
                labels.len()
            );
        };
        offsets.push(end);
    }
    Ok(Arc::new(ListArray::try_new(
        utf8_item_field(),
        OffsetBuffer::new(offsets.into()),
        utf8_column(labels)?,
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

/// The nullable return field every function uses.
pub(crate) fn nullable_field(name: &str, dt: DataType) -> FieldRef {
    Arc::new(Field::new(name, dt, true))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
