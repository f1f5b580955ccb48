//! SSRF protection end to end: jobs aimed at internal addresses in every spelling, run by
//! a real worker with the allow-list empty, never reach a canary listening on loopback;
//! each is refused at submission (422) or ends dead with the refusal. And a target that
//! answers with an endless body: the worker process keeps bounded memory and stores a
//! capped excerpt, and ignores a proxy set in its environment.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body, extract::State, http::Uri, response::Response};
use chrono::Utc;
use courier_api::requests::{JobRequest, TargetRequest};
use courier_core::{
    domain::{NewJob, TargetUrl},
    outbound::classify,
    repo,
};
use courier_testkit::{ChildProcess, TestApp, TestEnv, WorkerHandle, wait_until};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const T: Duration = Duration::from_secs(60);
const REFUSED: &str = "refused by SSRF protection: ";

/// Counts every TCP connection made to 127.0.0.1:port (and [::1]:port when this machine
/// has IPv6 loopback), answering each with a 200 so that a leak would look like success.
struct Canary {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Canary {
    async fn start() -> Self {
        let v4 = TcpListener::bind("127.0.0.1:0").await.expect("bind canary");
        let port = v4.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let mut listeners = vec![v4];
        if let Ok(v6) = TcpListener::bind(("::1", port)).await {
            listeners.push(v6);
        }
        for listener in listeners {
            let hits = hits.clone();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    hits.fetch_add(1, Ordering::SeqCst);
                    // The request's head, then the answer.
                    let mut buf = vec![0; 8192];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\ncanary")
                        .await;
                }
            });
        }
        Self { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Every URL names the canary's port where it takes one; `{P}` stands for it.
fn ssrf_urls(port: u16) -> Vec<String> {
    [
        // Loopback, in many spellings (the URL parser turns them into 127.0.0.1).
        "http://127.0.0.1:{P}/",
        "http://127.1:{P}/",
        "http://127.0.1:{P}/",
        "http://127.127.127.127:{P}/",
        "http://2130706433:{P}/",
        "http://0x7f000001:{P}/",
        "http://0x7f.0x0.0x0.0x1:{P}/",
        "http://0x7f.1:{P}/",
        "http://0177.0.0.1:{P}/",
        "http://0177.1:{P}/",
        "http://017700000001:{P}/",
        "http://127.0.0.1.:{P}/",
        "http://[::1]:{P}/",
        "http://[0:0:0:0:0:0:0:1]:{P}/",
        "http://0.0.0.0:{P}/",
        "http://0:{P}/",
        "http://[::]:{P}/",
        // IPv6 forms that carry 127.0.0.1.
        "http://[::ffff:127.0.0.1]:{P}/",
        "http://[::ffff:7f00:1]:{P}/",
        "http://[::127.0.0.1]:{P}/",
        "http://[2002:7f00:1::]:{P}/",
        "http://[64:ff9b::127.0.0.1]:{P}/",
        "http://[64:ff9b:1::7f00:1]:{P}/",
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{P}/",
        // localhost names.
        "http://localhost:{P}/",
        "http://LOCALHOST:{P}/",
        "http://localhost.:{P}/",
        "http://api.localhost:{P}/",
        // Userinfo and fragment tricks: the host is still 127.0.0.1.
        "http://evil.com@127.0.0.1:{P}/",
        "http://user:pass@127.0.0.1:{P}/",
        "http://evil.com:80@127.0.0.1:{P}/",
        "http://127.0.0.1:{P}#@evil.com/",
        "http://127.0.0.1:{P}?@evil.com/",
        "http://127.0.0.1:{P}\\@evil.com/",
        // Cloud metadata.
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://2852039166/latest/meta-data/",
        "http://0251.0376.0251.0376/latest/meta-data/",
        // Private, link-local, CGNAT, unique-local, multicast, broadcast, documentation,
        // benchmarking, reserved.
        "http://10.0.0.1:{P}/",
        "http://172.16.0.1:{P}/",
        "http://192.168.0.1:{P}/",
        "http://[::ffff:10.0.0.1]:{P}/",
        "http://169.254.0.1:{P}/",
        "http://100.64.0.1:{P}/",
        "http://[fc00::1]:{P}/",
        "http://[fe80::1]:{P}/",
        "http://224.0.0.1:{P}/",
        "http://255.255.255.255:{P}/",
        "http://192.0.2.1:{P}/",
        "http://[2001:db8::1]:{P}/",
        "http://198.18.0.1:{P}/",
        "http://240.0.0.1:{P}/",
    ]
    .iter()
    .map(|u| u.replace("{P}", &port.to_string()))
    .collect()
}

/// This machine's host name when it resolves only to addresses that are not public
/// (127.0.1.1, a container's private address): a DNS name the resolver must refuse.
async fn internal_host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_owned();
    let addrs: Vec<IpAddr> = tokio::net::lookup_host((name.as_str(), 0))
        .await
        .ok()?
        .map(|a| a.ip())
        .collect();
    (!addrs.is_empty() && addrs.iter().all(|ip| classify(*ip).is_some())).then_some(name)
}

