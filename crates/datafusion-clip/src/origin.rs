//! Which file an image in an `image` column came from, so that a
//! strict-mode error (`clip.on_error = 'fail'`) names the file, not a row
//! number.
//!
//! A scalar function sees only the bytes, and the plan may put other nodes
//! between the scan and the function. So [`ImageScanExec`] builds each
//! batch's `image` column with [`image_column`], whose values buffer owns an
//! [`Origin`]: the batch's file URLs and offsets. A process-wide registry maps
//! the buffer's address to a weak reference to it. [`image_source`] looks the
//! address up: the weak reference upgrades only while that buffer is alive,
//! so the address cannot have been reused by another allocation.
//!
//! An array that shares the buffer (the scan's own, a slice of it after
//! `LIMIT`, or a batch passed whole through a repartition) is found and its
//! row mapped through the offsets. An array with new buffers (after a filter
//! or a coalesce) is not, and the error falls back to the row number.
//!
//! [`ImageScanExec`]: crate::ImageScanExec

use std::sync::{Arc, Mutex, PoisonError, Weak};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray};
use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, resources_err};

/// The files behind one scanned `image` column.
#[derive(Debug)]
struct Origin {
    /// One URL per row.
    urls: Vec<String>,
    /// The column's value offsets (one more than `urls`).
    offsets: Vec<i64>,
}

/// A values buffer's bytes, and the [`Origin`] they keep alive.
struct OwnedValues {
    bytes: bytes::Bytes,
    _origin: Arc<Origin>,
}

