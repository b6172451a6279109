//! The `otpgate` binary as a child process: started with a config whose `[log]` format is
//! `json`, its listen addresses read from the "otpgate serving" line, all output collected.

use std::io::BufRead;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_otpgate");

pub struct Otpgate {
    pub child: Child,
    /// `host:port` of the gateway and of the admin listener.
    pub addr: String,
    pub admin: String,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line printed so far (stdout and stderr).
    pub output: Vec<String>,
}

impl Otpgate {
    /// `otpgate run --config PATH`, waiting until it serves.
    pub async fn run(config: &std::path::Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::unbounded_channel::<String>();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for stream in streams {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    let _ = tx.send(line);
                }
            });
        }
        // Only the readers hold senders now: the channel ends when the process's output does.
        drop(tx);
        let mut me = Self {
            child,
            addr: String::new(),
            admin: String::new(),
            lines,
            output: Vec::new(),
        };
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), me.lines.recv())
                .await
                .expect("otpgate printed its listen address")
                .unwrap_or_else(|| panic!("otpgate exited early:\n{}", me.output.join("\n")));
            me.output.push(line.clone());
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
                if json["message"] == "otpgate serving" {
                    me.addr = json["listen"].as_str().unwrap().to_owned();
                    me.admin = json["admin"].as_str().unwrap().to_owned();
                    return me;
                }
            }
        }
    }

    /// Read output until a JSON line whose `message` is `message`; returns the lines read.
    pub async fn wait_for(&mut self, message: &str) -> Vec<String> {
        let mut read = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no {message:?} line in:\n{}", read.join("\n")))
                .unwrap_or_else(|| panic!("otpgate exited:\n{}", read.join("\n")));
            self.output.push(line.clone());
            read.push(line.clone());
            if serde_json::from_str::<serde_json::Value>(&line)
                .is_ok_and(|json| json["message"] == message)
            {
                return read;
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// SIGTERM, then wait for the exit; returns the status and all output.
    pub async fn terminate(self) -> (ExitStatus, Vec<String>) {
        self.signal("-TERM");
        self.wait().await
    }

    /// Wait for the exit; returns the status and all output.
    pub async fn wait(mut self) -> (ExitStatus, Vec<String>) {
        let mut child = self.child;
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        while let Some(line) = self.lines.recv().await {
            self.output.push(line);
        }
        (status, self.output)
    }
}
