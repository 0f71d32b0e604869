//! What differs between model families, in one place.
//!
//! A family is named by `config.json`'s `model_type`. Everything else about
//! a model that ClipQL needs to know is read from its folder: the
//! preprocessing from `preprocessor_config.json` (a shortest-edge resize and
//! a centre crop for CLIP, an exact resize for others; either gives a fixed
//! input size, which batching keys on: [`crate::PreprocessConfig::fixed_size`]),
//! the context length from `config.json`, the pad token from
//! `tokenizer_config.json`. What is left, and differs, is here:
//! - what `config.json` means where it is silent ([`ModelFamily::config_defaults`]);
//! - how texts are padded when the folder does not say ([`ModelFamily::default_pad_token`],
//!   [`ModelFamily::text_padding`]);
//! - the scoring rule ([`ModelFamily::scoring_rule`]);
//! - what the probe reads from the combined graph to recover the trained
//!   scale ([`ModelFamily::probe_logits`]).
//!
//! A new family (SigLIP, say) is a new variant here, with its answers; the
//! compiler then lists every place that must decide for it.

use crate::score::ScoringRule;

/// A family of two-tower image-text models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ModelFamily {
    /// OpenAI CLIP and its exports (`model_type: "clip"`).
    Clip,
}

/// The values a family's `config.json` defaults to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDefaults {
    /// `projection_dim`: the embedding dimension.
    pub projection_dim: usize,
    /// `text_config.max_position_embeddings`: the text context length.
    pub context_length: usize,
    /// `text_config.vocab_size`.
    pub vocab_size: usize,
}

/// How a family pads a batch of token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextPadding {
    /// To the longest text of the batch (or the length the graph fixes), with
    /// an attention mask: CLIP's text tower reads its output at the end of
    /// text token, so padding does not change an embedding.
    Longest,
}

impl ModelFamily {
    /// Every family ClipQL runs.
    pub const ALL: &'static [ModelFamily] = &[ModelFamily::Clip];

    /// The family `config.json`'s `model_type` names. An export without one
    /// is taken as CLIP, as ClipQL always did.
    pub fn from_model_type(model_type: Option<&str>) -> Result<Self, String> {
        match model_type {
            None => Ok(Self::Clip),
            Some(t) => Self::ALL
                .iter()
                .copied()
                .find(|f| f.model_type() == t)
                .ok_or_else(|| {
                    format!(
                        "model_type {t:?} is not a family ClipQL runs (it runs: {})",
                        Self::ALL
                            .iter()
                            .map(|f| f.model_type())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }),
        }
    }

    /// Its `model_type` in `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Clip => "clip",
        }
    }

    /// What `config.json` means where it says nothing (older exports).
    pub fn config_defaults(self) -> ConfigDefaults {
        match self {
            // transformers' CLIPConfig defaults (ViT-B/32).
            Self::Clip => ConfigDefaults {
                projection_dim: 512,
                context_length: 77,
                vocab_size: 49408,
            },
        }
    }

    /// The pad token when `tokenizer_config.json` does not name one.
    pub fn default_pad_token(self) -> &'static str {
        match self {
            Self::Clip => "<|endoftext|>",
        }
    }

    /// How a batch of texts is padded.
    pub fn text_padding(self) -> TextPadding {
        match self {
            Self::Clip => TextPadding::Longest,
        }
    }

    /// The length to pad every text of a batch to, given the length the
    /// text graph fixes (if it does); `None`: the batch's longest.
    pub fn padded_len(self, graph_len: Option<usize>) -> Option<usize> {
        match self.text_padding() {
            TextPadding::Longest => graph_len,
        }
    }

    /// How `scale · cosine` becomes label scores.
    pub fn scoring_rule(self) -> ScoringRule {
        match self {
            Self::Clip => ScoringRule::Softmax,
        }
    }

    /// The combined graph's output the probe divides by the cosine to
    /// recover the trained scale.
    pub fn probe_logits(self) -> &'static str {
        match self {
            Self::Clip => "logits_per_image",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_types_name_their_family_and_others_are_refused() {
        assert_eq!(ModelFamily::from_model_type(None), Ok(ModelFamily::Clip));
        assert_eq!(
            ModelFamily::from_model_type(Some("clip")),
            Ok(ModelFamily::Clip)
        );
        let refused = ModelFamily::from_model_type(Some("siglip")).unwrap_err();
        assert!(
            refused.contains("\"siglip\"") && refused.contains("it runs: clip"),
            "{refused}"
        );
    }
}
