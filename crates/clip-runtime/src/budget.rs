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
/// maximal image at a time, so that peak RSS stays under 2 GB with the
/// default limits (ViT-B/32 and the process's other memory included).
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
    pub fn acquire(pixels: u64) -> Self {
        let budget = budget();
        let bytes = pixels.saturating_mul(BYTES_PER_PIXEL).min(budget.total);
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
}
