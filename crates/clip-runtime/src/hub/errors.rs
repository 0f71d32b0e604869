//! What a failed request to the hub tells the user: the repo, the file,
//! the status, and what to do.

use hf_hub::api::tokio::ApiError;

use super::endpoint;
use crate::error::ClipError;

pub(super) fn status(e: &ApiError) -> Option<u16> {
    match e {
        ApiError::RequestError(r) => r.status().map(|s| s.as_u16()),
        _ => None,
    }
}

pub(super) fn is_connect_error(e: &ApiError) -> bool {
    matches!(e, ApiError::RequestError(r) if r.is_connect() || r.is_timeout() || r.is_request())
}

/// An error and its sources, one line.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

pub(super) fn hub_error(repo: &str, message: &str) -> ClipError {
    ClipError::Hub {
        repo: repo.to_string(),
        message: message.to_string(),
    }
}

pub(super) fn unreachable(repo: &str, reason: &str) -> ClipError {
    hub_error(
        repo,
        &format!(
            "the hub at {} is unreachable ({reason}). Pull where it is reachable \
             (`clipql model pull {repo}`, or `huggingface-cli download {repo}`) and copy the \
             HF cache folder ($HF_HOME/hub) here, or pass --model DIR with a model folder",
            endpoint()
        ),
    )
}

pub(super) fn request_failed(repo: &str, file: &str, e: &ApiError) -> ClipError {
    let hint = match status(e) {
        Some(401 | 403) => "; the repo may be gated or private: set HF_TOKEN",
        Some(404) => "; check the repo id",
        _ => "",
    };
    hub_error(
        repo,
        &format!("downloading {file}: {}{hint}", error_chain(e)),
    )
}
