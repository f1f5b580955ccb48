//! Checking signed requests with the Standard Webhooks reference library
//! (`standardwebhooks` from PyPI, in target/pyenv, installed by scripts/python-tools.sh).

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use crate::Received;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtual environment's python with `standardwebhooks`, set up on first use. A
/// missing library fails the test: it is part of the test suite's tools.
pub fn python() -> PathBuf {
    let python = workspace().join("target/pyenv/bin/python");
    let has_library = || {
        Command::new(&python)
            .args(["-c", "import standardwebhooks"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_library() {
        let status = Command::new(workspace().join("scripts/python-tools.sh"))
            .status()
            .expect("run scripts/python-tools.sh");
        assert!(status.success(), "scripts/python-tools.sh failed");
    }
    assert!(
        has_library(),
        "standardwebhooks is not installed in target/pyenv"
    );
    python
}

/// One verification: `received` checked with `secret`, its body optionally replaced.
pub fn case(received: &Received, secret: &str, body: Option<&str>) -> Value {
    json!({
        "secret": secret,
        "id": received.header("webhook-id").expect("webhook-id"),
        "timestamp": received.header("webhook-timestamp").expect("webhook-timestamp"),
        "signature": received.header("webhook-signature").expect("webhook-signature"),
        "body": body.map_or_else(|| String::from_utf8(received.body.to_vec()).unwrap(), str::to_owned),
    })
}

/// What the reference library says of each case.
pub fn verify(cases: &[Value]) -> Vec<bool> {
    let mut child = Command::new(python())
        .arg(workspace().join("crates/testkit/tests/support/verify_webhooks.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(cases).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().expect("python output");
    assert!(output.status.success(), "verify_webhooks.py failed");
    serde_json::from_slice(&output.stdout).expect("a JSON list of booleans")
}
