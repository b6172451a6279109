//! Peers that misbehave on purpose, over raw TCP on loopback: an upstream or a risk provider
//! that hangs, resets, trickles, floods or breaks off. Every connection reads one request
//! (head and body), then plays the same script.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One step of a connection's script. After the last step the connection is closed
/// normally (FIN), unless the script hung or reset it.
#[derive(Clone, Debug)]
pub enum Step {
    Write(Vec<u8>),
    Sleep(Duration),
    /// Write `chunk` `times` times, as fast as the peer reads.
    Flood {
        chunk: Vec<u8>,
        times: usize,
    },
    /// Never answer; keep the connection until the peer closes it.
    Hang,
    /// Close with a TCP reset (`SO_LINGER` 0).
    Reset,
}

/// A running misbehaving peer.
#[derive(Clone)]
pub struct Faulty {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl Faulty {
    /// Requests read so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Connections the peer still holds.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serve `script` to every connection until the test's runtime ends.
pub async fn serve(script: Vec<Step>) -> Faulty {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = Faulty {
        addr: listener.local_addr().unwrap(),
        requests: Arc::default(),
        open: Arc::default(),
    };
    let script = Arc::new(script);
    let handle = peer.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let script = script.clone();
            let peer = handle.clone();
            tokio::spawn(async move {
                peer.open.fetch_add(1, Ordering::SeqCst);
                play(stream, &script, &peer).await;
                peer.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    peer
}

async fn play(mut stream: TcpStream, script: &[Step], peer: &Faulty) {
    if !read_request(&mut stream).await {
        return;
    }
    peer.requests.fetch_add(1, Ordering::SeqCst);
    for step in script {
        match step {
            Step::Write(bytes) => {
                if stream.write_all(bytes).await.is_err() {
                    return;
                }
            }
            Step::Sleep(d) => tokio::time::sleep(*d).await,
            Step::Flood { chunk, times } => {
                for _ in 0..*times {
                    if stream.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            }
            Step::Hang => {
                // Hold the connection until the other side gives up.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Step::Reset => {
                let _ = stream.set_zero_linger();
                return;
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// Read one request: the head, then a `Content-Length` or chunked body. `false` when the
/// peer went away first.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
        if buf.len() > 1 << 20 {
            return false;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    loop {
        let body = &buf[head_end..];
        let done = match (length, chunked) {
            (_, true) => body.ends_with(b"0\r\n\r\n"),
            (Some(n), false) => body.len() >= n,
            (None, false) => true,
        };
        if done {
            return true;
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
        if buf.len() > 1 << 24 {
            return false;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A response head with `Content-Length`.
pub fn head(status: u16, content_type: &str, length: usize) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// A complete response with `Content-Length`.
pub fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let mut out = head(status, content_type, body.len());
    out.extend_from_slice(body.as_bytes());
    out
}

/// A chunked response head.
pub fn chunked_head(status: u16, content_type: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes()
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}
