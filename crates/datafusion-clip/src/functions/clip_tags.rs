//! `clip_tags(image, labels, threshold) -> List<Utf8>`: every label whose
//! score reaches `threshold`, the most likely first; an empty list when none
//! does.
//!
//! ```sql
//! SELECT name, clip_tags(image, ['a cat', 'a dog', 'a sofa'], 0.3) AS tags FROM images;
//! -- "None of these": the top label only when it is likely enough.
//! SELECT name, coalesce(clip_tags(image, ['a cat', 'a dog'], 0.5)[1], 'none of these') AS label
//! FROM images WHERE clip_image_error(image) IS NULL;
//! ```
//!
//! The score is the model family's (a softmax for CLIP, a sigmoid per label
//! for SigLIP), so with CLIP a label's tag depends on the others offered.
//! `threshold` is a number from 0 to 1 (a literal, or a per-row column).
//! NULL image → NULL; an undecodable image → NULL (or a query error with
//! `clip.on_error = 'fail'`).

use super::macros::scoring_udf;
use super::scoring::{ScoreInput, ScoreOutput, Scoring};
use super::{Doc, IMAGE_ARGUMENT, LABELS_ARGUMENT, THRESHOLD_ARGUMENT};

const SCORING: Scoring = Scoring {
    name: "clip_tags",
    usage: "clip_tags(image, ['label 1', 'label 2', ...], threshold), with threshold a number from 0 to 1 such as 0.3",
    input: ScoreInput::Image,
    output: ScoreOutput::Tags,
    doc: Doc {
        description: "Every label whose score reaches `threshold`, the most likely first, as `List<Utf8>` (empty when none does): multi-label answers, and with `[1]` the top label or NULL for \"none of these\". Scores follow the model family (a softmax over the labels for CLIP, an independent sigmoid per label for SigLIP). NULL for a NULL image or label list, and for an image that cannot be used (see `clip_image_error`).",
        syntax: "clip_tags(image, labels, threshold)",
        example: "SELECT name, clip_tags(image, ['a photo of a cat', 'a photo of a dog', 'a photo of a sofa'], 0.3) AS tags FROM images;",
        arguments: &[IMAGE_ARGUMENT, LABELS_ARGUMENT, THRESHOLD_ARGUMENT],
    },
};

scoring_udf!(
    /// `clip_tags(image, labels, threshold)`.
    ClipTags,
    SCORING
);
