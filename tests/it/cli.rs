//! The `otpgate` binary: check-config, and SIGTERM draining of a real process.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_otpgate");

#[test]
fn check_config_names_every_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"nowhere\"\nidle_timeout = \"forever\"\n[upstream]\nurl = \"ftp://entra\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
    for key in ["server.listen", "server.idle_timeout", "upstream.url"] {
        assert!(stderr.contains(key), "{key} not named in:\n{stderr}");
    }
}

#[test]
fn check_config_accepts_the_shipped_reference() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/otpgate.toml");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_warns_when_redis_keys_would_hold_plain_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("redis.toml");
    let redis =
        "[upstream]\nurl = \"https://contoso.ciamlogin.com\"\n[store]\nbackend = \"redis\"\n";
    let check = |toml: &str| {
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "a warning is not a problem");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = check(redis);
    assert!(stderr.contains("warning: store.key_secret"), "{stderr}");
    let stderr = check(&format!(
        "{redis}key_secret = \"shared-by-every-replica\"\n"
    ));
    assert!(!stderr.contains("warning: store."), "{stderr}");
    assert!(!stderr.contains("shared-by-every-replica"), "{stderr}");
}

#[test]
fn check_config_names_every_problem_with_its_key_the_value_and_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[upstream]\nurl = \"https://contoso.ciamlogin.com\"\n\
         [routes.sms]\nbudget = \"soon\"\nfail_mode = \"explode\"\n\
         [defense.destination.countries]\nFR = \"explode\"\n\
         [[defense.velocity]]\nname = \"a\"\nkey = \"ip\"\nwindow = \"1h\"\nlimit = 0\naction = \"deny\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("4 problem(s)"), "{stderr}");
    for line in [
        "routes.sms.budget: not a duration such as 300ms, 15s, 10m or 1h (got \"soon\")",
        "routes.sms.fail_mode: unknown variant `explode`, expected one of `open`, `closed`, `step_up`",
        "defense.destination.countries.FR: unknown variant `explode`",
        "defense.velocity[0].limit: must be at least 1",
    ] {
        assert!(stderr.contains(line), "{line:?} not in:\n{stderr}");
    }
}

#[test]
fn check_config_warns_about_keys_replicas_must_share() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[upstream]\nurl = \"https://contoso.ciamlogin.com\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["warning: stepup.key", "warning: audit.hmac_key"] {
        assert!(stderr.contains(key), "{key} not in:\n{stderr}");
    }
}

/// Text logs written to a pipe carry no colour codes, and audit lines sent to stderr
/// leave stdout to the logs.
#[tokio::test]
async fn logs_in_a_pipe_are_plain_and_audit_lines_can_go_apart() {
    let up = crate::fixtures::upstream(crate::fixtures::Upstream::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [upstream]\nurl = \"http://{up}\"\n[log]\nformat = \"text\"\n[audit]\noutput = \"stderr\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let errors = std::thread::spawn(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut logs = Vec::new();
    let listen = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
        logs.push(line.clone());
        if let Some(at) = line.find("listen=") {
            let addr: String = line[at + 7..].split_whitespace().next().unwrap().to_owned();
            break addr;
        }
    };
    let resp = crate::fixtures::client()
        .post(format!(
            "http://{listen}/contoso.onmicrosoft.com/oauth2/v2.0/initiate"
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("client_id=c&username=a%40b.c")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    while let Some(line) = rx.recv().await {
        logs.push(line);
    }
    let audit = errors.join().unwrap();
    let logs = logs.join("\n");
    assert!(!logs.contains('\u{1b}'), "colour codes in a pipe:\n{logs}");
    assert!(logs.contains("otpgate serving"), "{logs}");
    assert!(!logs.contains("\"type\":\"audit\""), "{logs}");
    let audit_lines: Vec<serde_json::Value> = audit
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(audit_lines.len(), 1, "{audit:?}");
    assert_eq!(audit_lines[0]["type"], "audit");
    assert_eq!(audit_lines[0]["endpoint"], "sign_in_initiate");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let up =
        crate::fixtures::upstream(crate::fixtures::Upstream::Slow(Duration::from_millis(1500)))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otpgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"10s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [upstream]\nurl = \"http://{up}\"\n[log]\nformat = \"json\"\n"
        ),
    )
    .unwrap();
    let gateway = crate::fixtures::process::Otpgate::run(&path).await;
    let addr: std::net::SocketAddr = gateway.addr.parse().unwrap();
    let admin = gateway.admin.clone();

    let slow = tokio::spawn(async move {
        let r = crate::fixtures::client()
            .get(format!("http://{addr}/slow"))
            .send()
            .await
            .unwrap();
        (r.status(), r.headers().get("x-echo-uri").cloned())
    });
    crate::fixtures::probe::until(
        admin.parse().unwrap(),
        Duration::from_secs(10),
        "the slow request in flight",
        |_, in_flight| in_flight == 1.0,
    )
    .await;
    gateway.signal("-TERM");
    crate::fixtures::until_refused(addr, Duration::from_secs(2)).await;
    let (status, uri) = slow.await.unwrap();
    assert_eq!(status, 200, "the in-flight request completed");
    assert_eq!(uri.unwrap(), "/slow");
    let (status, _) = gateway.wait().await;
    assert!(status.success(), "exit status {status:?}");
}

