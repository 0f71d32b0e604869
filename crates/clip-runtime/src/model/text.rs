//! The text side of a model: the text cache and the text tower.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::{ClipModel, Embedding};
use crate::error::{ClipError, Result};
use crate::metrics::{Event, timed};
use crate::tower::{Int, Port, Tower, int_tensor};

/// Texts per text-tower run when filling the cache.
const TEXT_BATCH: usize = 64;

/// Most texts a model's embedding cache holds (about 128 MiB at 512 dims).
pub const TEXT_CACHE_CAPACITY: usize = 65_536;

impl ClipModel {
    /// Normalised text embeddings, from the cache or the text tower. Each
    /// distinct text runs through the tower once per model, however many
    /// batches or queries ask for it (while the cache holds it: it keeps up to
    /// [`TEXT_CACHE_CAPACITY`] texts and starts afresh when full).
    pub fn embed_texts<'t>(&self, texts: &[&'t str]) -> Result<Vec<Embedding>> {
        let mut found: HashMap<&'t str, Embedding> = HashMap::with_capacity(texts.len());
        let lookup = |found: &mut HashMap<&'t str, Embedding>| {
            let cache = self.cache();
            for &t in texts {
                if let Some(e) = cache.get(t) {
                    found.insert(t, Arc::clone(e));
                }
            }
        };
        lookup(&mut found);
        let mut computed = 0;
        if found.len() < texts.len() {
            let _fill = self.text_fill.lock().unwrap_or_else(|p| p.into_inner());
            // Another caller may have filled some while we waited.
            lookup(&mut found);
            let mut seen = std::collections::HashSet::new();
            let missing: Vec<&str> = texts
                .iter()
                .copied()
                .filter(|t| !found.contains_key(t) && seen.insert(*t))
                .collect();
            for chunk in missing.chunks(TEXT_BATCH) {
                let embeddings = self.run_text(chunk)?;
                computed += chunk.len();
                let mut cache = self.cache();
                if cache.len() + chunk.len() > TEXT_CACHE_CAPACITY {
                    cache.clear();
                }
                for (&t, e) in chunk.iter().zip(embeddings) {
                    cache.insert(t.to_string(), Arc::clone(&e));
                    found.insert(t, e);
                }
            }
        }
        if found.len() > computed {
            Event::TextCacheHits((found.len() - computed) as u64).record(&self.counters);
        }
        texts
            .iter()
            .map(|t| {
                found
                    .get(t)
                    .cloned()
                    .ok_or_else(|| ClipError::Tokenizer(format!("no embedding computed for {t:?}")))
            })
            .collect()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Embedding>> {
        self.text_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run_text(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        let (embeddings, took) = timed(|| self.run_text_untimed(texts));
        let embeddings = embeddings?;
        Event::Text {
            texts: texts.len() as u64,
            took,
        }
        .record(&self.counters);
        Ok(embeddings)
    }

    fn run_text_untimed(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        let fixed = self
            .config
            .family
            .padded_len(self.text_len, self.config.context_length);
        let batch = self.tokenizer.encode_batch(texts, fixed)?;
        let shape = vec![batch.rows as i64, batch.len as i64];
        let mut inputs = vec![(
            self.input_ids.name.clone(),
            int_tensor(&self.input_ids, shape.clone(), batch.ids)?,
        )];
        if let Some(mask) = &self.attention_mask {
            inputs.push((mask.name.clone(), int_tensor(mask, shape, batch.mask)?));
        }
        let (mut out, _) = self
            .text
            .run(inputs, &[&self.text_embeds], "running the text tower")?;
        let (shape, data) = out.remove(0);
        self.split_rows(&self.text, &shape, data, texts.len())
    }
}

/// The text inputs of a graph (the text tower, or the combined graph).
pub(super) struct TextInputs {
    pub(super) input_ids: Port<Int>,
    pub(super) attention_mask: Option<Port<Int>>,
    /// The sequence length, if the graph fixes it.
    pub(super) static_len: Option<usize>,
}

impl TextInputs {
    pub(super) fn of(tower: &Tower, path: &Path) -> Result<Self> {
        let input_ids = tower
            .int_input(&["input_ids"], true)?
            .ok_or_else(|| ClipError::Graph {
                path: path.to_path_buf(),
                message: "expected an input named input_ids".into(),
            })?;
        let static_len = match input_ids.shape.as_slice() {
            [_, n] if *n > 0 => Some(*n as usize),
            _ => None,
        };
        Ok(Self {
            attention_mask: tower.int_input(&["attention_mask"], false)?,
            input_ids,
            static_len,
        })
    }
}