fn job_request(url: &str) -> Value {
    json!({"target": {"url": url}, "max_attempts": 3, "timeout_ms": 3000,
           "backoff": {"initial_ms": 0, "jitter": false}})
}

/// Inserts jobs straight into PostgreSQL, as an API without the check (or an older one)
/// would: the worker must refuse them on its own. The worker's dispatcher queues them.
async fn insert_directly(env: &TestEnv, urls: &[String]) -> Vec<String> {
    let now = Utc::now();
    let jobs: Vec<NewJob> = urls
        .iter()
        .map(|url| {
            let req = JobRequest {
                target: TargetRequest {
                    url: "http://example.com/".into(),
                    ..Default::default()
                },
                max_attempts: Some(3),
                timeout_ms: Some(3000),
                ..Default::default()
            };
            let mut job = req.parse(&env.settings.jobs, now).unwrap();
            // As the worker reads a stored URL: a spelling the API refuses as no URI at
            // all (`\\` for `/`) still reaches the worker's own check.
            job.spec.target.url = TargetUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            job
        })
        .collect();
    let specs: Vec<String> = jobs.iter().map(|j| j.spec.to_json()).collect();
    repo::insert_jobs(&env.db, &jobs, &specs, &[], repo::OutboxId::new(), now)
        .await
        .expect("insert jobs");
    jobs.iter().map(|j| j.id.to_string()).collect()
}

/// Submits through the API: `Ok(id)` when accepted, `Err(message)` for a 422 on
/// `target.url` (problem+json).
async fn submit(app: &TestApp, url: &str) -> Result<String, String> {
    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .json(&job_request(url))
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await.expect("json answer");
    match status {
        201 => Ok(body["id"].as_str().expect("id").to_owned()),
        422 => {
            assert_eq!(content_type, "application/problem+json", "{url}");
            let errors = body["errors"].as_array().expect("errors");
            assert_eq!(errors.len(), 1, "{url}: {body}");
            assert_eq!(errors[0]["field"], "target.url", "{url}: {body}");
            Err(errors[0]["message"].as_str().unwrap().to_owned())
        }
        other => panic!("{url}: unexpected {other}: {body}"),
    }
}

