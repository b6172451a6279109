//! Hot reload: new rules take effect for new requests with no failed request, an invalid
//! config is rejected and the running one stays, a new certificate is seen by new TLS
//! connections.

use crate::fixtures::eventually;
use crate::fixtures::flows::{password_steps, register_until_challenge, sms_challenge};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use otpgate::emulate::entra::{serve, EntraConfig, EntraEmulator, DEMO_CLIENT_ID, DEMO_PASSWORD};
use otpgate::server::Server;

const PHONE: &str = "+447400123456";

async fn emulator() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve(
        l,
        EntraEmulator::new(EntraConfig::demo()),
        std::future::pending(),
    ));
    addr
}

fn config(entra: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [upstream]\nurl = \"http://{entra}\"\n[log]\nformat = \"json\"\n[audit]\noutput = \"off\"\n\
         [defense]\nvelocity = []\n{extra}"
    )
}

/// One JIT registration up to its SMS challenge; returns the challenge's status, or an
/// error text for anything that failed along the way (transport error or 5xx).
async fn register_once(client: &reqwest::Client, base: &str) -> Result<u16, String> {
    let ct = register_until_challenge(client, || base.to_owned()).await?;
    let r = sms_challenge(client, base, &ct, PHONE)
        .send()
        .await
        .map_err(|e| format!("challenge: {e}"))?;
    if r.status().is_server_error() {
        return Err(format!("challenge: {}", r.status()));
    }
    Ok(r.status().as_u16())
}

/// SIGTERM while a send whose client already left is still being judged: the process
/// waits for it, Entra sends the code, and its audit line is in the log before exit.
#[tokio::test]
async fn sigterm_finishes_sends_whose_clients_left_and_writes_their_audit_lines() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let entra = l.local_addr().unwrap();
    let emulator = EntraEmulator::new(EntraConfig::demo());
    tokio::spawn(serve(l, emulator.clone(), std::future::pending()));
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let path = dir.path().join("otpgate.toml");
    let toml = config(
        entra,
        "[routes.sms]\nprovider = \"mock\"\nbudget = \"5s\"\n\
         [providers.mock]\ndefault_action = \"allow\"\nlatency = \"800ms\"\n",
    )
    .replace(
        "[audit]\noutput = \"off\"\n",
        &format!(
            "[audit]\noutput = \"file\"\npath = \"{}\"\nhmac_key = \"k\"\n",
            audit.display()
        ),
    );
    std::fs::write(&path, toml).unwrap();
    let gateway = crate::fixtures::process::Otpgate::run(&path).await;
    let base = format!("http://{}", gateway.addr);
    let client = crate::fixtures::client();
    let ct = register_until_challenge(&client, || base.clone())
        .await
        .unwrap();
    let gave_up = sms_challenge(&client, &base, &ct, PHONE)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(
        gave_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the client gives up while the provider thinks: {gave_up:?}"
    );
    assert!(emulator.outbox().is_empty());
    let (status, output) = gateway.terminate().await;
    assert!(status.success(), "{}", output.join("\n"));
    assert_eq!(emulator.outbox().len(), 1, "the send went through");
    let text = std::fs::read_to_string(&audit).unwrap();
    let sends: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["endpoint"] == "register_challenge")
        .collect();
    assert_eq!(sends.len(), 1, "{text}");
    assert_eq!(sends[0]["upstream_status"], 200);
}

