//! A bare HTTP/2 (h2c, prior knowledge) client that writes frames by hand, for what a
//! well-behaved client library will not send: any `:path` bytes, a `content-length` that
//! disagrees with the DATA frames, streams reset as soon as they open.
//!
//! Header blocks are HPACK literals without indexing or Huffman coding; of the server's
//! answers only `:status` is decoded.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// `RST_STREAM` / `GOAWAY` error codes.
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const CANCEL: u32 = 0x8;

#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// How the server ended one of our streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered with this `:status`.
    Status(u16),
    /// It reset the stream with this error code.
    Reset(u32),
    /// It closed the connection with `GOAWAY` and this error code.
    GoAway(u32),
    /// The connection ended without a word.
    Closed,
    TimedOut,
}

pub struct H2 {
    s: TcpStream,
    buf: Vec<u8>,
}

impl H2 {
    /// Connect, send the preface and empty SETTINGS.
    pub async fn connect(addr: SocketAddr) -> Self {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut h2 = Self { s, buf: Vec::new() };
        h2.send(SETTINGS, 0, 0, &[]).await;
        h2
    }

    pub async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap();
        let mut frame = Vec::with_capacity(9 + payload.len());
        frame.extend_from_slice(&len.to_be_bytes()[1..]);
        frame.push(kind);
        frame.push(flags);
        frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        frame.extend_from_slice(payload);
        // The server may have closed already; what it said is read afterwards.
        let _ = self.s.write_all(&frame).await;
    }

    /// A HEADERS frame carrying `fields` (pseudo-headers first, as given).
    pub async fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
        let block = encode(fields);
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.send(HEADERS, flags, stream, &block).await;
    }

    pub async fn data(&mut self, stream: u32, data: &[u8], end_stream: bool) {
        let flags = if end_stream { END_STREAM } else { 0 };
        self.send(DATA, flags, stream, data).await;
    }

    pub async fn reset(&mut self, stream: u32, code: u32) {
        self.send(RST_STREAM, 0, stream, &code.to_be_bytes()).await;
    }

    /// The next frame, acknowledging SETTINGS and PING on the way. `None` when the
    /// connection ended or nothing came within `within`.
    pub async fn frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let kind = self.buf[3];
                    let flags = self.buf[4];
                    let stream =
                        u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                            & 0x7fff_ffff;
                    let payload = self.buf[9..9 + len].to_vec();
                    self.buf.drain(..9 + len);
                    match kind {
                        SETTINGS if flags & ACK == 0 => self.send(SETTINGS, ACK, 0, &[]).await,
                        PING if flags & ACK == 0 => self.send(PING, ACK, 0, &payload).await,
                        _ => {}
                    }
                    return Some(Frame {
                        kind,
                        flags,
                        stream,
                        payload,
                    });
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Read frames until the server answers, resets or abandons `stream`.
    pub async fn outcome(&mut self, stream: u32, within: Duration) -> Outcome {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(f) = self.frame(left).await else {
                return if tokio::time::Instant::now() >= deadline {
                    Outcome::TimedOut
                } else {
                    Outcome::Closed
                };
            };
            match f.kind {
                HEADERS if f.stream == stream => return Outcome::Status(status(&f.payload)),
                RST_STREAM if f.stream == stream => {
                    return Outcome::Reset(u32::from_be_bytes(f.payload[..4].try_into().unwrap()))
                }
                GOAWAY => {
                    // Streams up to the last one the server took are still answered.
                    let last = u32::from_be_bytes(f.payload[..4].try_into().unwrap()) & 0x7fff_ffff;
                    let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
                    if stream > last || code != 0 {
                        return Outcome::GoAway(code);
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether the server closed the connection within `within` (frames read meanwhile are
    /// dropped).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.frame(left).await.is_none() {
                return tokio::time::Instant::now() < deadline;
            }
        }
    }
}

/// HPACK: every field as a literal without indexing, new name, no Huffman.
pub fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        string(&mut out, name.as_bytes());
        string(&mut out, value.as_bytes());
    }
    out
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

fn integer(out: &mut Vec<u8>, mut n: usize, prefix_bits: u32, first: u8) {
    let max = (1usize << prefix_bits) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// `:status` from the start of a response header block (the encoder puts it first).
pub fn status(block: &[u8]) -> u16 {
    let mut at = 0;
    // Dynamic table size updates may come first.
    while block[at] & 0xe0 == 0x20 {
        at += 1;
        while block[at - 1] & 0x1f == 0x1f && block[at] & 0x80 != 0 {
            at += 1;
        }
    }
    let b = block[at];
    if b & 0x80 != 0 {
        // Indexed: the static table's :status entries.
        return match b & 0x7f {
            8 => 200,
            9 => 204,
            10 => 206,
            11 => 304,
            12 => 400,
            13 => 404,
            14 => 500,
            other => panic!("header block starts with index {other}, not :status"),
        };
    }
    // A literal with the indexed name :status (static index 8).
    let name = if b & 0xc0 == 0x40 { b & 0x3f } else { b & 0x0f };
    assert_eq!(name, 8, "header block does not start with :status");
    let len = (block[at + 1] & 0x7f) as usize;
    let raw = &block[at + 2..at + 2 + len];
    let text = if block[at + 1] & 0x80 != 0 {
        huffman_digits(raw)
    } else {
        String::from_utf8_lossy(raw).into_owned()
    };
    text.parse().unwrap()
}

/// Decode a Huffman-coded string of decimal digits (RFC 7541 Appendix B).
fn huffman_digits(raw: &[u8]) -> String {
    let bits: Vec<u8> = raw
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let take = |at: usize, n: usize| -> Option<u8> {
        bits.get(at..at + n)
            .map(|bs| bs.iter().fold(0u8, |v, b| (v << 1) | b))
    };
    let mut out = String::new();
    let mut at = 0;
    while let Some(five) = take(at, 5) {
        if five <= 2 {
            out.push(char::from(b'0' + five));
            at += 5;
            continue;
        }
        match take(at, 6) {
            Some(six @ 0x19..=0x1f) => {
                out.push(char::from(b'3' + (six - 0x19)));
                at += 6;
            }
            // EOS padding (all ones) ends the string.
            _ => break,
        }
    }
    out
}
