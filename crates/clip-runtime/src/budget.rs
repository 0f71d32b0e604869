//! One process-wide budget for the memory that decoding and resizing images
//! take, shared by every partition, query and model.
//!
//! An image just under `clip.max_image_pixels` (89 MP) costs about 1.3 GB
//! to decode and resize, and a solid-colour PNG of 250 KB can ask for that.
//! Without a shared bound, every partition could decode one at once (four
//! partitions: over 5 GB). Each decode first takes `pixels ×`
//! [`BYTES_PER_PIXEL`] from this budget and gives it back when the image's
//! pixel values are made, so large images wait for each other while small
//! ones pass side by side. An image larger than the whole budget waits until
//! it is alone, then runs.

use std::sync::{Condvar, Mutex, OnceLock};

/// The budget when `CLIPQL_DECODE_MEMORY_MB` is unset: 1.5 GiB, one
/// maximal image at a time. With a ViT-B/32-sized model, a process that
/// meets maximal images peaks at about 2.3 GB of RSS however many
/// partitions decode (measured in README.md, "Decode memory is bounded").
pub const DEFAULT_DECODE_MEMORY: u64 = 1536 << 20;

/// What one source pixel costs at most from decode to pixel values: the
/// decoded RGB8 image (3 bytes), the resize's `f32` copy of it (12), and
/// one byte of slack for decoders' own buffers.
pub const BYTES_PER_PIXEL: u64 = 16;

struct Budget {
    total: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

fn budget() -> &'static Budget {
    static BUDGET: OnceLock<Budget> = OnceLock::new();
    BUDGET.get_or_init(|| Budget {
        total: std::env::var("CLIPQL_DECODE_MEMORY_MB")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&mb| mb > 0)
            .map_or(DEFAULT_DECODE_MEMORY, |mb| mb << 20),
        used: Mutex::new(0),
        freed: Condvar::new(),
    })
}

/// A share of the decode budget, given back on drop.
#[derive(Debug)]
pub struct DecodePermit {
    bytes: u64,
}

impl DecodePermit {
    /// Waits for `pixels ×` [`BYTES_PER_PIXEL`] of the budget (capped at the
    /// whole budget).
    ///
    /// Called on a worker thread of a multi-threaded tokio runtime (where
    /// DataFusion runs the `clip_*` functions), a wait hands that worker's
    /// other tasks (the scan's reads, other queries) to another thread first
    /// (`block_in_place`), so waiting for memory never stalls them.
    pub fn acquire(pixels: u64) -> Self {
        let budget = budget();
        let bytes = pixels.saturating_mul(BYTES_PER_PIXEL).min(budget.total);
        if let Some(permit) = Self::try_take(bytes) {
            return permit;
        }
        let on_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_worker {
            tokio::task::block_in_place(|| Self::wait_for(bytes))
        } else {
            Self::wait_for(bytes)
        }
    }

    /// The share, if it is free now.
    fn try_take(bytes: u64) -> Option<Self> {
        let budget = budget();
        let mut used = budget.used.lock().unwrap_or_else(|p| p.into_inner());
        (*used + bytes <= budget.total).then(|| {
            *used += bytes;
            Self { bytes }
        })
    }

    fn wait_for(bytes: u64) -> Self {
        let budget = budget();
        let mut used = budget.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used + bytes > budget.total {
            used = budget.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        Self { bytes }
    }

    /// Bytes of the budget held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for DecodePermit {
    fn drop(&mut self) {
        let budget = budget();
        let mut used = budget.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(self.bytes);
        budget.freed.notify_all();
    }
}

/// The whole budget, in bytes.
pub fn decode_memory() -> u64 {
    budget().total
}

/// Bytes of the budget held now.
pub fn decode_memory_in_use() -> u64 {
    *budget().used.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn concurrent_large_decodes_never_exceed_the_budget() {
        let total = decode_memory();
        let peak = AtomicU64::new(0);
        let held = AtomicU64::new(0);
        // Each asks for 60% of the budget: only one fits at a time.
        let pixels = total * 6 / 10 / BYTES_PER_PIXEL;
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let permit = DecodePermit::acquire(pixels);
                    let now = held.fetch_add(permit.bytes(), Ordering::SeqCst) + permit.bytes();
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    held.fetch_sub(permit.bytes(), Ordering::SeqCst);
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= total);
        assert!(peak.load(Ordering::SeqCst) >= total * 6 / 10 - BYTES_PER_PIXEL);
        // More than the whole budget is capped, so it runs (alone).
        let huge = DecodePermit::acquire(u64::MAX);
        assert_eq!(huge.bytes(), total);
    }

    /// Issue 26, item 4: a task waiting for the budget on a tokio worker
    /// does not stall the worker's other tasks. The runtime has one worker:
    /// without `block_in_place`, the second task could never run while the
    /// first waits.
    #[test]
    fn waiting_for_the_budget_never_stalls_a_tokio_worker() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        // Another thread holds the whole budget until told to let go.
        let holder = std::thread::spawn(move || {
            let all = DecodePermit::acquire(u64::MAX);
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            drop(all);
        });
        held_rx.recv().unwrap();
        let (ran_tx, ran_rx) = std::sync::mpsc::channel();
        // The future given to block_on runs on this thread, not the worker,
        // and it waits with std's blocking calls only (a tokio timer needs a
        // free worker).
        runtime.block_on(async move {
            let waiting = tokio::spawn(async { DecodePermit::acquire(1).bytes() });
            // Let the waiting task take the only worker first.
            std::thread::sleep(std::time::Duration::from_millis(50));
            tokio::spawn(async move {
                let _ = ran_tx.send(());
            });
            let ran = ran_rx.recv_timeout(std::time::Duration::from_secs(10));
            release_tx.send(()).unwrap();
            assert!(ran.is_ok(), "the other task never ran while one waited");
            assert_eq!(waiting.await.unwrap(), BYTES_PER_PIXEL);
        });
        holder.join().unwrap();
    }
}
