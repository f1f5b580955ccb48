//! The dashboard in a real browser: Debian's chromium driven by Playwright for Python
//! (`tests/ui/test_dashboard.py`, launched with `executable_path`, nothing downloaded)
//! against a real API, worker, Redis and PostgreSQL. It signs in, finds jobs by text,
//! retries one, bulk-retries 100 dead jobs while more arrive, checks a read key sees no
//! action, CSRF, queues, schedules and the audit log, and takes the README's screenshots.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::post};
use courier_core::repo::keys::{self, Scope};
use courier_testkit::{TestApp, TestEnv, WorkerHandle};

/// How long the whole browser run may take.
const RUN_LIMIT: Duration = Duration::from_secs(600);

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `/ok` answers 200; `/flaky/...` 500 with a body until `POST /__ok`, then everything 200.
async fn flaky_target() -> String {
    let healed = Arc::new(AtomicBool::new(false));
    async fn heal(State(healed): State<Arc<AtomicBool>>) -> StatusCode {
        healed.store(true, Ordering::SeqCst);
        StatusCode::OK
    }
    async fn answer(
        State(healed): State<Arc<AtomicBool>>,
        uri: axum::http::Uri,
    ) -> (StatusCode, String) {
        if uri.path().starts_with("/flaky/") && !healed.load(Ordering::SeqCst) {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("flaky target: {} is failing for now", uri.path()),
            )
        } else {
            (StatusCode::OK, "ok".into())
        }
    }
    let app = Router::new()
        .route("/__ok", post(heal))
        .fallback(answer)
        .with_state(healed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_works_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no browser at {chromium}: apt-get install chromium (scripts/test.sh does)"
    );
    let python = workspace().join("target/pyenv/bin/python");
    assert!(
        python.exists(),
        "no {}: scripts/python-tools.sh makes it",
        python.display()
    );
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let admin = keys::create_key(&env.db, "operator", Scope::Admin, None)
        .await
        .unwrap()
        .secret;
    let read = keys::create_key(&env.db, "viewer", Scope::Read, None)
        .await
        .unwrap()
        .secret;
    let target = flaky_target().await;
    let screenshots = workspace().join("target/ui-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let run = tokio::process::Command::new(&python)
        .arg(workspace().join("crates/testkit/tests/ui/test_dashboard.py"))
        .env("COURIER_URL", app.url(""))
        .env("ADMIN_KEY", &admin)
        .env("READ_KEY", &read)
        .env("TARGET_URL", &target)
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("the browser test finished in time")
        .expect("run the browser test");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{said}");
    assert!(
        out.status.success(),
        "the browser test failed ({}); screenshots in {}:\n{said}",
        out.status,
        screenshots.display()
    );
    for shot in ["sign-in", "queues", "jobs", "job", "schedules", "audit"] {
        assert!(
            screenshots.join(format!("{shot}.png")).exists(),
            "no screenshot {shot}.png"
        );
    }
}
