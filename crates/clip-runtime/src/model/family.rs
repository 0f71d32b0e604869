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
//! A new family is a new variant here, with its answers; the compiler then
//! lists every place that must decide for it.

use crate::score::ScoringRule;

/// A family of two-tower image-text models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ModelFamily {
    /// OpenAI CLIP and its exports (`model_type: "clip"`).
    Clip,
    /// Google's SigLIP (`model_type: "siglip"`), and SigLIP 2 at a fixed
    /// resolution, whose checkpoints (`google/siglip2-base-patch16-224`)
    /// are `SiglipModel`s with another tokenizer.
    Siglip,
}

/// `model_type`s that name a family ClipQL does not run, with why and what
/// to use instead.
const REFUSED: &[(&str, &str)] = &[(
    "siglip2",
    "SigLIP 2 NaFlex checkpoints take images at their own resolution \
     (patches plus a pixel_attention_mask and spatial_shapes), which ClipQL \
     does not run; use a fixed-resolution SigLIP 2 checkpoint such as \
     google/siglip2-base-patch16-224 (its model_type is \"siglip\")",
)];

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
    /// Always to the context length: SigLIP's text tower reads its output at
    /// the last position, a pad token for every shorter text, so the
    /// embedding depends on the padded length.
    MaxLength,
}

impl ModelFamily {
    /// Every family ClipQL runs.
    pub const ALL: &'static [ModelFamily] = &[ModelFamily::Clip, ModelFamily::Siglip];

    /// The family `config.json`'s `model_type` names. An export without one
    /// is taken as CLIP, as ClipQL always did.
    pub fn from_model_type(model_type: Option<&str>) -> Result<Self, String> {
        match model_type {
            None => Ok(Self::Clip),
            Some(t) => Self::ALL
                .iter()
                .copied()
                .find(|f| f.model_type() == t)
                .ok_or_else(|| match REFUSED.iter().find(|(r, _)| *r == t) {
                    Some((_, why)) => {
                        format!("model_type {t:?} is not a family ClipQL runs: {why}")
                    }
                    None => format!(
                        "model_type {t:?} is not a family ClipQL runs (it runs: {})",
                        Self::ALL
                            .iter()
                            .map(|f| f.model_type())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
        }
    }

    /// Its `model_type` in `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Clip => "clip",
            Self::Siglip => "siglip",
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
            // transformers' SiglipConfig defaults (base, patch 16, 224).
            Self::Siglip => ConfigDefaults {
                projection_dim: 768,
                context_length: 64,
                vocab_size: 32000,
            },
        }
    }

    /// The pad token when `tokenizer_config.json` does not name one.
    pub fn default_pad_token(self) -> &'static str {
        match self {
            Self::Clip => "<|endoftext|>",
            Self::Siglip => "</s>",
        }
    }

    /// How a batch of texts is padded.
    pub fn text_padding(self) -> TextPadding {
        match self {
            Self::Clip => TextPadding::Longest,
            Self::Siglip => TextPadding::MaxLength,
        }
    }

    /// The length to pad every text of a batch to, given the length the
    /// text graph fixes (if it does) and the model's context length;
    /// `None`: the batch's longest.
    pub fn padded_len(self, graph_len: Option<usize>, context_length: usize) -> Option<usize> {
        match self.text_padding() {
            TextPadding::Longest => graph_len,
            TextPadding::MaxLength => Some(graph_len.unwrap_or(context_length)),
        }
    }

    /// How `scale · cosine` becomes label scores.
    pub fn scoring_rule(self) -> ScoringRule {
        match self {
            Self::Clip => ScoringRule::Softmax,
            Self::Siglip => ScoringRule::Sigmoid,
        }
    }

    /// The names a tower's embedding output may have, in the order looked
    /// for: `image_embeds` / `text_embeds` for CLIP's `*WithProjection`
    /// exports; SigLIP's towers have no projection apart from their heads, so
    /// its exports (Transformers.js layout) name it `pooler_output`. A CLIP
    /// tower's `pooler_output` is *before* the projection, so it is never
    /// taken for CLIP.
    pub fn embedding_outputs(self, tower: Modality) -> &'static [&'static str] {
        match (self, tower) {
            (Self::Clip, Modality::Image) => &["image_embeds"],
            (Self::Clip, Modality::Text) => &["text_embeds"],
            (Self::Siglip, Modality::Image) => &["pooler_output", "image_embeds"],
            (Self::Siglip, Modality::Text) => &["pooler_output", "text_embeds"],
        }
    }

    /// The combined graph's output the probe divides by the cosine to
    /// recover the trained scale.
    pub fn probe_logits(self) -> &'static str {
        match self {
            Self::Clip | Self::Siglip => "logits_per_image",
        }
    }
}

/// One of a model's two towers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// The vision tower.
    Image,
    /// The text tower.
    Text,
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
        assert_eq!(
            ModelFamily::from_model_type(Some("siglip")),
            Ok(ModelFamily::Siglip)
        );
        let refused = ModelFamily::from_model_type(Some("blip")).unwrap_err();
        assert!(
            refused.contains("\"blip\"") && refused.contains("it runs: clip, siglip"),
            "{refused}"
        );
        let naflex = ModelFamily::from_model_type(Some("siglip2")).unwrap_err();
        assert!(
            naflex.contains("NaFlex") && naflex.contains("google/siglip2-base-patch16-224"),
            "{naflex}"
        );
    }

    #[test]
    fn siglip_pads_to_the_context_length_and_clip_to_the_longest() {
        assert_eq!(ModelFamily::Clip.padded_len(None, 77), None);
        assert_eq!(ModelFamily::Clip.padded_len(Some(77), 77), Some(77));
        assert_eq!(ModelFamily::Siglip.padded_len(None, 64), Some(64));
        assert_eq!(ModelFamily::Siglip.padded_len(Some(16), 64), Some(16));
    }
}
