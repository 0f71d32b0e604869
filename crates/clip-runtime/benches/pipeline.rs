//! Micro-benchmarks of the CPU work around inference, named by input shape:
//! decoding and preprocessing per format and size, tokenisation, scoring.
//!
//! `cargo bench -p clip-runtime` measures; `cargo test --all-targets` runs
//! each once, so they keep compiling and working. Inputs are made here from
//! the fixture photos; nothing needs ONNX Runtime.

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use clip_runtime::{
    DecodeLimits, ModelFamily, PreprocessConfig, TextTokenizer, TokenizerSettings, decode_rgb,
    decode_rgb_at_least, label_probabilities,
};
use criterion::{Criterion, criterion_group, criterion_main};
use image::RgbImage;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The fixture cat, resized to `width` x `height`.
fn photo(width: u32, height: u32) -> RgbImage {
    let bytes = std::fs::read(fixtures().join("photos/chelsea.jpg")).unwrap();
    let small = decode_rgb(&bytes, &DecodeLimits::default()).unwrap();
    image::imageops::resize(&small, width, height, image::imageops::FilterType::Triangle)
}

fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    c.set_size(image.width() as usize, image.height() as usize);
    c.set_quality(90.0);
    let mut started = c.start_compress(Vec::new()).unwrap();
    started.write_scanlines(image.as_raw()).unwrap();
    started.finish().unwrap()
}

fn png(image: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn decode_and_preprocess(c: &mut Criterion) {
    let config =
        PreprocessConfig::from_file(&fixtures().join("model/preprocessor_config.json")).unwrap();
    let min_side = config.min_decoded_side();
    let small = photo(500, 375);
    let phone = photo(4000, 3000);
    let full = DecodeLimits::default();
    let fast = DecodeLimits::default().with_fast_jpeg(true);
    let cases: [(&str, Vec<u8>, DecodeLimits); 4] = [
        ("jpeg_500x375", jpeg(&small), full),
        ("png_500x375", png(&small), full),
        ("jpeg_4000x3000", jpeg(&phone), full),
        ("jpeg_4000x3000_fast_jpeg", jpeg(&phone), fast),
    ];
    let mut group = c.benchmark_group("decode_preprocess");
    for (name, bytes, limits) in &cases {
        group.bench_function(*name, |b| {
            let mut out = Vec::new();
            b.iter(|| {
                let rgb = decode_rgb_at_least(black_box(bytes), limits, min_side).unwrap();
                out.clear();
                config.apply(&rgb, &mut out).unwrap();
                black_box(&out);
            })
        });
    }
    group.finish();

    // The two halves of the phone photo's cost.
    let mut group = c.benchmark_group("decode");
    let bytes = jpeg(&phone);
    group.bench_function("jpeg_4000x3000", |b| {
        b.iter(|| decode_rgb(black_box(&bytes), &full).unwrap())
    });
    group.finish();
    let mut group = c.benchmark_group("preprocess");
    for (name, image) in [("rgb_500x375", &small), ("rgb_4000x3000", &phone)] {
        group.bench_function(name, |b| {
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                config.apply(black_box(image), &mut out).unwrap();
            })
        });
    }
    group.finish();
}

fn labels(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("a photo of a thing number {i}."))
        .collect()
}

fn tokenize(c: &mut Criterion) {
    let tokenizer = TextTokenizer::from_file(
        &fixtures().join("model/tokenizer.json"),
        77,
        &TokenizerSettings::defaults(ModelFamily::Clip.default_pad_token()),
    )
    .unwrap();
    let mut group = c.benchmark_group("tokenize");
    for n in [9, 1000] {
        let texts = labels(n);
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        group.bench_function(format!("{n}_labels"), |b| {
            b.iter(|| tokenizer.encode_batch(black_box(&texts), None).unwrap())
        });
    }
    group.finish();
}

fn score(c: &mut Criterion) {
    // Deterministic unit-ish vectors of ViT-B/32's 512 dimensions.
    let vector = |seed: usize| -> Vec<f32> {
        (0..512)
            .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0)
            .collect()
    };
    let image = vector(0);
    let mut group = c.benchmark_group("score");
    for n in [9, 1000] {
        let texts: Vec<Vec<f32>> = (1..=n).map(vector).collect();
        group.bench_function(format!("{n}_labels_512d"), |b| {
            b.iter(|| label_probabilities(black_box(&image), &texts, 100.0))
        });
    }
    group.finish();
}

criterion_group!(benches, decode_and_preprocess, tokenize, score);
criterion_main!(benches);