/// Run a pasted walkthrough block with bash; its stdout and stderr.
async fn paste(script: &str) -> (String, String) {
    let script = script.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

/// `otpgate demo` on free ports with `args` before them, and its stdout line by line (read
/// to the end: a closed pipe would end the demo at its next line).
fn spawn_demo(
    args: &[&std::ffi::OsStr],
) -> (
    std::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut child = Command::new(BIN)
        .arg("demo")
        .args(args)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--entra-listen",
            "127.0.0.1:0",
        ])
        .env("OTPGATE__LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

#[tokio::test]
async fn demo_walkthrough_works_when_pasted_and_again_after_a_reset() {
    let (mut child, mut rx) = spawn_demo(&[]);
    // Each walkthrough is the indented block after a "paste into a shell" line, up to a
    // blank line; the reset command is on the line that starts with "reset".
    let mut blocks: Vec<String> = Vec::new();
    let mut reset = String::new();
    let mut inside = false;
    while blocks.len() < 2 || inside {
        let line = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("demo printed its walkthrough")
            .expect("demo exited early");
        if let Some(command) = line.trim_start().strip_prefix("reset") {
            reset = command.split("  (").next().unwrap().trim().to_owned();
        }
        if line.contains("paste into a shell") {
            inside = true;
            blocks.push(String::new());
            continue;
        }
        if inside {
            let script = blocks.last_mut().unwrap();
            if line.trim().is_empty() && !script.is_empty() {
                inside = false;
                continue;
            }
            script.push_str(line.trim_start());
            script.push('\n');
        }
    }
    let (out, err) = paste(&blocks[0]).await;
    assert!(
        out.contains("\"challenge_channel\":\"sms\""),
        "{out}\n{err}"
    );
    assert!(
        out.contains("\"access_token\""),
        "the sign-in completed: {out}\n{err}"
    );

    let register = |round: &'static str| {
        let script = blocks[1].clone();
        async move {
            let (out, err) = paste(&script).await;
            assert!(
                out.contains("\"access_denied\"") && out.contains("provider_blocked_by_rep"),
                "{round}: the premium-rate number is refused: {out}\n{err}"
            );
            assert!(
                err.contains("\"challenge_channel\":\"sms\""),
                "{round}: the mobile gets its code: {out}\n{err}"
            );
            assert!(out.contains("\"access_token\""), "{round}: {out}\n{err}");
        }
    };
    register("first round").await;
    let (answer, _) = paste(&reset).await;
    assert!(answer.starts_with("reset:"), "{answer}");
    register("after the reset").await;

    // The decisions, with their reasons, were printed as audit lines.
    let mut audit = Vec::new();
    while let Ok(line) = rx.try_recv() {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
            audit.push(json);
        }
    }
    assert!(
        audit.iter().any(|a| a["type"] == "audit"
            && a["decision"] == "deny"
            && a["reasons"][0] == "destination:type:premium_rate:deny"),
        "{audit:?}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn demo_runs_the_config_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.toml");
    std::fs::write(
        &path,
        "[defense.destination.countries]\nFR = \"deny\"\n[server]\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[defense.destination]\ndefault = \"explode\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("defense.destination.default"), "{stderr}");
    assert!(stderr.contains(&bad.display().to_string()), "{stderr}");

    let (mut child, mut rx) = spawn_demo(&["--config".as_ref(), path.as_os_str()]);
    let gateway = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if let Some(rest) = line.trim_start().strip_prefix("gateway") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // The file's rule applies (France denied), the demo's listen address wins over the file's.
    let env = crate::fixtures::client();
    let register = format!("{gateway}/contoso.onmicrosoft.com/register/v1.0/challenge");
    let answer = env
        .post(&register)
        .form(&[
            ("client_id", otpgate::emulate::entra::DEMO_CLIENT_ID),
            ("continuation_token", "x"),
            ("challenge_type", "oob"),
            ("challenge_channel", "sms"),
            ("challenge_target", "+33612345678"),
        ])
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "access_denied", "{body}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
}

