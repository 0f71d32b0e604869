//! `clip_classify(image, labels) -> Utf8`: the most likely label for each image.
//!
//! ```sql
//! SELECT name, clip_classify(image, ['a photo of a cat', 'a photo of a dog']) AS label
//! FROM images;
//! ```
//!
//! `image` is Binary, LargeBinary or BinaryView (the encoded file). `labels`
//! is a list literal or a per-row list column of strings. NULL image → NULL;
//! an undecodable image → NULL (or a query error with `clip.on_error = 'fail'`).

use super::macros::scoring_udf;
use super::scoring::{ScoreInput, ScoreOutput, Scoring};
use super::{Doc, IMAGE_ARGUMENT, LABELS_ARGUMENT};

const SCORING: Scoring = Scoring {
    name: "clip_classify",
    usage: "clip_classify(image, ['label 1', 'label 2', ...])",
    input: ScoreInput::Image,
    output: ScoreOutput::TopLabel,
    doc: Doc {
        description: "The most likely of the labels for each image (Utf8): CLIP embeds the image and every label, and the label closest to the image wins. NULL for a NULL image or label list; an image that cannot be used gives NULL (or fails the query with `clip.on_error = 'fail'`), and `clip_image_error(image)` says why.",
        syntax: "clip_classify(image, labels)",
        example: "SELECT name, clip_classify(image, ['a photo of a cat', 'a photo of a dog']) AS label FROM images;",
        arguments: &[IMAGE_ARGUMENT, LABELS_ARGUMENT],
    },
};

scoring_udf!(
    /// `clip_classify(image, labels)`.
    ClipClassify,
    SCORING
);
