//! A fault-injecting TCP proxy on 127.0.0.1, for the storage-fault tests.
//!
//! Each new connection gets the fault its number draws from a schedule:
//! pass through to the upstream server, answer one request with an HTTP
//! error status and close, close the connection without answering (a reset,
//! as a crashing server or a load balancer does), or stall before passing
//! through. Clients open a new connection after a closed one, so a retried
//! request draws again.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What one connection gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Through to the upstream, untouched.
    Pass,
    /// One response with this status (`Connection: close`), then closed.
    Status(u16),
    /// The request is read, then the connection is closed without a word.
    Reset,
    /// A pause, then through to the upstream.
    Stall(Duration),
}

pub struct FaultyProxy {
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    injected: Arc<AtomicUsize>,
}

impl FaultyProxy {
    /// A proxy to `upstream` (`http://127.0.0.1:PORT`); connection `i`
    /// (from 0) gets `schedule(i)`. Lives until the test process exits.
    pub fn start(
        upstream: &str,
        schedule: impl Fn(usize) -> Fault + Send + Sync + 'static,
    ) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let injected = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&injected);
        let schedule = Arc::new(schedule);
        std::thread::spawn(move || {
            for (i, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                let fault = schedule(i);
                if fault != Fault::Pass {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                let upstream = upstream.clone();
                std::thread::spawn(move || serve(client, &upstream, fault));
            }
        });
        FaultyProxy { endpoint, injected }
    }

    /// Connections that got a fault so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }
}

/// Reads one request head (up to the blank line).
fn read_head(client: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
}

fn serve(mut client: TcpStream, upstream: &str, fault: Fault) {
    match fault {
        Fault::Status(code) => {
            read_head(&mut client);
            let _ = write!(
                client,
                "HTTP/1.1 {code} Injected Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::Reset => {
            read_head(&mut client);
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::Stall(pause) => {
            std::thread::sleep(pause);
            pass(client, upstream);
        }
        Fault::Pass => pass(client, upstream),
    }
}

fn pass(client: TcpStream, upstream: &str) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(mut client_read), Ok(mut server_write)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(Shutdown::Write);
    });
    let (mut server_read, mut client_write) = (server, client);
    let _ = std::io::copy(&mut server_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Both);
    let _ = up.join();
}
