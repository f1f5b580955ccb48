//! Signed requests (Standard Webhooks) end to end: a real worker signs its calls with the
//! configured secrets, and the reference library `standardwebhooks` (from PyPI, in
//! target/pyenv, installed by scripts/python-tools.sh) verifies what the target received.

use std::time::Duration;

use courier_testkit::{
    Reply, Target, TestApp, TestEnv, WorkerHandle,
    webhooks::{case, verify},
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const S1: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const S2: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3ItdGhlLXJvdGF0aW9uLXRlc3Q=";
const NEVER_USED: &str = "whsec_bmV2ZXItY29uZmlndXJlZC1mb3ItYW55LXF1ZXVlIQ==";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signatures_verify_with_the_reference_library_for_one_and_two_secrets() {
    let mut env = TestEnv::new().await;
    env.settings.signing.secrets = vec![S1.into()];
    env.settings.signing.queues = [
        ("rotating".to_string(), vec![S1.to_string(), S2.to_string()]),
        ("solo".to_string(), vec![S2.to_string()]),
    ]
    .into_iter()
    .collect();
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;

    // One secret, two attempts; a header of the job's own that claims to be a signature
    // is replaced.
    target.script("/one", vec![Reply::status(500), Reply::status(200)]);
    let one = app
        .submit(
            json!({"target": {"url": target.url("/one"), "json": {"event": "paid", "n": 1},
            "headers": {"Webhook-Signature": "v1,forged"}},
            "max_attempts": 2, "backoff": {"initial_ms": 0, "jitter": false}}),
        )
        .await;
    let two = app
        .submit(json!({"queue": "rotating", "target": {"url": target.url("/two"), "body": "plain text ✓"}}))
        .await;
    let solo = app
        .submit(json!({"queue": "solo", "target": {"url": target.url("/solo"), "body": "{}"}}))
        .await;
    for id in [&one, &two, &solo] {
        app.wait_for_state(id, "succeeded", T).await;
    }

    let one_calls = target.received_on("/one");
    assert_eq!(one_calls.len(), 2);
    for call in &one_calls {
        assert_eq!(
            call.header("webhook-id").as_deref(),
            Some(one.as_str()),
            "the job id, every attempt"
        );
        assert_eq!(call.headers.get_all("webhook-signature").iter().count(), 1);
        assert!(!call.header("webhook-signature").unwrap().contains("forged"));
        assert_eq!(
            call.header("webhook-signature").unwrap().split(' ').count(),
            1
        );
        let timestamp: i64 = call.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!((timestamp - chrono::Utc::now().timestamp()).abs() < 300);
    }
    let two_call = &target.received_on("/two")[0];
    assert_eq!(
        two_call
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    let solo_call = &target.received_on("/solo")[0];

    let checks = [
        (
            case(&one_calls[0], S1, None),
            true,
            "one secret, first attempt",
        ),
        (
            case(&one_calls[1], S1, None),
            true,
            "one secret, second attempt",
        ),
        (
            case(&one_calls[0], S2, None),
            false,
            "one secret, verified with another",
        ),
        (case(two_call, S1, None), true, "two secrets, the first"),
        (case(two_call, S2, None), true, "two secrets, the second"),
        (
            case(two_call, NEVER_USED, None),
            false,
            "two secrets, neither",
        ),
        (
            case(two_call, S1, Some("plain text ✗")),
            false,
            "two secrets, tampered body",
        ),
        (
            case(&one_calls[0], S1, Some(r#"{"event":"paid","n":2}"#)),
            false,
            "one secret, tampered body",
        ),
        (case(solo_call, S2, None), true, "a queue's own secret"),
        (
            case(solo_call, S1, None),
            false,
            "a queue's own secret replaces the global one",
        ),
    ];
    let cases: Vec<Value> = checks.iter().map(|(c, ..)| c.clone()).collect();
    let verdicts = verify(&cases);
    assert_eq!(verdicts.len(), checks.len());
    for ((_, expected, what), verdict) in checks.iter().zip(verdicts) {
        assert_eq!(verdict, *expected, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_secret_no_signature_headers_are_sent() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/plain"), "body": "x"}}))
        .await;
    app.wait_for_state(&id, "succeeded", T).await;
    let call = &target.received_on("/plain")[0];
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert!(call.header(name).is_none(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_secret_stops_the_worker_at_start_up() {
    let mut env = TestEnv::new().await;
    env.settings.signing.queues = [("pay".to_string(), vec!["whsec_tooshort".to_string()])]
        .into_iter()
        .collect();
    let err = match courier_worker::Worker::build(env.settings.clone()).await {
        Ok(_) => panic!("a worker built with an invalid secret"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("signing.queues.pay[0]: "), "{err}");
    assert!(!err.contains("tooshort"), "the secret is not echoed: {err}");
}
