//! `clip_classify_embedding(embedding, labels) -> Utf8`: `clip_classify` for a
//! stored image embedding, with no image decode.
//!
//! ```sql
//! SELECT path, clip_classify_embedding(embedding, ['a photo of a cat', 'a photo of a dog'])
//! FROM 'embeddings.parquet';
//! ```
//!
//! `embedding` is what `clip_image_embedding` returned (FixedSizeList), or a
//! List/LargeList of floats as other tools write them; it is re-normalised.

use super::macros::scoring_udf;
use super::scoring::{ScoreInput, ScoreOutput, Scoring};
use super::{Doc, EMBEDDING_ARGUMENT, LABELS_ARGUMENT};

const SCORING: Scoring = Scoring {
    name: "clip_classify_embedding",
    usage: "clip_classify_embedding(embedding, ['label 1', 'label 2', ...])",
    input: ScoreInput::Embedding,
    output: ScoreOutput::TopLabel,
    doc: Doc {
        description: "`clip_classify` for a stored image embedding: the most likely label (Utf8), with no image decoded. NULL for a NULL embedding or label list.",
        syntax: "clip_classify_embedding(embedding, labels)",
        example: "SELECT path, clip_classify_embedding(embedding, ['a photo of a cat', 'a photo of a dog']) AS label FROM 'embeddings.parquet';",
        arguments: &[EMBEDDING_ARGUMENT, LABELS_ARGUMENT],
    },
};

scoring_udf!(
    /// `clip_classify_embedding(embedding, labels)`.
    ClipClassifyEmbedding,
    SCORING
);
