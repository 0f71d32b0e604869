//! Reading one batch of listed files: each capped at `clip.max_image_bytes
//! + 1` bytes, and a file that cannot be read costs its row only (its
//! `read_error`), unless the store itself is failing.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StringArray};
use datafusion::arrow::datatypes::{SchemaRef, UInt64Type};
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::StreamExt;
use object_store::ObjectStoreExt;

use super::listing::{IMAGE, READ_ERROR, SIZE};
use crate::origin::image_column;
use crate::{ClipOptions, OnError};

/// How a scan reads its files: decided once, when the scan is planned (from
/// `clip.max_image_bytes` and `clip.on_error`), and carried with the plan to
/// whichever process runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSettings {
    /// `clip.max_image_bytes`: a file is read no further than one byte past it.
    pub max_image_bytes: u64,
    /// `clip.on_error = 'fail'`: a file that cannot be read fails the query,
    /// naming it; otherwise its row gets a `read_error`.
    pub strict: bool,
}

impl ReadSettings {
    /// The settings `options` give.
    pub fn from_options(options: &ClipOptions) -> Self {
        Self {
            max_image_bytes: options.max_image_bytes,
            strict: options.on_error == OnError::Fail,
        }
    }

    /// The most bytes read of one file.
    pub(super) fn read_cap(&self) -> u64 {
        self.max_image_bytes.saturating_add(1)
    }
}

/// Reads at most `read_cap` bytes of an object, counting the bytes that
/// arrive, not trusting the listing: an object that grew or was replaced by
/// a bigger one after it was listed is still cut at the cap. Where the
/// listing already says it is over, only the cap is asked for.
async fn read_capped(
    store: &dyn object_store::ObjectStore,
    location: &object_store::path::Path,
    listed_size: u64,
    read_cap: u64,
) -> object_store::Result<bytes::Bytes> {
    if listed_size >= read_cap {
        match store.get_range(location, 0..read_cap).await {
            // Shorter now than listed (truncated since): the range is past
            // its end. Read what is there, still no further than the cap.
            Err(e) if is_range_error(&e) => {}
            other => return other,
        }
    }
    let mut stream = store.get(location).await?.into_stream();
    let mut chunks: Vec<bytes::Bytes> = Vec::new();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = read_cap - total;
        let chunk = if chunk.len() as u64 > room {
            chunk.slice(..room as usize)
        } else {
            chunk
        };
        total += chunk.len() as u64;
        chunks.push(chunk);
        if total >= read_cap {
            break;
        }
    }
    Ok(match <[bytes::Bytes; 1]>::try_from(chunks) {
        // One chunk (a local file, a small object) is used without a copy.
        Ok([one]) => one,
        Err(chunks) => {
            let mut all = Vec::with_capacity(total as usize);
            for c in &chunks {
                all.extend_from_slice(c);
            }
            bytes::Bytes::from(all)
        }
    })
}

/// Whether a ranged read failed because the range is past the object's end
/// (the local store's "out of range", HTTP 416 "range not satisfiable").
fn is_range_error(e: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("out of range")
            || text.contains("range not satisfiable")
            || text.contains("requested range")
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// The reason to give one row, when reading its object failed in a way
/// that no retry mends and that concerns that object alone: it is gone, or
/// this reader may not read it. Anything else (the store down, every retry
/// spent, a refused connection) is `None`, and fails the query.
fn lasting_object_error(e: &object_store::Error) -> Option<&'static str> {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => return Some(VANISHED),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => return Some(ACCESS_DENIED),
        _ => {}
    }
    // The local store reports a failed open as a generic error around the
    // operating system's. Only there: an OS error deep inside a network
    // store's error (a firewall making `connect` fail with EPERM) is an
    // outage, not this file's permissions.
    let E::Generic {
        store: "LocalFileSystem",
        ..
    } = e
    else {
        return None;
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::NotFound => return Some(VANISHED),
                std::io::ErrorKind::PermissionDenied => return Some(ACCESS_DENIED),
                _ => {}
            }
        }
        source = err.source();
    }
    None
}

