//! The `clip_*` scalar functions: the one list of them, and the rules every
//! one follows.
//!
//! Adding a function: write `clip_<name>.rs` here (its struct, its
//! `ScalarUDFImpl` with `documentation()`, and a `//!` header with an
//! example), then add it to [`all_functions`]. If it runs without a model,
//! add its name to [`NEED_NO_MODEL`]. The tests below check the rules.

mod args;
mod images;
mod labels;
mod macros;
mod results;
mod scoring;
mod show;

mod clip_classify;
mod clip_classify_embedding;
mod clip_image_embedding;
mod clip_image_error;
mod clip_prompts;
mod clip_scores;
mod clip_scores_embedding;
mod clip_tags;
mod clip_tags_embedding;
mod clip_text_embedding;

use std::sync::{Arc, OnceLock};

use datafusion::logical_expr::{DocSection, Documentation, ScalarUDF};

pub use clip_classify::ClipClassify;
pub use clip_classify_embedding::ClipClassifyEmbedding;
pub use clip_image_embedding::ClipImageEmbedding;
pub use clip_image_error::ClipImageError;
pub use clip_prompts::ClipPrompts;
pub use clip_scores::ClipScores;
pub use clip_scores_embedding::ClipScoresEmbedding;
pub use clip_tags::ClipTags;
pub use clip_tags_embedding::ClipTagsEmbedding;
pub use clip_text_embedding::ClipTextEmbedding;
pub use labels::{MAX_LABEL_BYTES, MAX_LABELS};
pub use results::{scores_array, scores_type, utf8_list_type, utf8_lists};
pub use show::show_functions;

/// Every ClipQL function's name starts with this. The IMAGE scan relies on
/// it: a filter that calls a `clip_*` function would run a model at
/// planning time, so it is never pushed into the scan.
pub const PREFIX: &str = "clip_";

/// The functions that run without a model: `clipql sql` does not pull the
/// default model for SQL that calls only these, and they plan with
/// `clip.model` unset.
pub const NEED_NO_MODEL: &[&str] = &["clip_image_error", "clip_prompts"];

/// Every `clip_*` scalar function, unconfigured.
pub fn all_functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::new_from_impl(ClipClassify::new())),
        Arc::new(ScalarUDF::new_from_impl(ClipScores::new())),
        Arc::new(ScalarUDF::new_from_impl(ClipTags::new())),
        Arc::new(ScalarUDF::new_from_impl(ClipImageEmbedding::new())),
        Arc::new(ScalarUDF::new_from_impl(ClipTextEmbedding::new())),
        Arc::new(ScalarUDF::new_from_impl(ClipClassifyEmbedding::new())),
        Arc::new(ScalarUDF::new_from_impl(ClipScoresEmbedding::new())),
        Arc::new(ScalarUDF::new_from_impl(ClipTagsEmbedding::new())),
        Arc::new(ScalarUDF::new_from_impl(ClipImageError::new())),
        Arc::new(ScalarUDF::new_from_impl(ClipPrompts::new())),
    ]
}

/// Whether a function of this name is one of ClipQL's (see [`PREFIX`]).
pub fn is_clip_function(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// Whether the ClipQL function `name` needs a model (see [`NEED_NO_MODEL`]).
pub fn needs_model(name: &str) -> bool {
    is_clip_function(name) && !NEED_NO_MODEL.contains(&name)
}

/// A function's documentation, as `SHOW FUNCTIONS` and
/// `information_schema.routines` show it. Each function file holds one as a
/// constant; [`Doc::get`] builds DataFusion's `Documentation` once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Doc {
    /// One paragraph: what it returns, and for which inputs NULL.
    pub description: &'static str,
    /// How to call it, e.g. `clip_classify(image, labels)`.
    pub syntax: &'static str,
    /// A query that uses it.
    pub example: &'static str,
    /// Each argument's name and what it takes.
    pub arguments: &'static [(&'static str, &'static str)],
}