#[tokio::test]
async fn sighup_with_a_stricter_rule_under_load_changes_decisions_without_failures() {
    let entra = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otpgate.toml");
    std::fs::write(&path, config(entra, "")).unwrap();
    let mut gateway = crate::fixtures::process::Otpgate::run(&path).await;
    let addr = gateway.addr.clone();
    let base = format!("http://{addr}");

    let stop = Arc::new(AtomicBool::new(false));
    let allowed = Arc::new(AtomicUsize::new(0));
    let denied = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, allowed, denied, base) =
            (stop.clone(), allowed.clone(), denied.clone(), base.clone());
        workers.push(tokio::spawn(async move {
            let client = crate::fixtures::client();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match register_once(&client, &base).await {
                    Ok(200) => {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(400) => {
                        denied.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(other) => failures.push(format!("status {other}")),
                    Err(e) => failures.push(e),
                }
            }
            failures
        }));
    }
    eventually(
        Duration::from_secs(20),
        "traffic allowed before the reload",
        || std::future::ready(allowed.load(Ordering::Relaxed) >= 8),
    )
    .await;
    assert_eq!(denied.load(Ordering::Relaxed), 0);
    // Stricter: no SMS to GB numbers.
    std::fs::write(
        &path,
        config(entra, "[defense.destination.countries]\nGB = \"deny\"\n"),
    )
    .unwrap();
    gateway.signal("-HUP");
    gateway.wait_for("configuration reloaded").await;
    eventually(Duration::from_secs(10), "the stricter rule applied", || {
        std::future::ready(denied.load(Ordering::Relaxed) >= 8)
    })
    .await;
    let allowed_at_switch = allowed.load(Ordering::Relaxed);
    // Sixteen more denials: plenty of traffic after the switch for an allow to slip through.
    eventually(Duration::from_secs(10), "sixteen more denials", || {
        std::future::ready(denied.load(Ordering::Relaxed) >= 24)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let failures = w.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
    }
    // Once denials start, allows stop (at most the requests already past the judge).
    assert!(allowed.load(Ordering::Relaxed) <= allowed_at_switch + 4);
    let (status, _) = gateway.terminate().await;
    assert!(status.success());
}

/// A gateway in front of a fresh emulator, serving `config(entra, "")` from a file it
/// reloads from.
struct Served {
    entra: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    reloader: otpgate::server::Reloader,
    base: String,
    metrics: Arc<otpgate::metrics::Metrics>,
}

async fn serve_from_file() -> Served {
    let entra = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otpgate.toml");
    std::fs::write(&path, config(entra, "")).unwrap();
    let (_, settings) = otpgate::config::load(Some(&path)).unwrap();
    let server = Server::bind(settings).await.unwrap();
    let reloader = server.reloader();
    let addr = server.local_addr().unwrap();
    let metrics = server.metrics();
    tokio::spawn(server.serve(std::future::pending()));
    Served {
        entra,
        _dir: dir,
        path,
        reloader,
        base: format!("http://{addr}"),
        metrics,
    }
}

#[tokio::test]
async fn an_invalid_reload_keeps_the_running_config() {
    let Served {
        entra,
        _dir,
        path,
        reloader,
        base,
        metrics,
    } = serve_from_file().await;
    let client = crate::fixtures::client();
    assert_eq!(register_once(&client, &base).await.unwrap(), 200);

    std::fs::write(
        &path,
        "[server]\nlisten = \"nowhere\"\n[defense.destination.countries]\nGB = \"deny\"\n",
    )
    .unwrap();
    assert!(!reloader.reload_from(Some(&path)));
    assert_eq!(
        register_once(&client, &base).await.unwrap(),
        200,
        "old rules still apply"
    );
    assert!(metrics
        .render()
        .contains("otpgate_config_reloads_total{outcome=\"rejected\"} 1"));

    std::fs::write(
        &path,
        config(entra, "[defense.destination.countries]\nGB = \"deny\"\n"),
    )
    .unwrap();
    assert!(reloader.reload_from(Some(&path)));
    assert_eq!(register_once(&client, &base).await.unwrap(), 400);
    assert!(metrics
        .render()
        .contains("otpgate_config_reloads_total{outcome=\"ok\"} 1"));
}

