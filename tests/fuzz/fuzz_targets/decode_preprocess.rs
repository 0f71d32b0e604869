//! Arbitrary bytes through decoding and CLIP preprocessing (the body is
//! `targets::decode_preprocess`, which `cargo test` also replays over the
//! committed corpus).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::decode_preprocess(data));
