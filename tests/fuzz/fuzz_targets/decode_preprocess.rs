//! Arbitrary bytes through decoding and CLIP preprocessing: any input gives
//! pixels or an `ImageError`, never a panic, hang or unbounded allocation.
#![no_main]

use std::sync::OnceLock;

use clip_runtime::{DecodeLimits, PreprocessConfig, decode_rgb_at_least};
use libfuzzer_sys::fuzz_target;

fn config() -> &'static PreprocessConfig {
    static CONFIG: OnceLock<PreprocessConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/model/preprocessor_config.json"
        );
        PreprocessConfig::from_file(std::path::Path::new(path))
            .expect("fixture preprocessor_config.json")
    })
}

fuzz_target!(|data: &[u8]| {
    // The default limits, but a smaller pixel budget keeps each run fast.
    let limits = DecodeLimits::default().with_max_pixels(16_000_000);
    let config = config();
    if let Ok(image) = decode_rgb_at_least(data, &limits, config.min_decoded_side()) {
        let mut out = Vec::new();
        let _ = config.apply(&image, &mut out);
    }
});
