//! The container image without Docker: `scripts/container-build` (the Dockerfile's build
//! stage) stages a working layout, the Dockerfile copies what exists, and the Kubernetes
//! examples' configs pass `check-config`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_otpgate");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The Dockerfile's instructions: continuation lines joined, comments and blanks dropped,
/// each as (INSTRUCTION, arguments).
fn dockerfile() -> Vec<(String, Vec<String>)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let mut words = current.split_whitespace().map(str::to_owned);
                let op = words.next().unwrap().to_ascii_uppercase();
                instructions.push((op, words.collect()));
                current.clear();
            }
        }
    }
    instructions
}

/// The arguments of a JSON-form instruction such as `CMD ["run", "--config", "FILE"]`.
fn exec_form(args: &[String]) -> Vec<String> {
    serde_json::from_str(&args.join(" ")).unwrap()
}

#[test]
fn container_build_stages_the_image_layout_and_the_dockerfile_copies_it() {
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("root");
    let out = Command::new(repo("scripts/container-build"))
        .arg("--out")
        .arg(&stage)
        .arg("--binary")
        .arg(BIN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let bin = stage.join("usr/local/bin/otpgate");
    let conf = stage.join("etc/otpgate/otpgate.toml");
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        read("config/otpgate.toml")
    );
    let version = Command::new(&bin).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("otpgate {}", env!("CARGO_PKG_VERSION"))
    );
    let check = Command::new(&bin)
        .arg("check-config")
        .arg(&conf)
        .env_clear()
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));

    // The runtime stage copies only what the script staged, and runs the staged binary on
    // the staged config.
    let image = dockerfile();
    let mut copied = 0;
    for (_, args) in image.iter().filter(|(op, _)| op == "COPY") {
        if args[0] == "--from=build" {
            let src = args[1].strip_prefix("/out/").unwrap();
            assert!(stage.join(src).exists(), "COPY {src}: not staged");
            copied += 1;
        }
    }
    assert_eq!(
        copied, 2,
        "the binary and config/ are copied from the build stage"
    );
    let (_, entrypoint) = image.iter().find(|(op, _)| op == "ENTRYPOINT").unwrap();
    let entrypoint = exec_form(entrypoint);
    assert_eq!(entrypoint, ["/usr/local/bin/otpgate"]);
    assert!(stage.join(entrypoint[0].trim_start_matches('/')).is_file());
    let (_, cmd) = image.iter().find(|(op, _)| op == "CMD").unwrap();
    let cmd = exec_form(cmd);
    assert_eq!(cmd[..2], ["run", "--config"]);
    assert!(stage.join(cmd[2].trim_start_matches('/')).is_file());
}

#[test]
fn dockerfile_copies_files_that_exist_and_builds_with_the_script() {
    let image = dockerfile();
    let ignore = read(".dockerignore");
    let allowed: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .collect();
    let mut sources = 0;
    for (_, args) in image.iter().filter(|(op, _)| op == "COPY") {
        if args[0].starts_with("--from=") {
            continue;
        }
        for src in &args[..args.len() - 1] {
            assert!(repo(src).exists(), "COPY {src}: no such file in the repo");
            let src = src.trim_end_matches('/');
            assert!(
                allowed.contains(&src),
                "COPY {src}: excluded from the build context by .dockerignore"
            );
            sources += 1;
        }
    }
    assert!(
        sources >= 4,
        "Cargo.toml, Cargo.lock, src/, config/ and the script"
    );
    assert!(
        image.iter().any(|(op, args)| op == "RUN"
            && args.first().map(String::as_str) == Some("scripts/container-build")),
        "the build stage runs scripts/container-build"
    );

    // The script checks the config under the environment the image sets.
    let script = read("scripts/container-build");
    let mut env = 0;
    for (_, args) in image.iter().filter(|(op, _)| op == "ENV") {
        for setting in args {
            assert!(
                script.contains(setting),
                "ENV {setting} is not in the script's IMAGE_ENV"
            );
            env += 1;
        }
    }
    assert_eq!(env, 2, "server and admin listen addresses");
    assert!(image
        .iter()
        .any(|(op, args)| op == "USER" && args[0] != "root" && args[0] != "0"));
}

/// The body of a `key: |` block scalar in a YAML file, dedented.
fn yaml_block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines();
    let header = lines
        .by_ref()
        .find(|l| l.trim() == format!("{key}: |"))
        .unwrap_or_else(|| panic!("no `{key}: |` block"));
    let outer = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > outer)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap();
    body.iter()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `stringData` keys of every Secret in secrets.example.yaml: the files mounted at
/// /var/run/secrets/otpgate.
fn example_secret_keys() -> Vec<String> {
    let yaml = read("deploy/kubernetes/secrets.example.yaml");
    let mut keys = Vec::new();
    let mut in_data = false;
    for line in yaml.lines() {
        if !line.starts_with(' ') {
            in_data = line.trim_end() == "stringData:";
        } else if in_data && !line.starts_with("   ") && !line.trim_start().starts_with('#') {
            let (key, _) = line.trim().split_once(':').unwrap();
            keys.push(key.to_owned());
        }
    }
    keys
}

#[test]
fn kubernetes_configs_pass_check_config_with_the_example_secrets() {
    let keys = example_secret_keys();
    assert!(keys.contains(&"redis-password".to_owned()), "{keys:?}");
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    for key in &keys {
        // Long enough for every secret's minimum (the step-up key needs 32 characters).
        std::fs::write(
            secrets.join(key),
            format!("placeholder-{key}-0123456789abcdef0123456789\n"),
        )
        .unwrap();
    }
    for file in ["configmap.yaml", "sidecar.yaml"] {
        let toml = yaml_block(&read(&format!("deploy/kubernetes/{file}")), "otpgate.toml");
        assert!(toml.contains("\n[upstream]\n"), "{file}:\n{toml}");
        let toml = toml.replace(
            "/var/run/secrets/otpgate/",
            &format!("{}/", secrets.display()),
        );
        let path = dir.path().join(file).with_extension("toml");
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&path)
            .env_clear()
            .env("OTPGATE__SERVER__LISTEN", "0.0.0.0:8080")
            .env("OTPGATE__ADMIN__LISTEN", "0.0.0.0:9090")
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {}", text(&out));
        assert!(!text(&out).contains("warning"), "{file}: {}", text(&out));
    }
}