impl Doc {
    /// The `Documentation`, built on first use and kept in `cell`.
    pub(crate) fn get(&self, cell: &'static OnceLock<Documentation>) -> &'static Documentation {
        cell.get_or_init(|| {
            let section = DocSection {
                include: true,
                label: "ClipQL functions",
                description: Some("CLIP zero-shot image classification and embeddings"),
            };
            let mut builder = Documentation::builder(section, self.description, self.syntax)
                .with_sql_example(format!("```sql\n{}\n```", self.example));
            for (name, text) in self.arguments {
                builder = builder.with_argument(*name, *text);
            }
            builder.build()
        })
    }
}

/// The argument docs the image functions share.
pub(crate) const IMAGE_ARGUMENT: (&str, &str) = (
    "image",
    "The encoded image file (Binary, LargeBinary or BinaryView), such as an IMAGE table's `image` column.",
);

/// The argument docs the scoring functions share.
pub(crate) const LABELS_ARGUMENT: (&str, &str) = (
    "labels",
    "The candidate labels: a list literal such as `['a photo of a cat', 'a photo of a dog']`, or a per-row list-of-strings column.",
);

/// The optional argument of `clip_scores` and `clip_scores_embedding`.
pub(crate) const K_ARGUMENT: (&str, &str) = (
    "k",
    "Optional: how many labels to keep, the most likely first (a positive integer, a literal or a column). Leave it out for every label.",
);

/// The argument of `clip_tags` and `clip_tags_embedding`.
pub(crate) const THRESHOLD_ARGUMENT: (&str, &str) = (
    "threshold",
    "The score a label must reach to be listed: a number from 0 to 1 (a literal or a column). Scores follow the model family: a softmax over the labels for CLIP, an independent sigmoid per label for SigLIP.",
);

/// The argument docs the `_embedding` scoring functions share.
pub(crate) const EMBEDDING_ARGUMENT: (&str, &str) = (
    "embedding",
    "A stored image embedding: what `clip_image_embedding` returned, or any list of floats of the model's dimension (it is re-normalised).",
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::config::ConfigOptions;
    use datafusion::logical_expr::ReturnFieldArgs;

    use super::*;
    use crate::options::ClipOptions;

    #[test]
    fn every_function_is_named_with_the_prefix_and_documented() {
        let functions = all_functions();
        let mut names: Vec<&str> = functions.iter().map(|f| f.name()).collect();
        for f in &functions {
            assert!(is_clip_function(f.name()), "{} lacks {PREFIX}", f.name());
            let doc = f
                .documentation()
                .unwrap_or_else(|| panic!("{} has no documentation()", f.name()));
            assert!(
                doc.syntax_example.starts_with(&format!("{}(", f.name())),
                "{}: syntax {:?}",
                f.name(),
                doc.syntax_example
            );
            let example = doc.sql_example.as_deref().unwrap();
            assert!(
                example.contains(f.name()),
                "{}: example {example:?}",
                f.name()
            );
            assert!(!doc.description.is_empty());
            let arguments = doc.arguments.as_ref().unwrap();
            for (name, _) in arguments {
                assert!(
                    doc.syntax_example.contains(name.as_str()),
                    "{}: argument {name} is not in {:?}",
                    f.name(),
                    doc.syntax_example
                );
            }
        }
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a name is listed twice");
        for name in NEED_NO_MODEL {
            assert!(
                names.contains(name),
                "{name} is in NEED_NO_MODEL but not a function"
            );
        }
    }

    /// The NEED_NO_MODEL list is what planning does: with `clip.model`
    /// naming a hub repo that is not in the HF cache, exactly those functions
    /// still plan.
    #[test]
    fn exactly_the_listed_functions_plan_without_a_model() {
        let mut config = ConfigOptions::new();
        let mut options = ClipOptions::default();
        datafusion::config::ExtensionOptions::set(
            &mut options,
            "model",
            "clipql-tests/never-cached-model",
        )
        .unwrap();
        config.extensions.insert(options);
        for f in all_functions() {
            let f = f
                .inner()
                .with_updated_config(&config)
                .unwrap_or_else(|| f.as_ref().clone());
            let image = Arc::new(Field::new("a", DataType::Binary, true));
            let labels = Arc::new(Field::new(
                "b",
                DataType::new_list(DataType::Utf8, true),
                true,
            ));
            let fields = match f.name() {
                "clip_text_embedding" => vec![Arc::new(Field::new("a", DataType::Utf8, true))],
                "clip_image_embedding" | "clip_image_error" => vec![image],
                _ => vec![image, labels],
            };
            let planned = f.return_field_from_args(ReturnFieldArgs {
                arg_fields: &fields,
                scalar_arguments: &vec![None; fields.len()],
            });
            assert_eq!(
                planned.is_err(),
                needs_model(f.name()),
                "{}: {planned:?}",
                f.name()
            );
        }
    }
}