/// Config lists reload with the rest: a block added to the file applies at the next
/// request, and the runtime entries (none here) are read again by the new judge.
#[tokio::test]
async fn a_reloaded_block_list_applies_at_the_next_request_and_a_removed_one_lifts() {
    let Served {
        entra,
        _dir,
        path,
        reloader,
        base,
        ..
    } = serve_from_file().await;
    let client = crate::fixtures::client();
    assert_eq!(register_once(&client, &base).await.unwrap(), 200);
    std::fs::write(
        &path,
        config(
            entra,
            &format!("[defense.lists.block]\nnumbers = [\"{PHONE}\"]\n"),
        ),
    )
    .unwrap();
    assert!(reloader.reload_from(Some(&path)));
    assert_eq!(register_once(&client, &base).await.unwrap(), 400, "blocked");
    std::fs::write(&path, config(entra, "")).unwrap();
    assert!(reloader.reload_from(Some(&path)));
    assert_eq!(register_once(&client, &base).await.unwrap(), 200, "lifted");
}

fn write_cert(dir: &std::path::Path, name: &str) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    cert.cert.pem()
}

async fn tls_get(addr: std::net::SocketAddr, root_pem: &str) -> Result<u16, String> {
    let client = crate::fixtures::https_trusting(root_pem, &["h2", "http/1.1"])
        .resolve("localhost", addr)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    client
        .get(format!("https://localhost:{}/x", addr.port()))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_new_certificate_is_seen_by_new_tls_connections() {
    let up = crate::fixtures::upstream(crate::fixtures::Upstream::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let first = write_cert(dir.path(), "a");
    let second = write_cert(dir.path(), "b");
    let toml = |name: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\n\
             [tls]\ncert_file = \"{d}/{name}.pem\"\nkey_file = \"{d}/{name}.key\"\n",
            d = dir.path().display()
        )
    };
    let path = dir.path().join("otpgate.toml");
    std::fs::write(&path, toml("a")).unwrap();
    let (_, settings) = otpgate::config::load(Some(&path)).unwrap();
    let server = Server::bind(settings).await.unwrap();
    let reloader = server.reloader();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve(std::future::pending()));

    assert_eq!(tls_get(addr, &first).await, Ok(200));
    assert!(
        tls_get(addr, &second).await.is_err(),
        "not yet the new certificate"
    );
    std::fs::write(&path, toml("b")).unwrap();
    assert!(reloader.reload_from(Some(&path)));
    assert_eq!(tls_get(addr, &second).await, Ok(200));
    assert!(
        tls_get(addr, &first).await.is_err(),
        "the old certificate is gone"
    );
}

/// A reload that changes what only a restart applies keeps the running value of each, and
/// the process says which in its log.
#[tokio::test]
async fn a_reload_names_every_restart_only_change_it_cannot_apply() {
    let entra = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otpgate.toml");
    let audit = dir.path().join("audit.log");
    std::fs::write(&path, config(entra, "")).unwrap();
    let mut otpgate = crate::fixtures::process::Otpgate::run(&path).await;
    let changed = config(entra, "")
        .replace(
            "listen = \"127.0.0.1:0\"\n[admin]",
            "listen = \"127.0.0.1:1\"\n[admin]",
        )
        .replace(
            "[audit]\noutput = \"off\"\n",
            &format!(
                "[audit]\noutput = \"file\"\npath = \"{}\"\n",
                audit.display()
            ),
        )
        + "[store.redis]\nurl = \"redis://otpgate:hunter2@cache.example:6379\"\n";
    std::fs::write(&path, changed).unwrap();
    otpgate.signal("-HUP");
    let reloaded = otpgate.wait_for("configuration reloaded").await;
    let warned: Vec<String> = reloaded
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| {
            j["message"]
                .as_str()
                .is_some_and(|m| m.contains("only after a restart"))
        })
        .filter_map(|j| j["key"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        warned,
        [
            "server.listen",
            "store.redis.url",
            "audit (output, path, max_bytes, keep)"
        ],
        "{reloaded:?}"
    );
    assert!(!audit.exists(), "the audit writer is the one started with");
    let (_, output) = otpgate.terminate().await;
    assert!(!output.join("\n").contains("hunter2"));
}

