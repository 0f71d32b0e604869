//! What a model did and how long it took: images decoded, tower runs, cache
//! hits, and the time spent decoding and in each tower.
//!
//! Every model keeps lifetime counters ([`crate::ClipModel::stats`]). A caller
//! that wants the work of one query on its own (a DataFusion plan node
//! reporting to `EXPLAIN ANALYZE`, a CLI run printing `--verbose`) runs that
//! work inside [`InferenceMetrics::scope`]: the model then records into the
//! scope's counters as well. The scope is per thread, and the model records
//! from the thread that called it. Scopes nest, and work counts in the
//! innermost one only, so that nested plan nodes each report their own work.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters that a model adds to as it works. Cheap to share: every field is
/// an atomic.
#[derive(Debug, Default)]
pub struct InferenceMetrics {
    images_decoded: AtomicU64,
    decode_errors: AtomicU64,
    decode_nanos: AtomicU64,
    vision_runs: AtomicU64,
    images_embedded: AtomicU64,
    vision_nanos: AtomicU64,
    image_cache_hits: AtomicU64,
    text_runs: AtomicU64,
    texts_embedded: AtomicU64,
    text_nanos: AtomicU64,
    text_cache_hits: AtomicU64,
}

/// A snapshot of [`InferenceMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Images decoded and preprocessed into pixel values.
    pub images_decoded: u64,
    /// Images that could not be decoded or preprocessed.
    pub decode_errors: u64,
    /// Time spent decoding and preprocessing, summed over threads.
    pub decode_time: Duration,
    /// Vision-tower runs (one per batch).
    pub vision_runs: u64,
    /// Images successfully embedded.
    pub images_embedded: u64,
    /// Time spent in the vision tower (running, not waiting for a session).
    pub vision_time: Duration,
    /// Images answered from the recent-image cache (the same bytes seen
    /// before), or from an identical image earlier in the same call.
    pub image_cache_hits: u64,
    /// Text-tower runs.
    pub text_runs: u64,
    /// Distinct texts embedded (cache misses).
    pub texts_embedded: u64,
    /// Time spent tokenising and in the text tower.
    pub text_time: Duration,
    /// Distinct texts answered from the text-embedding cache.
    pub text_cache_hits: u64,
}

thread_local! {
    static SCOPE: RefCell<Vec<Arc<InferenceMetrics>>> = const { RefCell::new(Vec::new()) };
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl InferenceMetrics {
    /// Runs `f` with `metrics` as this thread's scope: what any model does
    /// inside `f` on this thread is also counted in `metrics`, unless a
    /// scope nested inside `f` takes it.
    pub fn scope<R>(metrics: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        struct Pop;
        impl Drop for Pop {
            fn drop(&mut self) {
                SCOPE.with(|s| s.borrow_mut().pop());
            }
        }
        SCOPE.with(|s| s.borrow_mut().push(Arc::clone(metrics)));
        let _pop = Pop;
        f()
    }

    /// The counters so far.
    pub fn snapshot(&self) -> ModelStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ModelStats {
            images_decoded: get(&self.images_decoded),
            decode_errors: get(&self.decode_errors),
            decode_time: Duration::from_nanos(get(&self.decode_nanos)),
            vision_runs: get(&self.vision_runs),
            images_embedded: get(&self.images_embedded),
            vision_time: Duration::from_nanos(get(&self.vision_nanos)),
            image_cache_hits: get(&self.image_cache_hits),
            text_runs: get(&self.text_runs),
            texts_embedded: get(&self.texts_embedded),
            text_time: Duration::from_nanos(get(&self.text_nanos)),
            text_cache_hits: get(&self.text_cache_hits),
        }
    }
}

/// One recorded event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Decoded { ok: bool, took: Duration },
    Vision { images: u64, took: Duration },
    ImageCacheHits(u64),
    Text { texts: u64, took: Duration },
    TextCacheHits(u64),
}

impl Event {
    fn apply(self, m: &InferenceMetrics) {
        let add = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        match self {
            Self::Decoded { ok, took } => {
                add(
                    if ok {
                        &m.images_decoded
                    } else {
                        &m.decode_errors
                    },
                    1,
                );
                add(&m.decode_nanos, nanos(took));
            }
            Self::Vision { images, took } => {
                add(&m.vision_runs, 1);
                add(&m.images_embedded, images);
                add(&m.vision_nanos, nanos(took));
            }
            Self::ImageCacheHits(n) => add(&m.image_cache_hits, n),
            Self::Text { texts, took } => {
                add(&m.text_runs, 1);
                add(&m.texts_embedded, texts);
                add(&m.text_nanos, nanos(took));
            }
            Self::TextCacheHits(n) => add(&m.text_cache_hits, n),
        }
    }

    /// Counts the event in `lifetime` and in this thread's innermost scope.
    pub(crate) fn record(self, lifetime: &InferenceMetrics) {
        self.apply(lifetime);
        SCOPE.with(|s| {
            if let Some(m) = s.borrow().last() {
                self.apply(m);
            }
        });
    }
}

/// Times `f`.
pub(crate) fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_scope_counts_the_work() {
        let lifetime = InferenceMetrics::default();
        let outer = Arc::new(InferenceMetrics::default());
        let inner = Arc::new(InferenceMetrics::default());
        let text = Event::Text {
            texts: 3,
            took: Duration::from_millis(2),
        };
        text.record(&lifetime);
        InferenceMetrics::scope(&outer, || {
            Event::ImageCacheHits(1).record(&lifetime);
            InferenceMetrics::scope(&inner, || text.record(&lifetime));
            Event::TextCacheHits(2).record(&lifetime);
        });
        // Out of scope again: only the lifetime counters see this.
        Event::TextCacheHits(5).record(&lifetime);

        let all = lifetime.snapshot();
        assert_eq!((all.text_runs, all.texts_embedded), (2, 6));
        assert_eq!(all.text_time, Duration::from_millis(4));
        assert_eq!((all.image_cache_hits, all.text_cache_hits), (1, 7));
        let o = outer.snapshot();
        assert_eq!(
            (o.text_runs, o.image_cache_hits, o.text_cache_hits),
            (0, 1, 2)
        );
        let i = inner.snapshot();
        assert_eq!(
            (i.text_runs, i.texts_embedded, i.image_cache_hits),
            (1, 3, 0)
        );
    }

    #[test]
    fn a_panic_inside_a_scope_leaves_no_scope_behind() {
        let lifetime = InferenceMetrics::default();
        let m = Arc::new(InferenceMetrics::default());
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            InferenceMetrics::scope(&m, || panic!("boom"))
        }));
        assert!(caught.is_err());
        Event::ImageCacheHits(1).record(&lifetime);
        assert_eq!(m.snapshot().image_cache_hits, 0);
    }
}
