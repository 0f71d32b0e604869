//! Arbitrary bytes as a Binary column through `clip_classify` and
//! `clip_image_error` (the body is `targets::udf_binary`, which `cargo test`
//! also replays over the committed corpus).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::udf_binary(data));
