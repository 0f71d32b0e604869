//! A stand-in for the Hugging Face hub on 127.0.0.1, serving model folders
//! with the hub's URL scheme and headers:
//!
//! - `GET /{owner}/{name}/resolve/{revision}/{path}`, with `Range` (206 and
//!   `Content-Range`), `X-Repo-Commit`, and an `ETag` that is the content's
//!   SHA-256 for `.onnx` files (LFS, also sent as `X-Linked-Etag`) and its git
//!   blob SHA-1 otherwise, as the hub sends them;
//! - 404 with `X-Error-Code: EntryNotFound` for a file the repo lacks.
//!
//! Faults can be injected per file, and every request is logged, so tests
//! can tell what a pull fetched. One thread per connection, `Connection:
//! close`: enough for a test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The commit every served repo is at.
pub const COMMIT: &str = "5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0";

/// What the next body request for a file gets instead of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// This HTTP status, for the next body request only.
    StatusOnce(u16),
    /// The right length and ETag but flipped bytes, for every body request.
    Corrupt,
    /// A hostile hub: this `ETag` (and `X-Linked-Etag`) on every request
    /// for the file, metadata included.
    Etag(&'static str),
    /// A hostile hub: this `X-Repo-Commit` on every request for the file.
    Commit(&'static str),
    /// A transfer cut off: every body request sends the full length in its
    /// headers but only this many bytes, then closes the connection.
    CutAfter(usize),
}

/// One request the hub saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The file path within the repo.
    pub file: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl Request {
    /// Whether this fetched content, not just the hub's `bytes=0-0` probe.
    pub fn is_body(&self) -> bool {
        self.range.as_deref() != Some("bytes=0-0")
    }
}

#[derive(Default)]
struct State {
    /// Repo id → its folder and the commit `main` is at.
    repos: HashMap<String, (PathBuf, String)>,
    /// File → its faults, applied together (an ETag and a cut, say).
    faults: HashMap<String, Vec<Fault>>,
    log: Vec<Request>,
}

/// The running stand-in hub. It lives until the test process exits.
pub struct StandInHub {
    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl StandInHub {
    /// Starts a hub serving `repos`: repo id → model folder.
    pub fn start(repos: &[(&str, &Path)]) -> Self {
        let state = Arc::new(Mutex::new(State {
            repos: repos
                .iter()
                .map(|(id, dir)| (id.to_string(), (dir.to_path_buf(), COMMIT.to_string())))
                .collect(),
            ..State::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        Self { url, state }
    }

    /// Injects a fault for `file` (a path within any repo), beside any it
    /// already has.
    pub fn fault(&self, file: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .entry(file.to_string())
            .or_default()
            .push(fault);
    }

    /// Moves `repo`'s `main` to `commit`, serving `dir` from now on.
    pub fn publish(&self, repo: &str, dir: &Path, commit: &str) {
        self.state
            .lock()
            .unwrap()
            .repos
            .insert(repo.to_string(), (dir.to_path_buf(), commit.to_string()));
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    /// Takes the requests seen so far.
    pub fn take_log(&self) -> Vec<Request> {
        std::mem::take(&mut self.state.lock().unwrap().log)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The ETag the hub gives a file, and whether it is an LFS file.
fn etag(file: &str, content: &[u8]) -> (String, bool) {
    if file.ends_with(".onnx") {
        (hex(&Sha256::digest(content)), true)
    } else {
        let mut h = Sha1::new();
        h.update(format!("blob {}\0", content.len()).as_bytes());
        h.update(content);
        (hex(&h.finalize()), false)
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut out = stream;
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    // /{owner}/{name}/resolve/{revision}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let (repo, file) = match parts.as_slice() {
        [owner, name, "resolve", _revision, file] => (format!("{owner}/{name}"), file.to_string()),
        _ => return respond(&mut out, 404, &[], b"not a resolve URL"),
    };
    let request = Request {
        file: file.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    };
    let (repo, faults) = {
        let mut state = state.lock().unwrap();
        state.log.push(request.clone());
        let faults = state.faults.get(&file).cloned().unwrap_or_default();
        if request.is_body()
            && let Some(list) = state.faults.get_mut(&file)
        {
            // A status is injected once.
            if let Some(at) = list.iter().position(|f| matches!(f, Fault::StatusOnce(_))) {
                list.remove(at);
            }
        }
        (state.repos.get(&repo).cloned(), faults)
    };
    let Some((dir, mut commit)) = repo else {
        return respond(
            &mut out,
            401,
            &[("X-Error-Code", "RepoNotFound".into())],
            b"Repository not found",
        );
    };
    let Ok(mut content) = std::fs::read(dir.join(&file)) else {
        return respond(
            &mut out,
            404,
            &[
                ("X-Error-Code", "EntryNotFound".into()),
                ("X-Repo-Commit", commit),
            ],
            b"Entry not found",
        );
    };
    let (mut tag, lfs) = etag(&file, &content);
    let mut cut = None;
    for fault in faults {
        match fault {
            Fault::Etag(e) => tag = e.to_string(),
            Fault::Commit(c) => commit = c.to_string(),
            _ if !request.is_body() => {}
            Fault::StatusOnce(status) => return respond(&mut out, status, &[], b"injected"),
            Fault::Corrupt => content.iter_mut().for_each(|b| *b ^= 0x5a),
            Fault::CutAfter(n) => cut = Some(n),
        }
    }
    let mut extra = vec![
        ("X-Repo-Commit", commit),
        ("ETag", format!("\"{tag}\"")),
        ("Accept-Ranges", "bytes".to_string()),
    ];
    if lfs {
        extra.push(("X-Linked-Etag", format!("\"{tag}\"")));
        extra.push(("X-Linked-Size", content.len().to_string()));
    }
    let total = content.len();
    let (status, body): (u16, &[u8]) = match request.range.as_deref().and_then(parse_range) {
        Some((start, stop)) if start < total => {
            // Clients may ask past the end (hf-hub's last chunk does).
            let stop = stop.min(total - 1);
            extra.push(("Content-Range", format!("bytes {start}-{stop}/{total}")));
            (206, &content[start..=stop])
        }
        Some(_) => (416, b""),
        None => (200, &content),
    };
    match cut {
        Some(n) if n < body.len() => respond_cut(&mut out, status, &extra, body, n),
        _ => respond(&mut out, status, &extra, body),
    }
}

/// [`respond`] announcing all of `body` but sending only its first `n`
/// bytes before closing: a transfer cut off.
fn respond_cut(
    out: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    n: usize,
) -> std::io::Result<()> {
    write_head(out, status, headers, body.len())?;
    out.write_all(&body[..n])?;
    out.flush()?;
    out.shutdown(std::net::Shutdown::Both)
}

fn parse_range(range: &str) -> Option<(usize, usize)> {
    let (start, stop) = range.strip_prefix("bytes=")?.split_once('-')?;
    Some((start.parse().ok()?, stop.parse().unwrap_or(usize::MAX)))
}

fn respond(
    out: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    write_head(out, status, headers, body.len())?;
    out.write_all(body)?;
    out.flush()
}

fn write_head(
    out: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    length: usize,
) -> std::io::Result<()> {
    let mut head =
        format!("HTTP/1.1 {status} X\r\nContent-Length: {length}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}
