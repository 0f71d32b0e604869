//! Tokenisation with HF `tokenizers`, matching the tokenizer transformers
//! loads for the model (`CLIPTokenizer`, `SiglipTokenizer`, Gemma's for
//! SigLIP 2).
//!
//! `tokenizer.json` carries the normaliser, the vocabulary and a
//! post-processor. `tokenizer_config.json` can overrule two things, as
//! transformers does ([`TokenizerSettings`]): `add_bos_token` /
//! `add_eos_token` rebuild the post-processor, and `padding_side` says where
//! the pad tokens go. We add truncation at the model's context length (EOS
//! is kept because `tokenizers` reserves room for the post-processor's
//! special tokens) and do the padding ourselves, since its length depends on
//! the graph: fixed when the text graph declares a static sequence length,
//! the longest row otherwise.

use std::path::Path;

use serde::Deserialize;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    PaddingDirection, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{ClipError, Result};

/// Which end of a row the pad tokens go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    /// After the tokens (CLIP, SigLIP, SigLIP 2 as configured).
    Right,
    /// Before the tokens (the default of Gemma's and Llama's tokenizer classes).
    Left,
}

/// What `tokenizer_config.json` says on top of `tokenizer.json`, read the way
/// transformers reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerSettings {
    /// The pad token: `pad_token`, else the model family's
    /// ([`crate::ModelFamily::default_pad_token`]).
    pub pad_token: String,
    /// `padding_side`, else `tokenizer.json`'s padding direction, else the
    /// tokenizer class's default (left for `GemmaTokenizer` and
    /// `LlamaTokenizer`, right for the rest).
    pub padding_side: Option<PaddingSide>,
    /// `add_bos_token` and `add_eos_token`, when either is given: the
    /// post-processor is rebuilt from them (`<bos> $A <eos>`, each part only
    /// when asked for), as Gemma's and Llama's fast tokenizers do.
    /// `None`: `tokenizer.json`'s post-processor stands.
    pub specials: Option<SpecialTokens>,
    /// `tokenizer_class`, which picks the class defaults.
    pub tokenizer_class: Option<String>,
}

/// The BOS / EOS rule of a rebuilt post-processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `Some(token)` when each text starts with it.
    pub bos: Option<String>,
    /// `Some(token)` when each text ends with it.
    pub eos: Option<String>,
}

#[derive(Deserialize)]
struct TokenizerConfigJson {
    pad_token: Option<serde_json::Value>,
    bos_token: Option<serde_json::Value>,
    eos_token: Option<serde_json::Value>,
    add_bos_token: Option<bool>,
    add_eos_token: Option<bool>,
    padding_side: Option<String>,
    tokenizer_class: Option<String>,
}

/// A token written as a string or as an added token's `{"content": ...}`.
fn token_text(v: Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

impl TokenizerSettings {
    /// What a folder without `tokenizer_config.json` means: `tokenizer.json`
    /// as it is, padded with `default_pad` (the family's).
    pub fn defaults(default_pad: &str) -> Self {
        Self {
            pad_token: default_pad.to_string(),
            padding_side: None,
            specials: None,
            tokenizer_class: None,
        }
    }

    /// Reads `dir/tokenizer_config.json`; a missing file means
    /// [`Self::defaults`], a file that is not valid is an error.
    pub fn from_dir(dir: &Path, default_pad: &str) -> Result<Self> {
        let path = dir.join("tokenizer_config.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::defaults(default_pad));
            }
            Err(e) => {
                return Err(ClipError::ModelFile {
                    path,
                    message: e.to_string(),
                });
            }
        };
        Self::parse(&text, default_pad).map_err(|message| ClipError::ModelFile { path, message })
    }

    fn parse(text: &str, default_pad: &str) -> std::result::Result<Self, String> {
        let j: TokenizerConfigJson = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let padding_side = match j.padding_side.as_deref() {
            None => None,
            Some("right") => Some(PaddingSide::Right),
            Some("left") => Some(PaddingSide::Left),
            Some(other) => {
                return Err(format!(
                    "`padding_side` is {other:?}; transformers accepts \"right\" or \"left\""
                ));
            }
        };
        let gemma_like = class_is_gemma_like(j.tokenizer_class.as_deref());
        let specials = (j.add_bos_token.is_some() || j.add_eos_token.is_some()).then(|| {
            // transformers' Gemma and Llama classes add BOS unless told not to.
            let add_bos = j.add_bos_token.unwrap_or(gemma_like);
            let add_eos = j.add_eos_token.unwrap_or(false);
            SpecialTokens {
                bos: add_bos.then(|| token_text(j.bos_token).unwrap_or_else(|| "<bos>".into())),
                eos: add_eos.then(|| token_text(j.eos_token).unwrap_or_else(|| "<eos>".into())),
            }
        });
        Ok(Self {
            pad_token: token_text(j.pad_token).unwrap_or_else(|| default_pad.to_string()),
            padding_side,
            specials,
            tokenizer_class: j.tokenizer_class,
        })
    }
}