/// Waits for every job to end, then gives each one's state and last error.
async fn outcomes(env: &TestEnv, ids: &[String]) -> HashMap<String, (String, Option<String>, i32)> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|i| i.parse().unwrap()).collect();
    wait_until("every job to end", T, || async {
        let rows: Vec<(uuid::Uuid, String, Option<String>, i32)> = sqlx::query_as(
            "SELECT id, state::text, last_error, attempts FROM jobs WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&env.db)
        .await
        // A busy machine may keep the pool waiting: look again (wait_until bounds it).
        .ok()?;
        let ended = rows.len() == ids.len()
            && rows
                .iter()
                .all(|(_, state, ..)| matches!(state.as_str(), "dead" | "succeeded"));
        ended.then(|| {
            rows.into_iter()
                .map(|(id, state, error, attempts)| (id.to_string(), (state, error, attempts)))
                .collect()
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_targets_in_every_spelling_never_reach_the_canary() {
    let mut env = TestEnv::new().await;
    env.settings.outbound.allow = vec![];
    let canary = Canary::start().await;
    // The canary counts: a direct connection is seen.
    reqwest::get(format!("http://127.0.0.1:{}/", canary.port))
        .await
        .expect("the canary answers");
    assert_eq!(canary.hits(), 1);

    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let mut urls = ssrf_urls(canary.port);
    if let Some(name) = internal_host_name().await {
        urls.push(format!("http://{name}:{}/", canary.port));
    }
    assert!(urls.len() >= 40, "{} URLs", urls.len());

    // Through the API: refused at once, or accepted (a name) and refused by the worker.
    let mut accepted = HashMap::new();
    let mut refused_at_submission = 0;
    for url in &urls {
        match submit(&app, url).await {
            Ok(id) => {
                accepted.insert(id, url.clone());
            }
            Err(message) => {
                // A spelling that is no URI at all (`\\` for `/`) is refused for that,
                // before SSRF protection reads it (the worker's check is below).
                assert!(
                    message.starts_with(REFUSED) || message.contains("RFC 3986"),
                    "{url}: {message}"
                );
                refused_at_submission += 1;
            }
        }
    }
    // Straight into the queue: the worker refuses every one by itself.
    let direct_ids = insert_directly(&env, &urls).await;
    let mut by_id: HashMap<String, String> = direct_ids.into_iter().zip(urls.clone()).collect();
    by_id.extend(accepted.clone());
    let ids: Vec<String> = by_id.keys().cloned().collect();
    let ended = outcomes(&env, &ids).await;

    for (id, url) in &by_id {
        let (state, error, attempts) = &ended[id];
        let error = error.as_deref().unwrap_or_default();
        assert_eq!(state, "dead", "{url}: {error}");
        assert!(error.starts_with(REFUSED), "{url}: {error}");
        assert!(
            error.ends_with("allow it with COURIER__OUTBOUND__ALLOW"),
            "{url}: {error}"
        );
        assert_eq!(*attempts, 1, "{url}: a refusal is not retried");
    }
    assert_eq!(canary.hits(), 1, "no job reached the canary");
    eprintln!(
        "{} URLs: {refused_at_submission} refused with 422 at submission, {} accepted and \
         refused by the worker; {} inserted past the API, all refused by the worker",
        urls.len(),
        accepted.len(),
        urls.len()
    );
    // The names the API cannot judge were accepted and refused on resolution.
    assert!(accepted.values().all(|u| !u.contains("127.0.0.1:")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirect_to_an_internal_address_is_refused_at_the_hop() {
    let mut env = TestEnv::new().await;
    // Only the redirector is allowed; the canary (127.0.0.1) is not.
    env.settings.outbound.allow = vec!["127.0.0.2/32".into()];
    let canary = Canary::start().await;
    let p = canary.port;
    let listener = TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let redirector: SocketAddr = listener.local_addr().unwrap();
    let hops: HashMap<&str, String> = [
        ("/literal", format!("http://127.0.0.1:{p}/")),
        ("/decimal", format!("http://2130706433:{p}/")),
        ("/mapped", format!("http://[::ffff:127.0.0.1]:{p}/")),
        ("/loopback6", format!("http://[::1]:{p}/")),
        ("/localhost", format!("http://localhost:{p}/")),
        (
            "/metadata",
            "http://169.254.169.254/latest/meta-data/".into(),
        ),
        ("/userinfo", format!("http://evil.com@127.0.0.1:{p}/")),
        // Two hops: the first stays on the allowed redirector.
        ("/chain", "/literal".into()),
    ]
    .into_iter()
    .collect();
    let hits = Arc::new(AtomicUsize::new(0));
    let app_hops = Arc::new(hops.clone());
    let router = Router::new()
        .fallback(
            |State((hops, hits)): State<RedirectorState>, uri: Uri| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let response = match hops.get(uri.path()) {
                    Some(location) => Response::builder().status(302).header("location", location),
                    None => Response::builder().status(200),
                };
                response.body(Body::empty()).unwrap()
            },
        )
        .with_state((app_hops, hits.clone()));
    tokio::spawn(async move { axum::serve(listener, router).await.ok() });

    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let submit = |path: &str| {
        json!({"target": {"url": format!("http://{redirector}{path}")}, "follow_redirects": true,
               "max_attempts": 3, "backoff": {"initial_ms": 0, "jitter": false}})
    };
    // The allowed redirector itself is reachable: the allow-list works.
    let control = app.submit(submit("/fine")).await;
    let mut ids = HashMap::new();
    for path in hops.keys() {
        ids.insert(app.submit(submit(path)).await, *path);
    }
    app.wait_for_state(&control, "succeeded", T).await;
    let all: Vec<String> = ids.keys().cloned().collect();
    let ended = outcomes(&env, &all).await;
    for (id, path) in &ids {
        let (state, error, attempts) = &ended[id];
        let error = error.as_deref().unwrap_or_default();
        assert_eq!(state, "dead", "{path}: {error}");
        assert!(error.contains(REFUSED), "{path}: {error}");
        assert_eq!(*attempts, 1, "{path}");
    }
    assert_eq!(canary.hits(), 0, "no redirect reached the canary");
    // Every job reached the redirector (the chain twice): the refusal was at the hop.
    assert_eq!(hits.load(Ordering::SeqCst), 1 + hops.len() + 1);
}

/// Where each path of the redirector sends its caller, and how many calls it had.
type RedirectorState = (Arc<HashMap<&'static str, String>>, Arc<AtomicUsize>);

/// An endless body: 64 KiB chunks for ever, as text or as invalid UTF-8.
async fn endless_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().fallback(|uri: Uri| async move {
        let byte = if uri.path() == "/binary" { 0xff } else { b'x' };
        let chunk = bytes::Bytes::from(vec![byte; 64 * 1024]);
        let stream = futures_util::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
        let mut response = Response::builder().status(200);
        if uri.path() == "/claims-10gb" {
            response = response.header("content-length", "10000000000");
        }
        response.body(Body::from_stream(stream)).unwrap()
    });
    tokio::spawn(async move { axum::serve(listener, router).await.ok() });
    addr
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endless_response_body_keeps_worker_memory_bounded_and_the_excerpt_capped() {
    let env = TestEnv::new().await;
    let target = endless_target().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let worker = ChildProcess::start_worker(&env.process_env_with(&[
        ("COURIER__OUTBOUND__MAX_RESPONSE_BYTES", "1048576"),
        ("COURIER__WORKER__CONCURRENCY", "32"),
    ]))
    .await;
    let paths = ["/text", "/binary", "/claims-10gb"];
    let ids = app
        .submit_many(30, |i| {
            json!({"target": {"url": format!("http://{target}{}", paths[i % 3])},
                   "timeout_ms": 60_000, "max_attempts": 1})
        })
        .await;
    // Were the body read to its end, no call would ever finish.
    wait_until("30 endless calls to succeed", T, || async {
        (env.count_jobs(Some("succeeded")).await == 30).then_some(())
    })
    .await;
    let peak = peak_rss_kib(worker.pid());
    eprintln!("courier-worker peak RSS (VmHWM): {peak} KiB after 30 endless bodies");
    assert!(peak < 200 * 1024, "worker peak RSS {peak} KiB");

    let excerpts: Vec<(Option<i32>,)> = sqlx::query_as(
        "SELECT octet_length(response_excerpt) FROM job_executions WHERE job_id = ANY($1)",
    )
    .bind(
        ids.iter()
            .map(|i| i.parse::<uuid::Uuid>().unwrap())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(excerpts.len(), 30);
    for (len,) in excerpts {
        let len = len.expect("an excerpt is stored");
        assert!((4096 - 3..=4096).contains(&len), "excerpt of {len} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_allow_list_entry_stops_the_api_and_the_worker_at_start_up() {
    let mut env = TestEnv::new().await;
    env.settings.outbound.allow = vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()];
    let worker = courier_worker::Worker::build(env.settings.clone()).await;
    let api = courier_api::Application::build(env.settings.clone()).await;
    for err in [worker.err(), api.err()] {
        let err = err.expect("start-up fails").to_string();
        assert!(err.starts_with("outbound.allow: \"10.0.0.0/33\""), "{err}");
    }
}
