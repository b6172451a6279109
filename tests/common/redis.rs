//! A real `redis-server` for tests: started on a free loopback port in its own temp dir,
//! without persistence, and killed on drop. It can crash (SIGKILL), hang (SIGSTOP) and come
//! back on the same port, which is what the fallback tests need.
//!
//! The binary is `$REDIS_SERVER`, or `redis-server` on the `PATH`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const READY_WITHIN: Duration = Duration::from_secs(10);

pub struct RedisServer {
    dir: TempDir,
    port: u16,
    args: Vec<String>,
    tls: bool,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server started with extra `redis-server` arguments, e.g. `--requirepass`.
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        Self::launch(dir, args, false)
    }

    /// A server that speaks only TLS, with a self-signed certificate for `127.0.0.1`.
    /// Trust [`RedisServer::ca_file`] to connect.
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".into()])
                .unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        Self::launch(dir, Vec::new(), true)
    }

    /// Start on a free port; if another process took the port in the meantime, try another.
    fn launch(dir: TempDir, args: Vec<String>, tls: bool) -> Self {
        let mut server = Self {
            dir,
            port: 0,
            args,
            tls,
            child: None,
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:port` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The certificate a TLS server presents, to trust as a CA.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// Kill the server like a crash: no shutdown, and (no persistence) its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port, empty, and wait until it answers.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("redis-server did not restart on port {}: {e}", self.port);
        }
    }

    /// Freeze the server (SIGSTOP): connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undo [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        let mut cmd = Command::new(std::env::var("REDIS_SERVER").unwrap_or("redis-server".into()));
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
            "--appendonly",
            "no",
        ])
        .args(["--save", ""])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"));
        let port = self.port.to_string();
        if self.tls {
            cmd.args([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(dir.join("cert.pem"))
            .arg("--tls-key-file")
            .arg(dir.join("key.pem"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("cert.pem"));
        } else {
            cmd.args(["--port", &port]);
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| {
            format!("cannot run redis-server ({e}); install it or set REDIS_SERVER")
        })?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Ready when the port answers and the server we started is still the one running
    /// (a server that lost the port to another process exits).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!("exited with {status}: {}", self.log()));
            }
            if self.answers() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("not ready within {READY_WITHIN:?}: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A plain server answers PING (with `+PONG`, or `-NOAUTH` behind a password); a TLS
    /// server only accepts the connection here.
    fn answers(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        if self.tls {
            return true;
        }
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 64];
        conn.write_all(b"PING\r\n").is_ok()
            && conn.read(&mut reply).is_ok_and(|n| {
                reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH")
            })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused server too.
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