/// cert-manager and Kubernetes replace a Secret's files in place: the running process
/// picks the new certificate up without a SIGHUP or a config change.
#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_without_a_signal() {
    let up = crate::fixtures::upstream(crate::fixtures::Upstream::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let first = write_cert(dir.path(), "live");
    let path = dir.path().join("otpgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
             [upstream]\nurl = \"http://{up}\"\n[tls]\ncert_file = \"{d}/live.pem\"\nkey_file = \"{d}/live.key\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let mut otpgate = crate::fixtures::process::Otpgate::run(&path).await;
    let addr: std::net::SocketAddr = otpgate.addr.parse().unwrap();
    assert_eq!(tls_get(addr, &first).await, Ok(200));
    let second = write_cert(dir.path(), "live");
    otpgate.wait_for("configuration reloaded").await;
    assert_eq!(tls_get(addr, &second).await, Ok(200));
    assert!(tls_get(addr, &first).await.is_err(), "the old one is gone");
    let (status, _) = otpgate.terminate().await;
    assert!(status.success());
}

#[tokio::test]
async fn no_secret_or_raw_phone_in_any_output_of_a_full_run() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let entra = l.local_addr().unwrap();
    let emu = EntraEmulator::new(EntraConfig::demo());
    tokio::spawn(serve(l, emu.clone(), std::future::pending()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otpgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [upstream]\nurl = \"http://{entra}\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\
             [audit]\noutput = \"stdout\"\nhmac_key = \"k\"\n"
        ),
    )
    .unwrap();
    let gateway = crate::fixtures::process::Otpgate::run(&path).await;
    let addr = gateway.addr.clone();
    let base = format!("http://{addr}");
    let client = crate::fixtures::client();
    // A phone registration and a full SMS MFA sign-in.
    assert_eq!(register_once(&client, &base).await.unwrap(), 200);
    let mut secrets: Vec<String> = vec![
        PHONE.into(),
        PHONE.trim_start_matches('+').into(),
        DEMO_PASSWORD.into(),
    ];
    let post = |path: &str, form: Vec<(&str, String)>| {
        let mut fields = vec![("client_id", DEMO_CLIENT_ID.to_owned())];
        fields.extend(form);
        client
            .post(format!("{base}/contoso.onmicrosoft.com{path}"))
            .form(&fields)
            .send()
    };
    let answers = password_steps(
        &client,
        || base.clone(),
        "sms@contoso.com",
        vec![
            ("/oauth2/v2.0/introspect", vec![]),
            (
                "/oauth2/v2.0/challenge",
                vec![("challenge_type", "oob redirect".into())],
            ),
        ],
    )
    .await
    .unwrap();
    for answer in &answers {
        secrets.push(answer["continuation_token"].as_str().unwrap().to_owned());
    }
    let ct = secrets.last().unwrap().clone();
    let id = answers[3]["methods"][0]["id"].as_str().unwrap().to_owned();
    let code = emu.outbox().last().unwrap().code.clone();
    let v: serde_json::Value = post(
        "/oauth2/v2.0/token",
        vec![
            ("continuation_token", ct.clone()),
            ("grant_type", "mfa_oob".into()),
            ("oob", code.clone()),
            ("scope", "openid".into()),
        ],
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(v["access_token"].is_string(), "{v}");
    secrets.push(code);
    secrets.push(v["access_token"].as_str().unwrap().to_owned());
    secrets.push(id.clone());
    for entry in emu.outbox() {
        secrets.push(entry.code);
    }

    let (status, output) = gateway.terminate().await;
    assert!(status.success());
    let all = output.join("\n");
    assert!(
        all.contains("\"endpoint\":\"register_challenge\""),
        "the audit lines are in the output"
    );
    for secret in secrets.iter().filter(|s| s.len() >= 6) {
        assert!(!all.contains(secret.as_str()), "output leaks {secret:?}");
    }
}
