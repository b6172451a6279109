//! The admin API over real sockets: its token, each verb, the safe and block lists applied
//! to real sends through the gateway (the Entra emulator's outbox counts what was sent),
//! two replicas on one `redis-server`, expiries, "why", and nothing raw in any answer,
//! log or audit line.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fixtures::entra::{start, start_process_logging, Env, TENANT};
use crate::fixtures::redis::RedisServer;
use otpgate::emulate::entra::DEMO_CLIENT_ID;

const TOKEN: &str = "admin-test-token-0123456789abcdef";
const PHONE: &str = "+447400123456";
const OTHER: &str = "+447400123999";

fn api_toml() -> String {
    format!(
        "[admin.api]\nenabled = true\ntokens = [{{ name = \"oncall\", token = \"{TOKEN}\" }}]\n"
    )
}

/// A client of one replica's admin API.
struct Admin {
    base: String,
    client: reqwest::Client,
}

impl Admin {
    fn of(admin: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{admin}/admin/v1"),
            client: crate::fixtures::client(),
        }
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
        (status, body)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(Some(TOKEN), method, path, body).await
    }

    async fn add(&self, list: &str, body: Value) -> Value {
        let (status, answer) = self
            .call(reqwest::Method::POST, &format!("/lists/{list}"), Some(body))
            .await;
        assert!(status == 201 || status == 200, "{status} {answer}");
        answer
    }
}

/// A registration flow's SMS challenge to `phone` through `env`'s gateway: the status.
async fn register_sms(env: &Env, phone: &str) -> u16 {
    let token = env
        .register_introspect("newphone@contoso.com")
        .await
        .token();
    env.register_sms(&token, phone).await.status
}

/// The MFA challenge of every method of `username`: the statuses.
async fn mfa_every_method(env: &Env, username: &str) -> Vec<u16> {
    let introspected = env.introspect(username).await;
    let mut token = introspected.token();
    let mut statuses = Vec::new();
    for method in introspected.body["methods"].as_array().unwrap() {
        let sent = env
            .mfa_challenge(&token, method["id"].as_str().unwrap())
            .await;
        statuses.push(sent.status);
        if sent.status == 200 {
            token = sent.token();
        }
    }
    statuses
}

