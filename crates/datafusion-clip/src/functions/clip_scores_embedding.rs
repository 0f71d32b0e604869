//! `clip_scores_embedding(embedding, labels[, k]) -> List<Struct<label, score>>`:
//! `clip_scores` for a stored image embedding, with no image decode.
//!
//! ```sql
//! SELECT path, clip_scores_embedding(embedding, ['a photo of a cat', 'a photo of a dog'])
//! FROM 'embeddings.parquet';
//! ```
//!
//! `embedding` is what `clip_image_embedding` returned (FixedSizeList), or a
//! List/LargeList of floats as other tools write them; it is re-normalised.

use super::macros::scoring_udf;
use super::scoring::{ScoreInput, ScoreOutput, Scoring};
use super::{Doc, EMBEDDING_ARGUMENT, K_ARGUMENT, LABELS_ARGUMENT};

const SCORING: Scoring = Scoring {
    name: "clip_scores_embedding",
    usage: "clip_scores_embedding(embedding, ['label 1', 'label 2', ...]), or clip_scores_embedding(embedding, [...], k) for the k most likely",
    input: ScoreInput::Embedding,
    output: ScoreOutput::Scores,
    doc: Doc {
        description: "`clip_scores` for a stored image embedding: every label with its probability, highest first (the `k` most likely when `k` is given), with no image decoded. NULL for a NULL embedding or label list.",
        syntax: "clip_scores_embedding(embedding, labels[, k])",
        example: "SELECT path, clip_scores_embedding(embedding, ['a photo of a cat', 'a photo of a dog']) AS scores FROM 'embeddings.parquet';",
        arguments: &[EMBEDDING_ARGUMENT, LABELS_ARGUMENT, K_ARGUMENT],
    },
};

scoring_udf!(
    /// `clip_scores_embedding(embedding, labels)`.
    ClipScoresEmbedding,
    SCORING
);