/// transformers' `GemmaTokenizer(Fast)` and `LlamaTokenizer(Fast)`: left
/// padding and a BOS by default.
fn class_is_gemma_like(class: Option<&str>) -> bool {
    class.is_some_and(|c| c.starts_with("GemmaTokenizer") || c.starts_with("LlamaTokenizer"))
}

/// A tokenizer configured for one model.
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    padding_side: PaddingSide,
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
    /// Loads `tokenizer.json` and applies `settings` (from
    /// `tokenizer_config.json`, [`TokenizerSettings::from_dir`]).
    pub fn from_file(path: &Path, max_len: usize, settings: &TokenizerSettings) -> Result<Self> {
        let bad = |message: String| ClipError::ModelFile {
            path: path.to_path_buf(),
            message,
        };
        let mut inner =
            Tokenizer::from_file(path).map_err(|e| bad(format!("cannot load tokenizer: {e}")))?;
        if let Some(specials) = &settings.specials {
            let processor = rebuilt_post_processor(&inner, specials).map_err(bad)?;
            inner.with_post_processor(Some(processor));
        }
        let padding_side = settings.padding_side.unwrap_or_else(|| {
            match inner.get_padding().map(|p| p.direction) {
                Some(PaddingDirection::Left) => PaddingSide::Left,
                Some(PaddingDirection::Right) => PaddingSide::Right,
                None if class_is_gemma_like(settings.tokenizer_class.as_deref()) => {
                    PaddingSide::Left
                }
                None => PaddingSide::Right,
            }
        });
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| ClipError::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        let pad = &settings.pad_token;
        let pad_id = inner.token_to_id(pad).ok_or_else(|| {
            bad(format!(
                "pad token {pad:?} (tokenizer_config.json's pad_token, or the family's) \
                 is not in the vocabulary; does tokenizer.json belong to this model?"
            ))
        })?;
        Ok(Self {
            inner,
            pad_id,
            padding_side,
            max_len,
        })
    }

    /// Which end of a row the pad tokens go to.
    pub fn padding_side(&self) -> PaddingSide {
        self.padding_side
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
            let pads = len - row.len();
            let pad_ids = std::iter::repeat_n(self.pad_id as i64, pads);
            let tokens = row.iter().map(|&i| i as i64);
            match self.padding_side {
                PaddingSide::Right => {
                    ids.extend(tokens.chain(pad_ids));
                    mask.extend(std::iter::repeat_n(1, row.len()));
                    mask.extend(std::iter::repeat_n(0, pads));
                }
                PaddingSide::Left => {
                    ids.extend(pad_ids.chain(tokens));
                    mask.extend(std::iter::repeat_n(0, pads));
                    mask.extend(std::iter::repeat_n(1, row.len()));
                }
            }
        }
        Ok(TokenBatch {
            ids,
            mask,
            rows: rows.len(),
            len,
        })
    }
}

