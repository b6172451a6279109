//! The container image without Docker: the Dockerfile's build stage is walked as
//! `docker build` would (the build context assembled by `.dockerignore`'s rules, then its
//! WORKDIR, COPY and RUN in order), `scripts/container-build` stages a working layout, the
//! Dockerfile copies what exists, and the Kubernetes examples' configs pass `check-config`.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use regex::Regex;

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

// The build context, as Docker assembles it from `.dockerignore`.

/// One `.dockerignore` pattern as Docker reads it (moby/patternmatcher and its ignore-file
/// reader).
struct Ignore {
    /// A `!` line: re-includes what an earlier line left out.
    exclusion: bool,
    /// The pattern cleaned like Go's `filepath.Clean`: `src/`, `/src` and `./src` are `src`.
    pattern: String,
    regex: Regex,
}

/// `.dockerignore`'s patterns in order: `#` lines and blank lines dropped, a leading `!`
/// for re-inclusion.
fn ignore_patterns(text: &str) -> Vec<Ignore> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (exclusion, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pattern = clean(pattern);
            Ignore {
                exclusion,
                regex: glob(&pattern, true),
                pattern,
            }
        })
        .collect()
}

/// A slash-separated path without empty, `.` and `..` parts, and relative.
fn clean(path: &str) -> String {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

/// A Docker path pattern as a regex, translated as moby/patternmatcher does: `*` and `?`
/// stop at `/`, `[...]` is a class, `\` escapes the next character. With `double_star`
/// (the `.dockerignore` dialect) `**/` is any number of directories and a trailing `**`
/// anything at all; COPY sources use Go's `filepath.Match`, where `**` is just `*` twice.
fn glob(pattern: &str, double_star: bool) -> Regex {
    let mut regex = String::from("^");
    let mut chars = pattern.chars().peekable();
    let mut class = false;
    while let Some(c) = chars.next() {
        match c {
            _ if class => {
                regex.push(c);
                class = c != ']';
            }
            '*' if double_star && chars.peek() == Some(&'*') => {
                chars.next();
                chars.next_if_eq(&'/');
                regex.push_str(if chars.peek().is_none() {
                    ".*"
                } else {
                    "(.*/)?"
                });
            }
            '*' => regex.push_str("[^/]*"),
            '?' => regex.push_str("[^/]"),
            '[' => {
                regex.push('[');
                class = true;
            }
            '\\' => match chars.next() {
                Some(next) => regex.push_str(&regex::escape(&next.to_string())),
                None => regex.push_str(r"\\"),
            },
            _ => regex.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex.push('$');
    Regex::new(&regex).unwrap()
}

/// Whether Docker leaves `path` (relative to the context) out of the build context:
/// moby's `MatchesOrParentMatches`. Every pattern is tried in order and the last one that
/// matches wins; a pattern matching a directory matches everything under it.
fn ignored(patterns: &[Ignore], path: &str) -> bool {
    let parents: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
    let mut ignored = false;
    for p in patterns {
        // As moby: an exclusion can only change an ignored path, a pattern a kept one.
        if p.exclusion != ignored {
            continue;
        }
        if p.regex.is_match(path) || parents.iter().any(|dir| p.regex.is_match(dir)) {
            ignored = !p.exclusion;
        }
    }
    ignored
}

/// The repository's files Docker sends as the build context, relative and sorted. Its
/// walker does not descend into an ignored directory unless some `!` pattern starts with
/// that directory's path (so `!**/x` cannot re-include from under an ignored directory);
/// this one does the same. `.git` and `target` are skipped outright (`*` leaves them out).
fn context_files(patterns: &[Ignore]) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(repo(&dir)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            if path == ".git" || path == "target" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                let under = format!("{path}/");
                if !ignored(patterns, &path)
                    || patterns
                        .iter()
                        .any(|p| p.exclusion && format!("{}/", p.pattern).starts_with(&under))
                {
                    dirs.push(path);
                }
            } else if !ignored(patterns, &path) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Copies a file, mode included (COPY keeps the script executable), making its directory.
fn copy_file(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

/// What `COPY src ...` takes from the context (given as its list of files): each file
/// with its path under the destination. A file is taken by its file name, a directory's
/// files by their paths below it; a source with wildcards is matched (Go's
/// `filepath.Match`) against every file and directory of the context, and each match is
/// taken as a file or directory. Empty: the source is not in the context.
fn copy_sources(context: &[String], src: &str) -> Vec<(String, String)> {
    let src = clean(src);
    let matches: Vec<String> = if src.contains(['*', '?', '[']) {
        let regex = glob(&src, false);
        let paths: BTreeSet<&str> = context
            .iter()
            .flat_map(|file| {
                let dirs = file.match_indices('/').map(|(i, _)| &file[..i]);
                dirs.chain([file.as_str()])
            })
            .filter(|path| regex.is_match(path))
            .collect();
        paths.into_iter().map(str::to_owned).collect()
    } else {
        vec![src]
    };
    let mut taken = Vec::new();
    for path in matches {
        if context.contains(&path) {
            let name = path.rsplit('/').next().unwrap().to_owned();
            taken.push((path, name));
            continue;
        }
        let under = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        for file in context.iter().filter(|file| file.starts_with(&under)) {
            taken.push((file.clone(), file[under.len()..].to_owned()));
        }
    }
    taken
}

/// Dockerfile instructions, as `dockerfile()` gives them.
type Instructions = [(String, Vec<String>)];

/// The instructions of the stage `FROM ... AS name` (up to the next `FROM`), and those
/// after it.
fn stage<'a>(image: &'a Instructions, name: &str) -> (&'a Instructions, &'a Instructions) {
    let from = image
        .iter()
        .position(|(op, args)| {
            op == "FROM" && args.len() == 3 && args[1].eq_ignore_ascii_case("as") && args[2] == name
        })
        .unwrap_or_else(|| panic!("no `FROM ... AS {name}` stage"));
    let rest = &image[from + 1..];
    let end = rest
        .iter()
        .position(|(op, _)| op == "FROM")
        .unwrap_or(rest.len());
    rest.split_at(end)
}

/// A path in the image (absolute, or relative to `workdir`), made absolute.
fn image_path(workdir: &str, path: &str) -> String {
    if path.starts_with('/') {
        format!("/{}", clean(path))
    } else {
        format!("/{}", clean(&format!("{workdir}/{path}")))
    }
}

/// What the RUN commands see of this machine's environment: where the toolchain is (PATH,
/// HOME, CARGO_HOME, RUSTUP_*) and TMPDIR; not the variables cargo sets for this test, nor
/// RUSTFLAGS and the like, which the image does not have either.
fn toolchain_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(key, _)| {
            ["PATH", "HOME", "TMPDIR", "CARGO_HOME"].contains(&key.as_str())
                || key.starts_with("RUSTUP_")
        })
        .collect()
}

/// Added to the RUN commands' environment. The commands are the Dockerfile's own, run
/// unchanged; only where cargo puts its artifacts and how hard the release profile
/// optimises differ. The image's release profile (thin LTO, one codegen unit) would make
/// every run of this test a multi-minute optimised build, so optimisation is relaxed
/// here; what is checked (that the manifest loads from what the stage copied, the lockfile
/// is honoured, everything compiles and the staged layout works) does not depend on it.
/// The crates come from the local registry cache (CI's `cargo test --locked` has fetched
/// them; the image downloads them), hence offline.
const BUILD_ENV: [(&str, &str); 5] = [
    ("CARGO_PROFILE_RELEASE_LTO", "false"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "0"),
    ("CARGO_NET_OFFLINE", "true"),
];

/// Where the RUN commands' cargo builds go: kept between runs, so after the first (which
/// compiles every dependency: about 7.5 minutes on 2 busy cores) a run compiles only
/// otpgate (about 45 s), whose artifacts the Dockerfile's dependency step cleans anyway.
const BUILD_TARGET_DIR: &str = "target/container-context";

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
    let everything = context_files(&[]);
    let context = context_files(&ignore_patterns(&read(".dockerignore")));
    let mut sources = 0;
    for (_, args) in image.iter().filter(|(op, _)| op == "COPY") {
        if args[0].starts_with("--from=") {
            continue;
        }
        for src in &args[..args.len() - 1] {
            assert!(
                !copy_sources(&everything, src).is_empty(),
                "COPY {src}: no such file in the repo"
            );
            assert!(
                !copy_sources(&context, src).is_empty(),
                "COPY {src}: excluded from the build context by .dockerignore"
            );
            sources += 1;
        }
    }
    assert!(
        sources >= 6,
        "Cargo.toml, Cargo.lock, the benches, src/, config/ and the script"
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

#[test]
fn dockerignore_and_copy_patterns_match_as_docker_does() {
    // (.dockerignore, path, left out of the context)
    let cases = [
        ("*", "Cargo.toml", true),
        ("*", "src/main.rs", true), // through its directory
        ("*\n!src", "src/main.rs", false),
        ("*\n!src/", "src/a/b.rs", false),
        ("*\n!src", "srcs/main.rs", true),
        (
            "*\n!/scripts/container-build",
            "scripts/container-build",
            false,
        ),
        ("*\n!/scripts/container-build", "scripts/test", true),
        ("*\n!benches/*.rs", "benches/hot_path.rs", false),
        ("*\n!benches/*.rs", "benches/fixtures/a.rs", true),
        ("*\n!benches/*.rs", "benches/fixtures.txt", true),
        ("*\n!src\nsrc/*.bak", "src/a.bak", true), // the later line wins
        ("*\n!src\nsrc/*.bak", "src/a.rs", false),
        ("*\n!src\nsrc/*.bak\n!src/keep.bak", "src/keep.bak", false),
        ("target", "target/debug/otpgate", true),
        ("**/*.md", "README.md", true),
        ("**/*.md", "deploy/README.md", true),
        ("**/*.md", "README.mdx", false),
        ("docs/**", "docs/a/b.txt", true),
        ("docs/**", "docsx", false),
        ("a?c", "abc", true),
        ("a?c", "a/c", false),
        ("# *\n\n  Cargo.lock  ", "Cargo.toml", false),
        ("# *\n\n  Cargo.lock  ", "Cargo.lock", true),
        ("[a-c].txt", "b.txt", true),
        ("[a-c].txt", "d.txt", false),
        ("\\*.txt", "*.txt", true),
        ("\\*.txt", "a.txt", false),
    ];
    for (dockerignore, path, want) in cases {
        assert_eq!(
            ignored(&ignore_patterns(dockerignore), path),
            want,
            "{dockerignore:?} on {path}"
        );
    }

    // COPY sources: files by name, directories by their contents, filepath.Match globs.
    let context: Vec<String> = ["Cargo.toml", "benches/a.rs", "benches/x/b.rs", "src/lib.rs"]
        .map(str::to_owned)
        .to_vec();
    let cases: [(&str, &[(&str, &str)]); 6] = [
        ("Cargo.toml", &[("Cargo.toml", "Cargo.toml")]),
        ("benches/*.rs", &[("benches/a.rs", "a.rs")]),
        (
            "benches",
            &[("benches/a.rs", "a.rs"), ("benches/x/b.rs", "x/b.rs")],
        ),
        ("src/", &[("src/lib.rs", "lib.rs")]),
        ("b*/x", &[("benches/x/b.rs", "b.rs")]),
        ("benches/**.rs", &[("benches/a.rs", "a.rs")]),
    ];
    for (src, want) in cases {
        let want: Vec<(String, String)> = want
            .iter()
            .map(|&(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        assert_eq!(copy_sources(&context, src), want, "COPY {src}");
    }
    assert!(copy_sources(&context, "Cargo.lock").is_empty());
    assert!(copy_sources(&context, "benches/*.toml").is_empty());
}

/// What `docker build` does for the build stage, without Docker: the context is what
/// `.dockerignore` lets through, copied to a directory; the stage's instructions run in
/// order in a temporary root standing for the image's filesystem. `WORKDIR` and `ENV` set
/// the directory and environment, `COPY` copies from the context copy (a source not in
/// it fails the test), `RUN` runs its command with `sh -c` in the working directory, as
/// Docker's shell form does (Debian's `/bin/sh` is dash, here as in the image).
/// Absolute paths in a RUN command (a word starting with `/`, such as `--out /out`) are
/// rewritten to the same path under the temporary root. A RUN that installs Debian
/// packages (`apt-get install`, needing root and the network) is not run: the tools it
/// installs (packages named after their command, as `make` is) must be here instead.
/// Then the runtime stage's `COPY --from=build` sources must have been staged, and the
/// staged binary must run and accept the staged config under the image's ENV.
#[test]
fn dockerfile_build_stage_builds_from_the_build_context() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let context_dir = dir.path().join("context");
    let root = dir.path().join("root");
    let in_root = |path: &str| root.join(path.trim_start_matches('/'));

    let context = context_files(&ignore_patterns(&read(".dockerignore")));
    for file in &context {
        copy_file(&repo(file), &context_dir.join(file));
    }

    let image = dockerfile();
    let (build, runtime) = stage(&image, "build");
    let mut workdir = String::from("/");
    let mut env = toolchain_env();
    for (op, args) in build {
        match op.as_str() {
            "WORKDIR" => {
                workdir = image_path(&workdir, &args[0]);
                std::fs::create_dir_all(in_root(&workdir)).unwrap();
            }
            // A build argument with a default is in RUN's environment, as `docker build`
            // without `--build-arg` has it; one without a default is unset.
            "ARG" => {
                for setting in args {
                    if let Some((key, value)) = setting.split_once('=') {
                        env.push((key.to_owned(), value.to_owned()));
                    }
                }
            }
            "ENV" => {
                for setting in args {
                    let (key, value) = setting.split_once('=').unwrap();
                    env.push((key.to_owned(), value.to_owned()));
                }
            }
            "COPY" => {
                assert!(
                    !args[0].starts_with("--"),
                    "COPY {args:?}: flags not walked"
                );
                let (dest, srcs) = args.split_last().unwrap();
                assert!(
                    srcs.len() == 1 || dest.ends_with('/'),
                    "COPY {args:?}: several sources need a directory (`/`) destination"
                );
                let dest = image_path(&workdir, dest);
                let as_file = srcs.len() == 1
                    && !args.last().unwrap().ends_with('/')
                    && context.contains(&clean(&srcs[0]));
                for src in srcs {
                    let taken = copy_sources(&context, src);
                    assert!(
                        !taken.is_empty(),
                        "COPY {src}: not in the build context (left out by .dockerignore?)"
                    );
                    for (file, under) in taken {
                        let to = match as_file {
                            true => in_root(&dest),
                            false => in_root(&dest).join(under),
                        };
                        copy_file(&context_dir.join(&file), &to);
                    }
                }
            }
            "RUN" => {
                let command = args.join(" ");
                if let Some(at) = args.iter().position(|word| word == "install") {
                    if at > 0 && args[at - 1] == "apt-get" {
                        let packages: Vec<&String> = args[at + 1..]
                            .iter()
                            .take_while(|word| !["&&", "||", ";"].contains(&word.as_str()))
                            .filter(|word| !word.starts_with('-'))
                            .collect();
                        assert!(!packages.is_empty(), "RUN {command}: installs nothing?");
                        for package in packages {
                            let found = Command::new("sh")
                                .arg("-c")
                                .arg(format!("command -v {package}"))
                                .output()
                                .unwrap();
                            assert!(
                                found.status.success(),
                                "the build stage installs {package}; this machine lacks it"
                            );
                        }
                        continue;
                    }
                }
                let script: Vec<String> = args
                    .iter()
                    .map(|word| match word.starts_with('/') {
                        true => in_root(word).display().to_string(),
                        false => word.clone(),
                    })
                    .collect();
                let script = script.join(" ");
                let cwd = in_root(&workdir);
                eprintln!("RUN {command}");
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(&script)
                    .current_dir(&cwd)
                    .env_clear()
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .envs(BUILD_ENV)
                    .env("CARGO_TARGET_DIR", repo(BUILD_TARGET_DIR))
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "RUN {command}\n(run as `{script}` in {}) failed:\n{}",
                    cwd.display(),
                    text(&out)
                );
            }
            other => panic!("{other} in the build stage: this test does not walk it yet"),
        }
    }

    // The runtime stage copies what the build stage staged.
    let copies: Vec<(&str, &str)> = runtime
        .iter()
        .filter(|(op, args)| op == "COPY" && args[0] == "--from=build")
        .map(|(_, args)| (args[1].as_str(), args[2].as_str()))
        .collect();
    assert_eq!(copies.len(), 2, "the binary and config/");
    for (src, _) in &copies {
        assert!(in_root(src).exists(), "COPY --from=build {src}: not staged");
    }
    let staged = |path: &str| {
        copies
            .iter()
            .find_map(|&(src, dst)| match dst.strip_suffix('/') {
                Some(dir) => {
                    Some(in_root(src).join(path.strip_prefix(dir)?.trim_start_matches('/')))
                }
                None => (path == dst).then(|| in_root(src)),
            })
            .unwrap_or_else(|| panic!("{path}: not copied from the build stage"))
    };
    let entrypoint = exec_form(&runtime.iter().find(|(op, _)| op == "ENTRYPOINT").unwrap().1);
    let cmd = exec_form(&runtime.iter().find(|(op, _)| op == "CMD").unwrap().1);
    assert_eq!(cmd[..2], ["run", "--config"]);
    let bin = staged(&entrypoint[0]);
    let conf = staged(&cmd[2]);
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        read("config/otpgate.toml")
    );

    let version = Command::new(&bin).arg("--version").output().unwrap();
    assert!(version.status.success(), "{}", text(&version));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("otpgate {}", env!("CARGO_PKG_VERSION"))
    );
    let image_env: Vec<(String, String)> = runtime
        .iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, args)| args)
        .map(|setting| {
            let (key, value) = setting.split_once('=').unwrap();
            (key.to_owned(), value.to_owned())
        })
        .collect();
    assert_eq!(image_env.len(), 2, "server and admin listen addresses");
    let check = Command::new(&bin)
        .arg("check-config")
        .arg(&conf)
        .env_clear()
        .envs(image_env)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    eprintln!("build stage walked in {:.1?}", started.elapsed());
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
fn deploy_configs_pass_check_config_with_the_example_secrets() {
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
    for file in [
        "kubernetes/overlays/edge/configmap.yaml",
        "kubernetes/overlays/sidecar/sidecar.yaml",
        "azure-front-door.toml",
    ] {
        let source = read(&format!("deploy/{file}"));
        let toml = match file.ends_with(".yaml") {
            true => yaml_block(&source, "otpgate.toml"),
            false => source,
        };
        let file = file.rsplit('/').next().unwrap();
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