impl AsRef<[u8]> for OwnedValues {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// A registered values buffer: its address, and its [`Origin`] while alive.
struct Registered {
    address: usize,
    origin: Weak<Origin>,
}

static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

/// The `image` column for one batch: `images[i]` read from `urls[i]`, or
/// NULL where it could not be read.
///
/// A batch of one non-empty image uses its bytes as they are (a file alone
/// in its batch is typically a large one); others are copied into one
/// buffer. Fails, rather than overflowing a `Binary` column's 32-bit
/// offsets, when the batch's images total 2 GiB or more.
pub(crate) fn image_column(
    urls: Vec<String>,
    images: Vec<Option<bytes::Bytes>>,
) -> Result<ArrayRef> {
    let nulls: NullBuffer = images.iter().map(Option::is_some).collect();
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    let images: Vec<bytes::Bytes> = images.into_iter().map(Option::unwrap_or_default).collect();
    let total: usize = images.iter().map(bytes::Bytes::len).sum();
    if i32::try_from(total).is_err() {
        return resources_err!(
            "the {} images of one batch total {total} bytes, more than one Binary column \
             holds (2 GiB): lower clip.batch_size, or clip.max_image_bytes",
            images.len()
        );
    }
    let mut offsets = Vec::with_capacity(images.len() + 1);
    offsets.push(0i32);
    let bytes = match <[bytes::Bytes; 1]>::try_from(images) {
        Ok([image]) if !image.is_empty() => {
            offsets.push(total as i32);
            image
        }
        Ok(images) => concatenate(&images, &mut offsets, total),
        Err(images) => concatenate(&images, &mut offsets, total),
    };
    let origin = Arc::new(Origin {
        urls,
        offsets: offsets.iter().map(|&o| i64::from(o)).collect(),
    });
    let weak = Arc::downgrade(&origin);
    let values = Buffer::from(bytes::Bytes::from_owner(OwnedValues {
        bytes,
        _origin: origin,
    }));
    let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    registry.retain(|r| r.origin.strong_count() > 0);
    registry.push(Registered {
        address: values.as_ptr() as usize,
        origin: weak,
    });
    drop(registry);
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    Ok(std::sync::Arc::new(BinaryArray::try_new(
        offsets, values, nulls,
    )?))
}

/// `images` copied into one buffer, their end offsets pushed to `offsets`.
fn concatenate(images: &[bytes::Bytes], offsets: &mut Vec<i32>, total: usize) -> bytes::Bytes {
    // At least one byte of capacity: an allocation of its own, whose
    // address no other live buffer has, even when every image is empty.
    let mut bytes = Vec::with_capacity(total.max(1));
    for image in images {
        bytes.extend_from_slice(image);
        // Cannot overflow: `total` fits in an i32.
        offsets.push(bytes.len() as i32);
    }
    bytes::Bytes::from_owner(bytes)
}

/// The URL of the file that row `row` of `images` was read from, when
/// `images` still shares its bytes with a scanned batch (see the module docs).
pub(crate) fn image_source(images: &dyn Array, row: usize) -> Option<String> {
    if row >= images.len() {
        return None;
    }
    let (address, offsets): (usize, Vec<i64>) = match images.data_type() {
        DataType::Binary => {
            let a = images.as_binary::<i32>();
            let offsets = a.value_offsets().iter().map(|&o| i64::from(o)).collect();
            (a.values().as_ptr() as usize, offsets)
        }
        DataType::LargeBinary => {
            let a = images.as_binary::<i64>();
            (a.values().as_ptr() as usize, a.value_offsets().to_vec())
        }
        _ => return None,
    };
    let origin = {
        let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        let mut live = registry
            .iter()
            .filter(|r| r.address == address)
            .filter_map(|r| r.origin.upgrade());
        match (live.next(), live.next()) {
            (Some(origin), None) => origin,
            _ => return None,
        }
    };
    // Where this array's offsets sit within the scanned column's: a slice
    // starts at the first row whose offset is its first one. Runs of empty
    // images give several candidates; only a unique fit names a file.
    let first = *offsets.first()?;
    let from = origin.offsets.partition_point(|&o| o < first);
    let mut fits = (from..origin.offsets.len())
        .take_while(|&k| origin.offsets[k] == first)
        .filter(|&k| origin.offsets.get(k..k + offsets.len()) == Some(&offsets[..]));
    match (fits.next(), fits.next()) {
        (Some(k), None) => origin.urls.get(k + row).cloned(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::BooleanArray;
    use datafusion::arrow::compute::{cast, filter};

    fn column(names: &[&str], images: &[&[u8]]) -> ArrayRef {
        let images = images
            .iter()
            .map(|i| Some(bytes::Bytes::copy_from_slice(i)));
        image_column(
            names.iter().map(|n| n.to_string()).collect(),
            images.collect(),
        )
        .unwrap()
    }

    #[test]
    fn the_scanned_column_and_its_slices_name_their_files() {
        let images = column(&["a", "b", "c", "d"], &[b"aa", b"", b"cc", b"d"]);
        assert_eq!(images.as_binary::<i32>().value(2), b"cc");
        let names: Vec<_> = (0..4).map(|r| image_source(&images, r)).collect();
        assert_eq!(names, ["a", "b", "c", "d"].map(|n| Some(n.to_string())));
        let tail = images.slice(1, 3);
        assert_eq!(image_source(&tail, 0).as_deref(), Some("b"));
        assert_eq!(image_source(&tail, 2).as_deref(), Some("d"));
        assert_eq!(image_source(&tail, 3), None);
        // A cast to LargeBinary keeps the bytes.
        let large = cast(&tail, &DataType::LargeBinary).unwrap();
        assert_eq!(image_source(&large, 1).as_deref(), Some("c"));
    }

    /// Issue 26, item 2: a file that could not be read is NULL, not made-up
    /// bytes, and the other rows keep their files.
    #[test]
    fn unread_files_are_null() {
        let images = image_column(
            vec!["a".into(), "gone".into(), "c".into()],
            vec![
                Some(bytes::Bytes::from_static(b"aa")),
                None,
                Some(bytes::Bytes::from_static(b"c")),
            ],
        )
        .unwrap();
        let binary = images.as_binary::<i32>();
        assert!(binary.is_valid(0) && binary.is_null(1) && binary.is_valid(2));
        assert_eq!(binary.value(2), b"c");
        assert_eq!(image_source(&images, 2).as_deref(), Some("c"));
    }

    #[test]
    fn copies_and_ambiguous_slices_name_nothing() {
        let images = column(&["a", "b", "c"], &[b"x", b"", b""]);
        let kept = filter(&images, &BooleanArray::from(vec![false, true, true])).unwrap();
        assert_eq!(image_source(&kept, 0), None);
        // Rows b and c are both empty at offset 1: a one-row slice of
        // either fits both places.
        assert_eq!(image_source(&images.slice(2, 1), 0), None);
        assert_eq!(image_source(&images.slice(1, 2), 1).as_deref(), Some("c"));
        // Empty images have bytes of their own too.
        let empty = column(&["e"], &[b""]);
        let other = column(&["f"], &[b""]);
        assert_eq!(image_source(&empty, 0).as_deref(), Some("e"));
        assert_eq!(image_source(&other, 0).as_deref(), Some("f"));
    }

    #[test]
    fn a_batch_over_two_gib_fails_with_what_to_lower() {
        // Zeroed pages are mapped on first touch: the check reads only lengths.
        let gib = bytes::Bytes::from(vec![0u8; 1 << 30]);
        let err = image_column(
            vec!["a".into(), "b".into()],
            vec![Some(gib.clone()), Some(gib)],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("2147483648 bytes"), "{err}");
        assert!(
            err.contains("lower clip.batch_size, or clip.max_image_bytes"),
            "{err}"
        );
    }

    #[test]
    fn a_dropped_column_is_forgotten() {
        let images = column(&["a"], &[b"bytes"]);
        let address = images.as_binary::<i32>().values().as_ptr() as usize;
        // Its entry; no other live one has its address while it is alive.
        let origin = REGISTRY
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.address == address && r.origin.strong_count() > 0)
            .map(|r| Weak::clone(&r.origin))
            .unwrap();
        drop(images);
        assert_eq!(origin.strong_count(), 0);
        // The next column (any test's) prunes the dead entry, and may reuse
        // the address without being mistaken for it.
        let fresh = column(&["z"], &[b"other"]);
        assert_eq!(image_source(&fresh, 0).as_deref(), Some("z"));
        let registry = REGISTRY.lock().unwrap();
        assert!(!registry.iter().any(|r| r.origin.ptr_eq(&origin)));
    }
}
