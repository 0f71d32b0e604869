//! `clip_scores(image, labels[, k]) -> List<Struct<label: Utf8, score: Float32>>`:
//! every label with its probability, highest first. For CLIP the scores are
//! a softmax over the labels and sum to 1; for SigLIP each is its own
//! sigmoid. With `k`, only the `k` most likely (their probabilities are
//! still over every label).
//!
//! ```sql
//! SELECT name, clip_scores(image, ['a photo of a cat', 'a photo of a dog']) AS scores
//! FROM images;
//! SELECT name, clip_scores(image, labels, 5) AS top5 FROM images, imagenet;
//! ```
//!
//! `image` is Binary, LargeBinary or BinaryView (the encoded file). `labels`
//! is a list literal or a per-row list column of strings. NULL image → NULL;
//! an undecodable image → NULL (or a query error with `clip.on_error = 'fail'`).

use super::macros::scoring_udf;
use super::scoring::{ScoreInput, ScoreOutput, Scoring};
use super::{Doc, IMAGE_ARGUMENT, K_ARGUMENT, LABELS_ARGUMENT};

const SCORING: Scoring = Scoring {
    name: "clip_scores",
    usage: "clip_scores(image, ['label 1', 'label 2', ...]), or clip_scores(image, [...], k) for the k most likely",
    input: ScoreInput::Image,
    output: ScoreOutput::Scores,
    doc: Doc {
        description: "Every label with its probability for each image, highest first (only the `k` most likely when `k` is given), as `List<Struct<label: Utf8, score: Float32>>`. The scores follow the model family: for CLIP a softmax over all the labels, so they sum to 1; for SigLIP an independent sigmoid per label, so they need not. NULL for a NULL image or label list, and for an image that cannot be used (see `clip_image_error`).",
        syntax: "clip_scores(image, labels[, k])",
        example: "SELECT name, clip_scores(image, ['a photo of a cat', 'a photo of a dog']) AS scores FROM images;",
        arguments: &[IMAGE_ARGUMENT, LABELS_ARGUMENT, K_ARGUMENT],
    },
};

scoring_udf!(
    /// `clip_scores(image, labels)`.
    ClipScores,
    SCORING
);
