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

use crate::common::{ScoreInput, ScoreOutput, Scoring, scoring_udf};

const SCORING: Scoring = Scoring {
    name: "clip_classify",
    usage: "clip_classify(image, ['label 1', 'label 2', ...])",
    input: ScoreInput::Image,
    output: ScoreOutput::TopLabel,
};

scoring_udf!(
    /// `clip_classify(image, labels)`.
    ClipClassify,
    SCORING
);
