//! The image side of a model: preprocessing, the image cache and the
//! vision tower.

use std::collections::HashMap;
use std::hash::BuildHasher;

use super::{ClipModel, Embedding};
use crate::error::{ImageError, Result};
use crate::metrics::{Event, timed};
use crate::options::DecodeLimits;
use crate::prepare::{PixelValues, prepare_image};
use crate::tower::float_tensor;

/// Identifies encoded image bytes (with the limits they were decoded under)
/// by length and a 128-bit keyed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ImageKey {
    len: usize,
    hash: (u64, u64),
    limits: DecodeLimits,
}

/// Most image outcomes a model remembers (a few batches of every partition).
const IMAGE_CACHE_CAPACITY: usize = 1024;

impl ClipModel {
    /// Decodes and preprocesses one image into CHW `f32` (`pixel_values`).
    pub fn pixel_values(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
    ) -> std::result::Result<Vec<f32>, ImageError> {
        self.preprocess_one(bytes, limits).map(|p| p.data)
    }

    fn preprocess_one(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
    ) -> std::result::Result<PixelValues, ImageError> {
        let (pixels, took) = timed(|| prepare_image(bytes, limits, &self.preprocess));
        Event::Decoded {
            ok: pixels.is_ok(),
            took,
        }
        .record(&self.counters);
        pixels
    }

    /// Embeds encoded images, `batch_size` at a time through the vision tower.
    ///
    /// The outer `Result` is for failures of the model itself; each image has
    /// its own inner `Result`, so one bad image never fails the others.
    /// Images seen recently (same bytes, same limits) are answered from a
    /// small cache instead of being decoded and embedded again.
    pub fn embed_images(
        &self,
        images: &[&[u8]],
        batch_size: usize,
        limits: &DecodeLimits,
    ) -> Result<Vec<std::result::Result<Embedding, ImageError>>> {
        let keys: Vec<ImageKey> = images.iter().map(|b| self.image_key(b, limits)).collect();
        let mut results: Vec<Option<std::result::Result<Embedding, ImageError>>> = {
            let cache = self.image_cache.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter().map(|k| cache.get(k).cloned()).collect()
        };
        let mut first_of: HashMap<ImageKey, usize> = HashMap::new();
        let todo: Vec<usize> = (0..images.len())
            .filter(|&i| results[i].is_none() && *first_of.entry(keys[i]).or_insert(i) == i)
            .collect();
        let hits = images.len() - todo.len();
        if hits > 0 {
            Event::ImageCacheHits(hits as u64).record(&self.counters);
        }
        for chunk in todo.chunks(batch_size.max(1)) {
            let pixels: Vec<_> = chunk
                .iter()
                .map(|&i| self.preprocess_one(images[i], limits))
                .collect();
            let embedded = self.embed_batch(pixels)?;
            let mut cache = self.image_cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() + chunk.len() > IMAGE_CACHE_CAPACITY {
                cache.clear();
            }
            for (&i, outcome) in chunk.iter().zip(embedded) {
                cache.insert(keys[i], outcome.clone());
                results[i] = Some(outcome);
            }
        }
        // Duplicates within this call take their first occurrence's outcome.
        let resolved: Vec<_> = (0..images.len())
            .map(|i| {
                results[i]
                    .clone()
                    .or_else(|| results[first_of[&keys[i]]].clone())
            })
            .collect();
        Ok(resolved
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(ImageError::Inference("image was not processed".into())))
            })
            .collect())
    }

    fn image_key(&self, bytes: &[u8], limits: &DecodeLimits) -> ImageKey {
        ImageKey {
            len: bytes.len(),
            hash: (
                self.image_hashers.0.hash_one(bytes),
                self.image_hashers.1.hash_one(bytes),
            ),
            limits: *limits,
        }
    }

    /// Runs one batch of preprocessed images through the vision tower; images
    /// of the model's fixed input size ([`crate::PreprocessConfig::fixed_size`])
    /// share one run. Errors pass through in place.
    fn embed_batch(
        &self,
        pixels: Vec<std::result::Result<PixelValues, ImageError>>,
    ) -> Result<Vec<std::result::Result<Embedding, ImageError>>> {
        let mut results: Vec<std::result::Result<Embedding, ImageError>> =
            Vec::with_capacity(pixels.len());
        let mut batch = Vec::new();
        let mut slots = Vec::new();
        let fixed = self
            .preprocess
            .fixed_size()
            .map(|(h, w)| (h as usize, w as usize));
        for (i, p) in pixels.into_iter().enumerate() {
            match p {
                Ok(p) if Some((p.height, p.width)) == fixed => {
                    batch.extend_from_slice(&p.data);
                    slots.push(i);
                    results.push(Err(ImageError::Inference("pending".into())));
                }
                Ok(p) => {
                    // Without a fixed input size every image has its own
                    // size, so each runs alone.
                    let mut emb = self.run_vision(p.data, 1, p.height, p.width)?;
                    results.push(Ok(emb.remove(0)));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if let (Some((h, w)), false) = (fixed, slots.is_empty()) {
            let embeddings = self.run_vision(batch, slots.len(), h, w)?;
            for (slot, emb) in slots.into_iter().zip(embeddings) {
                results[slot] = Ok(emb);
            }
        }
        Ok(results)
    }

    fn run_vision(&self, data: Vec<f32>, n: usize, h: usize, w: usize) -> Result<Vec<Embedding>> {
        let input = float_tensor(
            &self.pixel_values,
            vec![n as i64, 3, h as i64, w as i64],
            data,
        )?;
        let (mut out, took) = self.vision.run(
            vec![(self.pixel_values.name.clone(), input)],
            &[&self.image_embeds],
            "running the vision tower",
        )?;
        let (shape, data) = out.remove(0);
        let embeddings = self.split_rows(&self.vision, &shape, data, n)?;
        Event::Vision {
            images: n as u64,
            took,
        }
        .record(&self.counters);
        Ok(embeddings)
    }
}
