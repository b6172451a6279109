//! HTTP/1.1 over a raw socket, byte for byte: write exactly what a hostile client would,
//! then read back every answer (pipelined ones included).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer read off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value (first one, case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// What came back for one write.
#[derive(Debug)]
pub struct Exchange {
    pub replies: Vec<Reply>,
    /// The server closed the connection.
    pub closed: bool,
}

/// Write `request` and read until `want` complete answers arrived, the server closed the
/// connection, or five seconds passed.
pub async fn exchange(addr: SocketAddr, request: &[u8], want: usize) -> Exchange {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A server that refuses early may reset before it reads everything: that is an answer.
    let _ = s.write_all(request).await;
    read_replies(&mut s, want, Duration::from_secs(5)).await
}

/// Read answers from `s` until `want` complete ones arrived, it closed, or `within` passed.
pub async fn read_replies(s: &mut TcpStream, want: usize, within: Duration) -> Exchange {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut closed = false;
    loop {
        let (replies, _) = parse(&out);
        if replies.len() >= want {
            return Exchange { replies, closed };
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let (replies, _) = parse(&out);
    Exchange { replies, closed }
}

/// Every complete answer in `bytes` (interim 1xx answers skipped), and the bytes used.
pub fn parse(bytes: &[u8]) -> (Vec<Reply>, usize) {
    let mut replies = Vec::new();
    let mut at = 0;
    while let Some(end) = find(&bytes[at..], b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[at..at + end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body_start = at + end + 4;
        let lower = head.to_ascii_lowercase();
        if (100..200).contains(&status) {
            at = body_start;
            continue;
        }
        let length = lower.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        let chunked = lower
            .lines()
            .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
        let (body, used) = if chunked {
            match dechunk(&bytes[body_start..]) {
                Some(x) => x,
                None => break,
            }
        } else {
            let n = length.unwrap_or(0);
            if bytes.len() < body_start + n {
                break;
            }
            (bytes[body_start..body_start + n].to_vec(), n)
        };
        replies.push(Reply { status, head, body });
        at = body_start + used;
    }
    (replies, at)
}

fn dechunk(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = find(&bytes[at..], b"\r\n")?;
        let line = std::str::from_utf8(&bytes[at..at + line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at += line_end + 2;
        if size == 0 {
            let end = find(&bytes[at..], b"\r\n")?;
            // Trailers, if any, end with an empty line.
            let mut t = at;
            let mut line_len = end;
            while line_len != 0 {
                t += line_len + 2;
                line_len = find(&bytes[t..], b"\r\n")?;
            }
            return Some((body, t + 2));
        }
        if bytes.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&bytes[at..at + size]);
        at += size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
