//! `clip_tags_embedding(embedding, labels, threshold) -> List<Utf8>`:
//! `clip_tags` for a stored image embedding, with no image decode.
//!
//! ```sql
//! SELECT path, clip_tags_embedding(embedding, ['a cat', 'a dog', 'a sofa'], 0.3)
//! FROM 'embeddings.parquet';
//! ```
//!
//! `embedding` is what `clip_image_embedding` returned (FixedSizeList), or a
//! List/LargeList of floats as other tools write them; it is re-normalised.

use super::macros::scoring_udf;
use super::scoring::{ScoreInput, ScoreOutput, Scoring};
use super::{Doc, EMBEDDING_ARGUMENT, LABELS_ARGUMENT, THRESHOLD_ARGUMENT};

const SCORING: Scoring = Scoring {
    name: "clip_tags_embedding",
    usage: "clip_tags_embedding(embedding, ['label 1', 'label 2', ...], threshold), with threshold a number from 0 to 1 such as 0.3",
    input: ScoreInput::Embedding,
    output: ScoreOutput::Tags,
    doc: Doc {
        description: "`clip_tags` for a stored image embedding: every label whose score reaches `threshold`, the most likely first, with no image decoded. NULL for a NULL embedding or label list.",
        syntax: "clip_tags_embedding(embedding, labels, threshold)",
        example: "SELECT path, clip_tags_embedding(embedding, ['a photo of a cat', 'a photo of a dog'], 0.3) AS tags FROM 'embeddings.parquet';",
        arguments: &[EMBEDDING_ARGUMENT, LABELS_ARGUMENT, THRESHOLD_ARGUMENT],
    },
};

scoring_udf!(
    /// `clip_tags_embedding(embedding, labels, threshold)`.
    ClipTagsEmbedding,
    SCORING
);
