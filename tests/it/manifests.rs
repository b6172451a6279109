//! The Kubernetes manifests (`deploy/kubernetes`), as a policy review checks them:
//! `scripts/check-manifests` renders each overlay with `kubectl kustomize`, validates every
//! object against the Kubernetes schemas offline (`kubernetes-validate --strict`) and checks
//! the network policies, the disruption budgets, the autoscaler, the monitoring objects,
//! and that no secret reaches a command line. It runs with the Python of `target/venv`
//! (`$OTPGATE_VENV`), which `scripts/test` makes from `scripts/requirements-test.txt`.

use std::path::PathBuf;
use std::process::Command;

fn venv_python() -> PathBuf {
    let venv = std::env::var("OTPGATE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no {}: run scripts/test, or python3 -m venv target/venv && \
         target/venv/bin/pip install -r scripts/requirements-test.txt",
        python.display()
    );
    python
}

#[test]
fn the_kubernetes_manifests_validate_and_pass_the_policy_checks() {
    let out = Command::new(venv_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/check-manifests"
        ))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // Both overlays rendered, every object counted.
    assert!(
        text.contains("checked: {'edge': 13, 'sidecar': 7} objects rendered, 0 problems"),
        "{text}"
    );
}
