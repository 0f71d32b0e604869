//! `clip_scores_embedding(embedding, labels) -> List<Struct<label, score>>`: `clip_scores` for a
//! stored image embedding, with no image decode.
//!
//! ```sql
//! SELECT path, clip_scores_embedding(embedding, ['a photo of a cat', 'a photo of a dog'])
//! FROM 'embeddings.parquet';
//! ```
//!
//! `embedding` is what `clip_image_embedding` returned (FixedSizeList), or a
//! List/LargeList of floats as other tools write them; it is re-normalised.

use crate::common::{ScoreInput, ScoreOutput, Scoring, scoring_udf};

const SCORING: Scoring = Scoring {
    name: "clip_scores_embedding",
    usage: "clip_scores_embedding(embedding, ['label 1', 'label 2', ...])",
    input: ScoreInput::Embedding,
    output: ScoreOutput::Scores,
};

scoring_udf!(
    /// `clip_scores_embedding(embedding, labels)`.
    ClipScoresEmbedding,
    SCORING
);