/// The reason for a listed file that is not there when read.
pub const VANISHED: &str = "file vanished after listing (not found when read)";
/// The reason for a listed file this process may not read.
pub const ACCESS_DENIED: &str = "access denied when reading the file";

/// The output batch for one batch of listing rows. A file is read no
/// further than `read_cap` bytes (`clip.max_image_bytes + 1`): one over the
/// limit only far enough for the functions to see that it is, never whole.
/// With `strict` (`clip.on_error = 'fail'`), a file that cannot be read
/// fails the query; otherwise its row gets `read_error`.
pub(super) async fn read_batch(
    listing: RecordBatch,
    schema: SchemaRef,
    projection: Vec<usize>,
    read_cap: u64,
    strict: bool,
    context: Arc<TaskContext>,
) -> Result<RecordBatch> {
    let n = listing.num_columns();
    let urls = listing.column(0).as_string::<i32>().clone();
    let reads = projection.iter().any(|i| (IMAGE..=READ_ERROR).contains(i));
    let contents: Option<(ArrayRef, ArrayRef)> = if reads {
        let sizes = listing.column(SIZE).as_primitive::<UInt64Type>();
        let stores = listing.column(n - 2).as_string::<i32>();
        let locations = listing.column(n - 1).as_string::<i32>();
        let reads = (0..listing.num_rows()).map(|row| {
            let context = Arc::clone(&context);
            let url = urls.value(row).to_string();
            let size = sizes.value(row);
            let store = stores.value(row).to_string();
            let location = locations.value(row).to_string();
            async move {
                let store = context
                    .runtime_env()
                    .object_store(ObjectStoreUrl::parse(&store)?)?;
                let location = object_store::path::Path::parse(&location)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                match read_capped(store.as_ref(), &location, size, read_cap).await {
                    Ok(bytes) => Ok(Ok(bytes)),
                    Err(e) => match lasting_object_error(&e) {
                        Some(reason) if strict => exec_err!(
                            "{}: {reason}. SET clip.on_error = 'null' to get a NULL image \
                             for such files instead, and the reason in read_error",
                            clip_runtime::printable_reason(&url)
                        ),
                        // This row only: the query goes on.
                        Some(reason) => Ok(Err(reason)),
                        None => Err(DataFusionError::from(e).context(format!("reading {url}"))),
                    },
                }
            }
        });
        let read = futures::future::try_join_all(reads).await?;
        let reasons: StringArray = read.iter().map(|r| r.as_ref().err().copied()).collect();
        let urls = urls.iter().map(|u| u.unwrap_or_default().to_string());
        let images = image_column(urls.collect(), read.into_iter().map(Result::ok).collect())?;
        Some((images, Arc::new(reasons)))
    } else {
        None
    };
    let columns = projection
        .iter()
        .map(|&i| match (i, &contents) {
            (IMAGE, Some((images, _))) => Ok(Arc::clone(images)),
            (READ_ERROR, Some((_, reasons))) => Ok(Arc::clone(reasons)),
            (IMAGE | READ_ERROR, None) => {
                Err(DataFusionError::Internal("file contents not read".into()))
            }
            // The listing has every other column, in table order.
            (i, _) if i < IMAGE => Ok(Arc::clone(listing.column(i))),
            (i, _) => Ok(Arc::clone(listing.column(i - 2))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(listing.num_rows())),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lasting_per_object_errors_become_a_row_reason() {
        let denied = object_store::Error::PermissionDenied {
            path: "x".into(),
            source: "403".into(),
        };
        assert_eq!(lasting_object_error(&denied), Some(ACCESS_DENIED));
        let local = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        assert_eq!(lasting_object_error(&local), Some(ACCESS_DENIED));
        let gone = object_store::Error::NotFound {
            path: "x".into(),
            source: "404".into(),
        };
        assert_eq!(lasting_object_error(&gone), Some(VANISHED));
        // An OS permission error inside a network store's error (EPERM
        // from connect, a firewall) is an outage (issue 26, item 8).
        let firewalled = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        assert_eq!(lasting_object_error(&firewalled), None);
        // The store itself failing (retries spent, connection refused) fails
        // the query.
        let outage = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        assert_eq!(lasting_object_error(&outage), None);
    }
}