#[test]
fn explain_judges_a_recorded_request_offline() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[upstream]\nurl = \"https://contoso.ciamlogin.com\"\n",
    )
    .unwrap();
    let run = |request: &str, provider: &str| {
        let out = Command::new(BIN)
            .args(["explain", "--config"])
            .arg(&config)
            .arg("--request")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/requests/").to_owned() + request)
            .args(["--provider", provider])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let premium = run("register-premium.http", "allow");
    assert_eq!(premium["decision"], "deny");
    assert_eq!(premium["reasons"][0], "destination:type:premium_rate:deny");
    let mobile = run("register-mobile.http", "allow");
    assert_eq!(mobile["decision"], "allow");
    assert!(mobile["outcome"].as_str().unwrap().starts_with("forwarded"));
    let flaky = run("register-mobile.http", "timeout");
    assert_eq!(flaky["decision"], "step_up");
    assert_eq!(flaky["reasons"][0], "provider_error:timeout:fail_step_up");
    let denied = run("register-mobile.http", "deny");
    assert_eq!(denied["decision"], "deny");
}

#[test]
fn explain_shows_what_the_config_does_unless_told_to_assume_a_provider() {
    let dir = tempfile::tempdir().unwrap();
    let request = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/requests/register-mobile.http"
    );
    let run = |toml: &str, provider: Option<&str>| {
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!("[upstream]\nurl = \"https://contoso.ciamlogin.com\"\n{toml}"),
        )
        .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["explain", "--config"])
            .arg(&config)
            .args(["--request", request]);
        if let Some(p) = provider {
            cmd.args(["--provider", p]);
        }
        cmd.output().unwrap()
    };
    let json = |out: std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // No provider configured: none is asked, and none is reported.
    let plain = json(run("", None));
    assert_eq!(plain["decision"], "allow");
    assert_eq!(plain["provider"], "");
    assert!(
        plain["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| !r.as_str().unwrap().contains("mock")),
        "{plain}"
    );
    // The config's own mock provider answers as configured.
    let mocked = json(run(
        "[routes.sms]\nprovider = \"mock\"\n[providers.mock]\ndefault_action = \"deny\"\n",
        None,
    ));
    assert_eq!(
        (mocked["decision"].as_str(), mocked["provider"].as_str()),
        (Some("deny"), Some("mock"))
    );
    // An assumed answer replaces it.
    let assumed = json(run("", Some("step_up")));
    assert_eq!(assumed["decision"], "step_up");
    // HUMAN cannot be asked offline: say so, and what to pass.
    let human = run(
        "[routes.sms]\nprovider = \"human\"\n[providers.human]\napp_id = \"PXabcd1234\"\nauth_token = \"t\"\n",
        None,
    );
    assert_eq!(human.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert!(
        stderr.contains("routes.sms asks HUMAN") && stderr.contains("--provider"),
        "{stderr}"
    );
}

#[test]
fn check_config_print_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[upstream]\nurl = \"https://contoso.ciamlogin.com\"\n[stepup]\nkey = \"a-very-secret-step-up-key-0123456789\"\n\
         [store]\nkey_secret = \"store-secret-key\"\n[store.redis]\npassword = \"redis-secret-password\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--print"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["upstream"]["url"], "https://contoso.ciamlogin.com");
    assert_eq!(json["stepup"]["key"], "***");
    assert_eq!(json["store"]["redis"]["password"], "***");
    assert_eq!(json["store"]["key_secret"], "***");
    assert!(
        !text.contains("very-secret")
            && !text.contains("redis-secret")
            && !text.contains("store-secret"),
        "{text}"
    );
}
