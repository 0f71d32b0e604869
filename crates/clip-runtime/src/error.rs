//! The one error type of `clip-runtime`.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = ClipError> = std::result::Result<T, E>;

/// Everything that can go wrong loading or running a CLIP model.
///
/// Per-image problems (an undecodable file, say) are *not* here: they are
/// [`ImageError`] values returned per image, so one bad image never fails a
/// batch.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error(
        "ONNX Runtime is not available: {reason}. Run `cargo xtask setup` to provision it \
         (it installs the pinned onnxruntime wheel's library into .clipql/onnxruntime/), \
         or point ORT_DYLIB_PATH at a libonnxruntime.so of version >= 1.{min_minor}"
    )]
    RuntimeMissing {
        /// What was tried and why it failed.
        reason: String,
        /// The oldest ONNX Runtime minor version `ort` accepts.
        min_minor: u32,
    },

    /// The model directory does not exist or lacks a required file.
    #[error("model directory {dir}: missing {file}{hint}")]
    ModelFileMissing {
        /// The model directory.
        dir: PathBuf,
        /// The file that was expected, relative to `dir`.
        file: String,
        /// A suggestion, starting with "; ".
        hint: String,
    },

    /// A model file exists but could not be read or parsed.
    #[error("model file {path}: {message}")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },

    /// An ONNX graph does not have the inputs or outputs CLIP needs.
    #[error("ONNX graph {path}: {message}")]
    Graph {
        /// The `.onnx` file.
        path: PathBuf,
        /// What was unexpected.
        message: String,
    },

    /// Downloading a model from the HF hub failed.
    #[error("model {repo} from the HF hub: {message}")]
    Hub {
        /// The repo id.
        repo: String,
        /// What went wrong and what to do.
        message: String,
    },

    /// ONNX Runtime failed while creating a session or running inference.
    #[error("ONNX Runtime error while {context}: {message}")]
    Onnx {
        /// What ClipQL was doing.
        context: String,
        /// ONNX Runtime's own message.
        message: String,
    },

    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// An option has a value that cannot be used.
    #[error("invalid option {name} = {value}: {message}")]
    InvalidOption {
        /// Option name.
        name: String,
        /// The rejected value.
        value: String,
        /// What values are accepted.
        message: String,
    },

    /// The model's trained `logit_scale` is not available.
    #[error(
        "model directory {dir}: cannot determine the trained logit_scale: {reason}. \
         Split-tower ONNX exports do not carry it and config.json only has the initial value; \
         add onnx/model.onnx (the combined export) to the directory, or set the scale explicitly \
         (SQL: SET clip.logit_scale = 100; OpenAI CLIP checkpoints use 100)"
    )]
    LogitScale {
        /// The model directory.
        dir: PathBuf,
        /// Why it could not be measured.
        reason: String,
    },
}

/// Why one image could not be embedded. Returned per image, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Zero bytes of input.
    #[error("empty image (0 bytes)")]
    Empty,
    /// The bytes are not in any image format ClipQL reads.
    #[error("unsupported or unrecognised image format{0}")]
    UnsupportedFormat(String),
    /// The file is larger than the configured byte limit.
    ///
    /// The message gives no size: a reader may stop at `limit + 1` bytes (as
    /// an IMAGE table's scan does), and the file's size is in its listing.
    #[error("image file is over the {limit}-byte limit (clip.max_image_bytes)")]
    FileTooLarge {
        /// Bytes seen: the file's size, or `limit + 1` when read no further.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The header declares more pixels than the configured limit allows.
    #[error(
        "image is {width}x{height} = {pixels} pixels, over the {limit}-pixel limit \
         (clip.max_image_pixels); refused before decoding"
    )]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// width × height.
        pixels: u64,
        /// The limit.
        limit: u64,
    },
    /// Without a centre crop, the resize of an extreme aspect ratio would
    /// make more pixels than one model input holds.
    #[error(
        "the model's preprocessing (no centre crop) would resize this image to \
         {width}x{height} = {pixels} pixels, over the {limit}-pixel limit of one input"
    )]
    ResizedTooLarge {
        /// Width after the resize.
        width: u64,
        /// Height after the resize.
        height: u64,
        /// width × height.
        pixels: u64,
        /// The limit.
        limit: u64,
    },
    /// The decoder failed: corrupt or truncated data.
    #[error("cannot decode {format} image: {message}")]
    Decode {
        /// The detected format.
        format: String,
        /// The decoder's message.
        message: String,
    },
    /// The image decoded but has a zero dimension.
    #[error("image has no pixels ({width}x{height})")]
    ZeroSized {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// Inference failed for the batch this image was in.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The image value is NULL (a Parquet row without one, say).
    #[error("no image: the image value is NULL")]
    Null,
}

/// The most characters of a reason that is stored or printed.
pub const MAX_REASON_CHARS: usize = 1000;

/// `reason` made safe to store in a row and to print on a terminal: control
/// characters (escape sequences, newlines, NUL) written as `\u{1b}`-style
/// escapes, and cut at [`MAX_REASON_CHARS`] characters. Decoder messages and
/// file names come from the data, so every reason passes through this.
pub fn printable_reason(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_REASON_CHARS));
    for (i, c) in reason.chars().enumerate() {
        if i == MAX_REASON_CHARS {
            out.push_str("… (cut)");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

impl ClipError {
    pub(crate) fn onnx(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::Onnx {
            context: context.into(),
            message: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_printable_and_bounded() {
        assert_eq!(
            printable_reason("evil\u{1b}[2J\nname\0.jpg"),
            "evil\\u{1b}[2J\\u{a}name\\u{0}.jpg"
        );
        let long = "x".repeat(10 * MAX_REASON_CHARS);
        let cut = printable_reason(&long);
        assert_eq!(
            cut.chars().count(),
            MAX_REASON_CHARS + "… (cut)".chars().count()
        );
        assert!(cut.ends_with("… (cut)"));
        assert_eq!(printable_reason("café: fine"), "café: fine");
    }
}