/// `[<bos>] $A [<eos>]` (and `[<bos>] $A [<eos>] [<bos>] $B [<eos>]` for
/// pairs, which ClipQL never encodes), as transformers' Gemma and Llama fast
/// tokenizers build it from `add_bos_token` / `add_eos_token`.
fn rebuilt_post_processor(
    inner: &Tokenizer,
    specials: &SpecialTokens,
) -> std::result::Result<TemplateProcessing, String> {
    let mut tokens = Vec::new();
    for token in [&specials.bos, &specials.eos].into_iter().flatten() {
        let id = inner.token_to_id(token).ok_or_else(|| {
            format!(
                "tokenizer_config.json asks for {token:?} around each text, \
                 but it is not in tokenizer.json's vocabulary"
            )
        })?;
        if token.split_whitespace().count() != 1 {
            return Err(format!("special token {token:?} contains whitespace"));
        }
        tokens.push((token.clone(), id));
    }
    let around = |seq: &str, type_id: u32| {
        let mut parts = Vec::new();
        if let Some(b) = &specials.bos {
            parts.push(format!("{b}:{type_id}"));
        }
        parts.push(format!("${seq}:{type_id}"));
        if let Some(e) = &specials.eos {
            parts.push(format!("{e}:{type_id}"));
        }
        parts.join(" ")
    };
    let pair = format!("{} {}", around("A", 0), around("B", 1));
    TemplateProcessing::builder()
        .try_single(around("A", 0))
        .and_then(|b| b.try_pair(pair))
        .map_err(|e| format!("cannot build the BOS/EOS template: {e}"))?
        .special_tokens(tokens)
        .build()
        .map_err(|e| format!("cannot build the BOS/EOS template: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> std::result::Result<TokenizerSettings, String> {
        TokenizerSettings::parse(json, "</s>")
    }

    #[test]
    fn settings_fall_back_to_the_family_and_keep_tokenizer_json() {
        let s = parse("{}").unwrap();
        assert_eq!(s, TokenizerSettings::defaults("</s>"));
        assert_eq!(
            (s.pad_token.as_str(), s.padding_side, s.specials),
            ("</s>", None, None)
        );
    }

    #[test]
    fn bos_and_eos_flags_rebuild_the_template_with_the_named_tokens() {
        let s = parse(
            r#"{"tokenizer_class": "GemmaTokenizer", "add_bos_token": false, "add_eos_token": true,
                "eos_token": {"content": "<eos>"}, "pad_token": "<pad>", "padding_side": "right"}"#,
        )
        .unwrap();
        let expected = SpecialTokens {
            bos: None,
            eos: Some("<eos>".into()),
        };
        assert_eq!(s.specials, Some(expected));
        assert_eq!(
            (s.pad_token.as_str(), s.padding_side),
            ("<pad>", Some(PaddingSide::Right))
        );
        // Gemma's class adds BOS unless told not to.
        let s =
            parse(r#"{"tokenizer_class": "GemmaTokenizerFast", "add_eos_token": true}"#).unwrap();
        assert_eq!(s.specials.unwrap().bos.as_deref(), Some("<bos>"));
        let s = parse(r#"{"tokenizer_class": "CLIPTokenizer", "add_eos_token": false}"#).unwrap();
        assert_eq!(
            s.specials,
            Some(SpecialTokens {
                bos: None,
                eos: None
            })
        );
    }

    #[test]
    fn a_bad_padding_side_or_file_is_an_error_that_says_what_is_accepted() {
        let e = parse(r#"{"padding_side": "middle"}"#).unwrap_err();
        assert!(
            e.contains("\"middle\"") && e.contains("\"right\" or \"left\""),
            "{e}"
        );
        assert!(parse("{not json").is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer_config.json"), "[").unwrap();
        let e = TokenizerSettings::from_dir(dir.path(), "<|endoftext|>")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer_config.json"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            TokenizerSettings::from_dir(empty.path(), "<|endoftext|>").unwrap(),
            TokenizerSettings::defaults("<|endoftext|>")
        );
    }

    /// The post-processor and padding side in effect, on the SigLIP 2
    /// fixture's tokenizer.json (whose own template is `<bos> $A`).
    #[test]
    fn settings_overrule_tokenizer_json_and_pad_on_their_side() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/siglip2/model/tokenizer.json");
        let mut settings = TokenizerSettings::defaults("</s>");
        settings.pad_token = "<pad>".into();
        let raw = TextTokenizer::from_file(&path, 64, &settings).unwrap();
        let bos = 2;
        let eos = 1;
        let ids = raw.encode("a cat").unwrap();
        assert_eq!((ids[0], ids.last() != Some(&eos)), (bos, true), "{ids:?}");
        assert_eq!(raw.padding_side(), PaddingSide::Right);

        settings.tokenizer_class = Some("GemmaTokenizer".into());
        settings.specials = Some(SpecialTokens {
            bos: None,
            eos: Some("<eos>".into()),
        });
        let gemma = TextTokenizer::from_file(&path, 64, &settings).unwrap();
        assert_eq!(gemma.padding_side(), PaddingSide::Left);
        let ids = gemma.encode("a cat").unwrap();
        assert_eq!(
            ids[..],
            [&raw.encode("a cat").unwrap()[1..], &[eos]].concat()[..]
        );
        let batch = gemma.encode_batch(&["a cat"], Some(ids.len() + 2)).unwrap();
        let expected: Vec<i64> = [0, 0]
            .into_iter()
            .chain(ids.iter().map(|&i| i as i64))
            .collect();
        assert_eq!(batch.ids, expected);
        assert_eq!(&batch.mask[..3], &[0, 0, 1]);

        settings.specials = Some(SpecialTokens {
            bos: None,
            eos: Some("<nope>".into()),
        });
        let e = TextTokenizer::from_file(&path, 64, &settings)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("\"<nope>\"") && e.contains("vocabulary"), "{e}");
    }
}