#[tokio::test]
async fn no_token_or_a_wrong_one_is_401_and_every_verb_works() {
    let env = start(&api_toml()).await;
    let admin = Admin::of(env.gw.admin);
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let delete = reqwest::Method::DELETE;
    let entry = json!({ "kind": "number", "value": PHONE });
    let verbs = [
        (get.clone(), "/lists", None),
        (get.clone(), "/lists/block", None),
        (post.clone(), "/lists/block", Some(entry.clone())),
        (delete.clone(), "/lists/block", Some(entry.clone())),
        (
            get.clone(),
            "/why?flow=0123456789abcdef0123456789abcdef",
            None,
        ),
        (get.clone(), "/nowhere", None),
    ];
    for (method, path, body) in &verbs {
        for token in [None, Some("wrong-token-0123456789abcdef0123"), Some("")] {
            let (status, answer) = admin
                .call_as(token, method.clone(), path, body.clone())
                .await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {answer}");
            assert_eq!(answer["error"], "unauthorized");
        }
    }
    // Nothing was added by the refused calls.
    let (status, listed) = admin.call(get.clone(), "/lists", None).await;
    assert_eq!(
        (status, listed["entries"].as_array().unwrap().len()),
        (200, 0)
    );

    // add
    let added = admin
        .add(
            "block",
            json!({ "kind": "number", "value": "+44 7400 123456", "note": "reported stolen",
                    "expires_in": "7d" }),
        )
        .await;
    let id = added["entry"]["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64);
    assert_eq!(added["entry"]["by"], "oncall");
    assert_eq!(added["entry"]["note"], "reported stolen");
    assert!(added["entry"]["expires_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(added["replaced"], false);
    // list (all, and one list)
    let (_, listed) = admin.call(get.clone(), "/lists/block", None).await;
    assert_eq!(listed["entries"][0]["id"], id.as_str());
    assert_eq!(listed["entries"][0]["source"], "runtime");
    let (_, safe) = admin.call(get.clone(), "/lists/safe", None).await;
    assert_eq!(safe["entries"].as_array().unwrap().len(), 0);
    // applied: no SMS to the blocked number, another number still gets one
    assert_ne!(register_sms(&env, PHONE).await, 200);
    assert_eq!(env.outbox().len(), 0);
    assert_eq!(register_sms(&env, OTHER).await, 200);
    assert_eq!(env.outbox().len(), 1);
    // why, by phone (a `+` left unencoded reads as a space, and is taken as the `+`)
    for query in ["/why?phone=%2B447400123456", "/why?phone=+447400123456"] {
        let (status, why) = admin.call(get.clone(), query, None).await;
        assert_eq!(status, 200, "{why}");
        let decisions = why["decisions"].as_array().unwrap();
        assert_eq!(decisions.len(), 1, "{why}");
        assert_eq!(decisions[0]["decision"], "deny");
        assert_eq!(decisions[0]["reasons"], json!(["list:block:number"]));
        // The flow of that decision answers too.
        let flow = decisions[0]["flow"].as_str().unwrap();
        let (_, by_flow) = admin
            .call(get.clone(), &format!("/why?flow={flow}"), None)
            .await;
        assert_eq!(
            by_flow["decisions"][0]["reasons"],
            json!(["list:block:number"])
        );
    }
    // why, by username: every send of the flow's user (the registration's user)
    let (_, by_user) = admin
        .call(get.clone(), "/why?username=NewPhone@contoso.com", None)
        .await;
    let decisions: Vec<&str> = by_user["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["allow", "deny"], "{by_user}");
    // remove, by value (the entry's id works too), then the number gets its code
    let (status, removed) = admin
        .call(delete.clone(), "/lists/block", Some(entry.clone()))
        .await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["removed"]["id"], id.as_str());
    let (status, _) = admin
        .call(
            delete.clone(),
            "/lists/block",
            Some(json!({ "kind": "number", "id": id })),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(register_sms(&env, PHONE).await, 200);
    assert_eq!(env.outbox().len(), 2);

    // bad input: named, nothing echoed
    for (body, code) in [
        (
            json!({ "kind": "number", "value": "07700900123" }),
            "invalid_value",
        ),
        (json!({ "kind": "phone", "value": PHONE }), "unknown_kind"),
        (
            json!({ "kind": "number", "value": PHONE, "expires_in": "soon" }),
            "invalid_expiry",
        ),
        (
            json!({ "kind": "number", "value": 447400123456_u64 }),
            "invalid_json",
        ),
        (json!({ "kind": "number" }), "invalid_request"),
    ] {
        let (status, answer) = admin.call(post.clone(), "/lists/block", Some(body)).await;
        assert_eq!(
            (status, answer["error"].as_str().unwrap()),
            (400, code),
            "{answer}"
        );
        assert!(!answer.to_string().contains("7400123456"), "{answer}");
    }
    let (status, answer) = admin.call(post.clone(), "/lists/grey", Some(entry)).await;
    assert_eq!(
        (status, answer["error"].as_str().unwrap()),
        (404, "unknown_list")
    );
}

#[tokio::test]
async fn the_api_is_off_by_default_and_the_admin_port_is_unchanged() {
    let env = start("").await;
    let admin = Admin::of(env.gw.admin);
    let (status, answer) = admin.call(reqwest::Method::GET, "/lists", None).await;
    assert_eq!(
        (status, answer["error"].as_str().unwrap()),
        (404, "not_found")
    );
    let (status, _) = env.readyz().await;
    assert_eq!(status, 200);
}

/// One velocity rule: one SMS per client IP an hour, denied past it.
const ONE_PER_IP: &str = "[[defense.velocity]]\nname = \"sms-per-ip\"\nkey = \"ip\"\n\
    channel = \"sms\"\nwindow = \"1h\"\nlimit = 1\naction = \"deny\"\n";

#[tokio::test]
async fn a_safe_number_passes_velocity_that_denies_its_neighbour_but_not_the_classifier() {
    let env = start(&format!(
        "{ONE_PER_IP}[defense.lists.safe]\nnumbers = [\"{PHONE}\"]\n"
    ))
    .await;
    assert_eq!(register_sms(&env, OTHER).await, 200);
    assert_ne!(
        register_sms(&env, OTHER).await,
        200,
        "the neighbour is over the limit"
    );
    assert_eq!(env.outbox().len(), 1);
    for _ in 0..3 {
        assert_eq!(
            register_sms(&env, PHONE).await,
            200,
            "the safe number passes"
        );
    }
    assert_eq!(env.outbox().len(), 4);

    // Ambiguous (the target twice) and malformed (bad percent-encoding, a number that does
    // not parse) requests naming the safe number are refused all the same.
    let token = env
        .register_introspect("newphone@contoso.com")
        .await
        .token();
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let base = format!(
        "client_id={DEMO_CLIENT_ID}&continuation_token={}&challenge_type=oob&challenge_channel=sms",
        enc(&token)
    );
    let bodies = [
        format!(
            "{base}&challenge_target={}&challenge_target={}",
            enc(PHONE),
            enc(PHONE)
        ),
        format!("{base}&challenge_target={}%ZZ", enc(PHONE)),
        format!("{base}&challenge_target={}", enc("+4474001234567890123")),
    ];
    for body in bodies {
        let resp = env
            .client
            .post(env.gw.url(&format!("/{TENANT}/register/v1.0/challenge")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_ne!(resp.status().as_u16(), 200, "{body}");
    }
    assert_eq!(
        env.outbox().len(),
        4,
        "no code for an ambiguous or malformed request"
    );
}

#[tokio::test]
async fn a_blocked_user_gets_no_code_through_any_mfa_method() {
    let env = start(&api_toml()).await;
    let admin = Admin::of(env.gw.admin);
    admin
        .add(
            "block",
            json!({ "kind": "user", "value": "Both@Contoso.com", "note": "phone stolen" }),
        )
        .await;
    let statuses = mfa_every_method(&env, "both@contoso.com").await;
    assert_eq!(statuses.len(), 2, "an email and an SMS method");
    assert!(statuses.iter().all(|s| *s != 200), "{statuses:?}");
    assert_eq!(env.outbox().len(), 0, "no code by any method");
    // Another user is untouched.
    assert_eq!(mfa_every_method(&env, "sms@contoso.com").await, [200]);
    assert_eq!(env.outbox().len(), 1);
}

#[tokio::test]
async fn an_entry_added_through_one_replica_applies_on_the_other_and_expires_by_itself() {
    let redis = RedisServer::start();
    let store = format!(
        "{}{}",
        crate::fixtures::redis_toml(&redis.url(), "250ms"),
        api_toml()
    )
    .replace(
        "[store]",
        "[store]\nkey_secret = \"shared-by-both-replicas\"",
    );
    let a = start(&store).await;
    let b = crate::fixtures::gateway(&format!(
        "[upstream]\nurl = \"http://{}\"\n{store}",
        a.entra
    ))
    .await;
    let via_b = Env {
        gw: b,
        emulator: a.emulator.clone(),
        entra: a.entra,
        client: a.client.clone(),
    };
    // B reads the (empty) lists first, so what follows is a change it must notice.
    assert_eq!(register_sms(&via_b, OTHER).await, 200);
    Admin::of(a.gw.admin)
        .add(
            "block",
            json!({ "kind": "prefix", "value": "+4474001234", "expires_in": "3s" }),
        )
        .await;
    assert_ne!(
        register_sms(&via_b, PHONE).await,
        200,
        "blocked on the other replica"
    );
    assert_eq!(register_sms(&via_b, OTHER).await, 200, "outside the prefix");
    assert_eq!(a.outbox().len(), 2);
    // B's admin API lists what A added.
    let (_, listed) = Admin::of(via_b.gw.admin)
        .call(reqwest::Method::GET, "/lists/block", None)
        .await;
    assert_eq!(listed["entries"][0]["kind"], "prefix");
    assert_eq!(listed["entries"][0]["shape"], "d10");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        register_sms(&via_b, PHONE).await,
        200,
        "the expiry lifted it"
    );
    assert_eq!(a.outbox().len(), 3);
    let (_, listed) = Admin::of(via_b.gw.admin)
        .call(reqwest::Method::GET, "/lists/block", None)
        .await;
    assert_eq!(listed["entries"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn no_raw_phone_username_or_token_in_any_answer_log_or_audit_line() {
    let mut env = start_process_logging(
        &format!("[audit]\noutput = \"stdout\"\n{}", api_toml()),
        "debug",
    )
    .await;
    let admin = Admin::of(env.gw.admin);
    let mut answers = Vec::new();
    answers.push(
        admin
            .add(
                "block",
                json!({ "kind": "number", "value": "+447400123457" }),
            )
            .await,
    );
    answers.push(
        admin
            .add(
                "block",
                json!({ "kind": "user", "value": "both@contoso.com" }),
            )
            .await,
    );
    answers.push(
        admin
            .add("safe", json!({ "kind": "number", "value": PHONE }))
            .await,
    );
    assert_ne!(register_sms(&env, "+447400123457").await, 200);
    assert_eq!(register_sms(&env, PHONE).await, 200);
    mfa_every_method(&env, "both@contoso.com").await;
    for query in [
        "/why?phone=%2B447400123457",
        "/why?phone=%2B447400123456",
        "/why?username=both@contoso.com",
        "/lists",
    ] {
        let (status, answer) = admin.call(reqwest::Method::GET, query, None).await;
        assert_eq!(status, 200, "{answer}");
        answers.push(answer);
    }
    assert_eq!(
        answers[3]["decisions"].as_array().unwrap().len(),
        1,
        "{}",
        answers[3]
    );
    assert_eq!(
        answers[5]["decisions"].as_array().unwrap().len(),
        2,
        "{}",
        answers[5]
    );
    let output = env.gw.stop_and_collect().await;
    let audit_lines = output
        .iter()
        .filter(|l| l.contains("\"type\":\"audit\""))
        .count();
    assert!(audit_lines >= 6, "{output:?}");
    assert!(
        output
            .iter()
            .any(|l| l.contains("\"event\":\"admin_change\"")),
        "{output:?}"
    );
    let mut everything: Vec<String> = answers.iter().map(Value::to_string).collect();
    everything.extend(output);
    for text in &everything {
        for raw in [
            "7400123456",
            "7400123457",
            "both@contoso.com",
            "newphone@contoso.com",
            TOKEN,
        ] {
            assert!(!text.contains(raw), "{raw} in: {text}");
        }
    }
}

/// `otpgate admin --url URL ARGS`, with `token` as `OTPGATE_ADMIN_TOKEN` and `stdin`
/// written to its standard input: the exit code, stdout and stderr.
fn cli(
    url: &str,
    args: &[&str],
    token: Option<&str>,
    stdin: Option<&str>,
) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(crate::fixtures::process::BIN);
    cmd.arg("admin").arg("--url").arg(url).args(args);
    cmd.env_remove("OTPGATE_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("OTPGATE_ADMIN_TOKEN", t);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `otpgate admin ...` against a running gateway: the token from the environment or a
/// file, a value from standard input; exit 0 on success, 1 on an error answer, 2 when
/// the API cannot be asked.
#[tokio::test]
async fn the_cli_adds_lists_explains_and_removes() {
    let env = start(&api_toml()).await;
    let url = format!("http://{}", env.gw.admin);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let file = token_file.display().to_string();
    let at = url.clone();
    let (added, listed, wrong, none) = tokio::task::spawn_blocking(move || {
        let added = cli(
            &at,
            &[
                "--token-file",
                &file,
                "add",
                "block",
                "number",
                "-",
                "--expires-in",
                "1h",
            ],
            None,
            Some("+447400123456\n"),
        );
        let listed = cli(&at, &["lists", "block"], Some(TOKEN), None);
        let wrong = cli(
            &at,
            &["lists"],
            Some("wrong-token-0123456789abcdef0123"),
            None,
        );
        let none = cli(&at, &["lists"], None, None);
        (added, listed, wrong, none)
    })
    .await
    .unwrap();
    assert_eq!(added.0, 0, "{added:?}");
    let added: Value = serde_json::from_str(&added.1).unwrap();
    assert_eq!(added["entry"]["kind"], "number");
    assert_eq!(listed.0, 0, "{listed:?}");
    assert!(listed.1.contains(added["entry"]["id"].as_str().unwrap()));
    assert_eq!(wrong.0, 1, "{wrong:?}");
    assert!(wrong.2.contains("unauthorized"), "{wrong:?}");
    assert_eq!(none.0, 2, "{none:?}");
    assert!(none.2.contains("OTPGATE_ADMIN_TOKEN"), "{none:?}");
    assert_ne!(register_sms(&env, PHONE).await, 200);
    let (why, removed) = tokio::task::spawn_blocking(move || {
        let why = cli(&url, &["why", "--phone", PHONE], Some(TOKEN), None);
        let removed = cli(
            &url,
            &["remove", "block", "number", PHONE],
            Some(TOKEN),
            None,
        );
        (why, removed)
    })
    .await
    .unwrap();
    assert_eq!(why.0, 0, "{why:?}");
    assert!(why.1.contains("list:block:number"), "{why:?}");
    assert_eq!(removed.0, 0, "{removed:?}");
    assert_eq!(register_sms(&env, PHONE).await, 200);
}

/// One adaptive rule on the destination's calling code: deny after two unverified sends,
/// judged at once (no grace).
const COUNTRY_ADAPTIVE: &str = "[defense]\nvelocity = []\n[defense.conversion]\ngrace = \"1ms\"\n\
    [[defense.adaptive]]\nname = \"country\"\nkey = \"country\"\nchannel = \"sms\"\n\
    window = \"1h\"\nmin_unverified = 2\nbelow = 0.4\naction = \"deny\"\n";

#[tokio::test]
async fn active_adaptive_blocks_are_listed_with_their_figures_and_lifted() {
    let env = start(&format!("{COUNTRY_ADAPTIVE}{}", api_toml())).await;
    let admin = Admin::of(env.gw.admin);
    let latvia = "+37120012345";
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(register_sms(&env, latvia).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(statuses[..2], [200, 200]);
    assert_ne!(statuses[2], 200, "the third unverified send is denied");
    // The listing is told off the request path: give it a moment.
    let mut blocks = Value::Null;
    for _ in 0..50 {
        let (status, answer) = admin
            .call(reqwest::Method::GET, "/adaptive/blocks", None)
            .await;
        assert_eq!(status, 200, "{answer}");
        if !answer["blocks"].as_array().unwrap().is_empty() {
            blocks = answer;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let block = &blocks["blocks"][0];
    assert_eq!(block["rule"], "country", "{blocks}");
    assert_eq!(block["action"], "deny");
    assert_eq!(
        (block["settled"].as_u64(), block["verified"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(block["lifted_by"], Value::Null);
    let key = block["key"].as_str().unwrap().to_owned();
    // A lift needs the token, a known rule and one of its keys.
    let lift = json!({ "rule": "country", "key": key });
    let (status, _) = admin
        .call_as(
            None,
            reqwest::Method::DELETE,
            "/adaptive/blocks",
            Some(lift.clone()),
        )
        .await;
    assert_eq!(status, 401);
    let (status, answer) = admin
        .call(
            reqwest::Method::DELETE,
            "/adaptive/blocks",
            Some(json!({ "rule": "nope", "key": key })),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str().unwrap()),
        (404, "unknown_rule")
    );
    let (status, answer) = admin
        .call(
            reqwest::Method::DELETE,
            "/adaptive/blocks",
            Some(json!({ "rule": "country", "key": "conv:other:+371" })),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str().unwrap()),
        (400, "invalid_key")
    );
    let (status, answer) = admin
        .call(reqwest::Method::DELETE, "/adaptive/blocks", Some(lift))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(register_sms(&env, latvia).await, 200, "lifted");
    let (_, listed) = admin
        .call(reqwest::Method::GET, "/adaptive/blocks", None)
        .await;
    assert_eq!(listed["blocks"][0]["lifted_by"], "oncall", "{listed}");
}
