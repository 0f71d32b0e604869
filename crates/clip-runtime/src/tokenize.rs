//! CLIP tokenisation with HF `tokenizers`, matching transformers' `CLIPTokenizer`.
//!
//! `tokenizer.json` carries the normaliser, the BPE and the BOS/EOS
//! post-processor. We add truncation at the model's context length (77 for
//! every CLIP; EOS is kept because `tokenizers` reserves room for the
//! post-processor's special tokens) and do the padding ourselves, since its
//! length depends on the graph: fixed when the text graph declares a static
//! sequence length, the longest row otherwise.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{ClipError, Result};

/// A tokenizer configured for one CLIP model.
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    max_len: usize,
}

/// Token ids for a batch of texts, padded to one length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Row-major `[rows, len]` ids.
    pub ids: Vec<i64>,
    /// Row-major `[rows, len]` attention mask (1 for real tokens).
    pub mask: Vec<i64>,
    /// Number of texts.
    pub rows: usize,
    /// Padded length.
    pub len: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`. `pad_token` comes from `tokenizer_config.json`
    /// when present, else from the model's family
    /// ([`crate::ModelFamily::default_pad_token`]).
    pub fn from_file(path: &Path, max_len: usize, pad_token: &str) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path).map_err(|e| ClipError::ModelFile {
            path: path.to_path_buf(),
            message: format!("cannot load tokenizer: {e}"),
        })?;
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| ClipError::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        let pad = pad_token;
        let pad_id = inner.token_to_id(pad).ok_or_else(|| ClipError::ModelFile {
            path: path.to_path_buf(),
            message: format!(
                "pad token {pad:?} is not in the vocabulary; is this a CLIP tokenizer?"
            ),
        })?;
        Ok(Self {
            inner,
            pad_id,
            max_len,
        })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The context length texts are truncated to.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids of one text, with BOS/EOS, truncated to the context length.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ClipError::Tokenizer(format!("encoding {text:?}: {e}")))
    }

    /// Encodes and pads a batch; `fixed_len` forces the padded length.
    pub fn encode_batch(&self, texts: &[&str], fixed_len: Option<usize>) -> Result<TokenBatch> {
        let rows: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<_>>()?;
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let len = fixed_len.unwrap_or(longest).max(longest);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for row in &rows {
            ids.extend(row.iter().map(|&i| i as i64));
            ids.extend(std::iter::repeat_n(self.pad_id as i64, len - row.len()));
            mask.extend(std::iter::repeat_n(1, row.len()));
            mask.extend(std::iter::repeat_n(0, len - row.len()));
        }
        Ok(TokenBatch {
            ids,
            mask,
            rows: rows.len(),
            len,
        })
    }
}
