//! A real S3-API server for tests: s3s-fs over a temporary folder, on
//! 127.0.0.1.

use std::path::Path;

/// A real S3-API server (s3s-fs over a temporary folder) on 127.0.0.1, with
/// one bucket, `photos-bucket`, holding the files of `photos_dir` under
/// `photos/`. It lives until the test process exits.
pub struct S3Server {
    pub endpoint: String,
    _root: tempfile::TempDir,
}

pub const S3_KEY: &str = "clipql-test-key";
pub const S3_SECRET: &str = "SENTINEL-SECRET-5f3b9c";

pub fn s3_server(photos_dir: &Path) -> S3Server {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;

    let root = tempfile::tempdir().unwrap();
    let photos = root.path().join("photos-bucket/photos");
    std::fs::create_dir_all(&photos).unwrap();
    for entry in std::fs::read_dir(photos_dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), photos.join(entry.file_name())).unwrap();
    }
    let fs_root = root.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut builder =
                s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(&fs_root).unwrap());
            builder.set_auth(s3s::auth::SimpleAuth::from_single(S3_KEY, S3_SECRET));
            let service = builder.build();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
    });
    let port = rx.recv().unwrap();
    S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        _root: root,
    }
}

/// The `AWS_*` settings that point `clipql` at a stand-in at `endpoint`
/// (the server's, or a proxy's), with the test key and `secret`; without
/// credentials when `secret` is empty.
pub fn settings(endpoint: &str, secret: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ];
    if !secret.is_empty() {
        env.push(("AWS_ACCESS_KEY_ID", S3_KEY.to_string()));
        env.push(("AWS_SECRET_ACCESS_KEY", secret.to_string()));
    }
    env
}
