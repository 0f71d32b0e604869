//! `clip_scores(image, labels) -> List<Struct<label: Utf8, score: Float32>>`:
//! every label with its probability, highest first; the scores sum to 1.
//!
//! ```sql
//! SELECT name, clip_scores(image, ['a photo of a cat', 'a photo of a dog']) AS scores
//! FROM images;
//! ```
//!
//! `image` is Binary, LargeBinary or BinaryView (the encoded file). `labels`
//! is a list literal or a per-row list column of strings. NULL image → NULL;
//! an undecodable image → NULL (or a query error with `clip.on_error = 'fail'`).

use crate::common::{ScoreInput, ScoreOutput, Scoring, scoring_udf};

const SCORING: Scoring = Scoring {
    name: "clip_scores",
    usage: "clip_scores(image, ['label 1', 'label 2', ...])",
    input: ScoreInput::Image,
    output: ScoreOutput::Scores,
};

scoring_udf!(
    /// `clip_scores(image, labels)`.
    ClipScores,
    SCORING
);
