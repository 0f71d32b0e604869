//! The IMAGE table's file listing as rows: one per file, every table
//! column but those only reading the file gives (`image`, `read_error`),
//! then where the file lives. The scan deals these rows out to partitions,
//! and `WHERE` clauses over them pick files before any byte is read.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, Result, internal_err};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_expr::PhysicalExpr;

/// Index of the `size` column in the table schema and the listing.
pub(super) const SIZE: usize = 2;
/// Index of the `image` column in the table schema.
pub(super) const IMAGE: usize = 4;
/// Index of the `read_error` column in the table schema: the last of the
/// two columns that only reading the files gives.
pub(super) const READ_ERROR: usize = 5;

/// The listing's extra columns, after the table's columns less `image`:
/// the object store URL and the location within it.
pub(super) const STORE_COLUMN: &str = "__clipql_store";
pub(super) const LOCATION_COLUMN: &str = "__clipql_location";

/// One listed file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFile {
    /// Full URL (`file:///...`, `s3://bucket/...`).
    pub url: String,
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modified, microseconds since the epoch (UTC).
    pub modified: i64,
    /// Location within its object store.
    pub location: object_store::path::Path,
    /// The object store it lives in.
    pub store: ObjectStoreUrl,
    /// Values of the declared partition columns.
    pub partition_values: Vec<Option<String>>,
}

impl ImageFile {
    /// Which version of which file this is.
    pub fn key(&self) -> crate::FileKey {
        crate::FileKey {
            path: self.url.clone(),
            size: self.size,
            modified: self.modified,
        }
    }
}

/// The listing's schema for a table schema: every column but `image` and
/// `read_error`, then the store and location.
pub(super) fn listing_schema(table_schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = table_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(i, _)| !(IMAGE..=READ_ERROR).contains(i))
        .map(|(_, f)| f.as_ref().clone())
        .collect();
    fields.push(Field::new(STORE_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(LOCATION_COLUMN, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// The listing rows of `files`, as one record batch.
pub(super) fn listing_batch(files: &[ImageFile], schema: &SchemaRef) -> Result<RecordBatch> {
    let partition_cols = schema.fields().len() - IMAGE - 2;
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            files.iter().map(|f| f.url.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            files.iter().map(|f| f.name.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(files.iter().map(|f| f.size))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(files.iter().map(|f| f.modified))
                .with_timezone("UTC"),
        ),
    ];
    for p in 0..partition_cols {
        columns.push(Arc::new(StringArray::from_iter(
            files
                .iter()
                .map(|f| f.partition_values.get(p).cloned().flatten()),
        )));
    }
    columns.push(Arc::new(StringArray::from_iter_values(
        files.iter().map(|f| f.store.as_str()),
    )));
    columns.push(Arc::new(StringArray::from_iter_values(
        files.iter().map(|f| f.location.as_ref()),
    )));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(files.len())),
    )?)
}

/// The files whose listing row satisfies a predicate over the table's
/// columns other than `image`; `predicate` plans it against that schema.
///
/// An IMAGE table applies such `WHERE` clauses here, before any bytes are
/// read: `WHERE label = 'cat'` reads only the cats.
pub(crate) fn select_files(
    files: Vec<ImageFile>,
    table_schema: &Schema,
    predicate: impl FnOnce(&DFSchema) -> Result<Arc<dyn PhysicalExpr>>,
) -> Result<Vec<ImageFile>> {
    let schema = listing_schema(table_schema);
    let predicate = predicate(&DFSchema::try_from(Arc::clone(&schema))?)?;
    let listing = listing_batch(&files, &schema)?;
    let keep = predicate
        .evaluate(&listing)?
        .into_array(listing.num_rows())?;
    let Some(keep) = keep.as_boolean_opt() else {
        return internal_err!(
            "an IMAGE table filter gave {}, not booleans",
            keep.data_type()
        );
    };
    Ok(files
        .into_iter()
        .zip(keep.iter())
        .filter_map(|(file, keep)| (keep == Some(true)).then_some(file))
        .collect())
}
