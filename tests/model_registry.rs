//! `load_shared`'s registry is bounded (issue 14, item 10): `SET
//! clip.intra_threads` to 1…N from SQL used to load N full model copies and
//! keep them all. A test binary of its own, so no other test's models count.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;

use clip_runtime::{DEFAULT_MAX_MODELS, ModelOptions, load_shared, loaded_models};

#[test]
fn idle_models_are_evicted_least_recently_used_first_and_held_ones_never() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/model");
    let options = |threads| ModelOptions::default().with_intra_threads(threads);
    let held = load_shared(&dir, options(1)).unwrap();
    for threads in 2..=8 {
        let model = load_shared(&dir, options(threads)).unwrap();
        assert!(
            loaded_models() <= DEFAULT_MAX_MODELS,
            "{} loaded",
            loaded_models()
        );
        drop(model);
    }
    assert_eq!(loaded_models(), DEFAULT_MAX_MODELS);
    // The held model was never evicted: loading it again is the same copy.
    assert!(Arc::ptr_eq(&held, &load_shared(&dir, options(1)).unwrap()));
    // Using a loaded model loads nothing more.
    let recent = load_shared(&dir, options(8)).unwrap();
    assert_eq!(loaded_models(), DEFAULT_MAX_MODELS);
    drop(recent);

    // Every model in use stays, even past the bound, until it is let go.
    let in_use: Vec<_> = (20..20 + DEFAULT_MAX_MODELS + 2)
        .map(|t| load_shared(&dir, options(t)).unwrap())
        .collect();
    assert_eq!(loaded_models(), in_use.len() + 1, "all in use, plus `held`");
    drop(in_use);
    let _one_more = load_shared(&dir, options(40)).unwrap();
    assert!(
        loaded_models() <= DEFAULT_MAX_MODELS,
        "{} loaded",
        loaded_models()
    );

    // A failed load caches nothing.
    assert!(load_shared(Path::new("/nonexistent/model"), options(1)).is_err());
    assert!(loaded_models() <= DEFAULT_MAX_MODELS);
}
