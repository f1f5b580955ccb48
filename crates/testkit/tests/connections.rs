//! Redis and PostgreSQL connections as production runs them (issue 5): PostgreSQL over TLS
//! (`sslmode=require`), Redis over TLS (`rediss://`, the certificate checked against the
//! operator's CA), Redis as an ACL user with a password and only the rights the
//! README lists, with the default user switched off.

use std::time::Duration;

use courier_testkit::{ChildProcess, PgCluster, RedisServer, Target, TestEnv, wait_until};
use redis::Value as RedisValue;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// The ACL of README's Security section, for the test's key prefix.
const ACL: &[&str] = &[
    "ACL",
    "SETUSER",
    "courier",
    "on",
    ">courier-secret-pw",
    "resetkeys",
    "~ct_*",
    "resetchannels",
    "&ct_*",
    "-@all",
    "+@read",
    "+@write",
    "+@scripting",
    "+@pubsub",
    "+@connection",
    "+@transaction",
    "-@dangerous",
    "+time",
    "+info",
    "+config|get",
];

fn text(value: &RedisValue) -> String {
    match value {
        RedisValue::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        RedisValue::SimpleString(s) => s.clone(),
        RedisValue::Array(items) => items.iter().map(text).collect::<Vec<_>>().join("\n"),
        RedisValue::Map(items) => items
            .iter()
            .map(|(k, v)| format!("{}={}", text(k), text(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_over_postgresql_tls_and_a_least_privilege_redis_user() {
    let redis = RedisServer::start(false, &[]).await;
    redis.command(ACL).await;
    redis
        .command(&[
            "ACL",
            "SETUSER",
            "admin",
            "on",
            ">admin-pw",
            "~*",
            "&*",
            "+@all",
        ])
        .await;
    redis.command(&["ACL", "SETUSER", "default", "off"]).await;
    let redis_url = format!("redis://courier:courier-secret-pw@127.0.0.1:{}", redis.port);
    let admin =
        redis::Client::open(format!("redis://admin:admin-pw@127.0.0.1:{}", redis.port)).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();

    let mut env = TestEnv::on("postgres://postgres@127.0.0.1:5432/postgres", &redis_url).await;
    env.settings.database.url = format!("{}?sslmode=require", env.database_url);
    let target = Target::start().await;
    let api = ChildProcess::spawn(
        "courier-api",
        &["serve"],
        &env.process_env_with(&[("COURIER__SERVER__PORT", "0")]),
    );
    let port = api.api_port().await;
    let worker = ChildProcess::start_worker(&env.process_env()).await;
    let client = env.client();
    let base = format!("http://127.0.0.1:{port}");
    let mut ids = Vec::new();
    for i in 0..20 {
        let created: Value = client
            .post(format!("{base}/v1/jobs"))
            .json(&json!({"target": {"url": target.url(&format!("/tls/{i}"))}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    wait_until("20 jobs to succeed", T, || async {
        (env.count_jobs(Some("succeeded")).await == 20).then_some(())
    })
    .await;
    assert_eq!(target.received().len(), 20);

    // Every connection to the test's database is TLS (the API's and the worker's must be).
    let (ssl, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert!(ssl > 0, "no TLS connection from Courier");
    assert_eq!(plain, 0, "a Courier connection without TLS");

    // Redis: everything ran as `courier`, and nothing it did was refused.
    let clients: RedisValue = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    let clients = text(&clients);
    assert!(clients.contains("user=courier"), "{clients}");
    assert!(!clients.contains("user=default"), "{clients}");
    let denied: RedisValue = redis::cmd("ACL")
        .arg("LOG")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(text(&denied), "", "the ACL refused Courier something");
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_refuses_a_postgresql_without_tls() {
    // A cluster of the test's own has no certificate, so TLS cannot be had.
    let pg = PgCluster::start().await;
    let output = tokio::process::Command::new(courier_testkit::binary("courier-api"))
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("{}?sslmode=require", pg.url("postgres")),
        )
        .env("COURIER__DATABASE__CONNECT_TIMEOUT_MS", "3000")
        .env(
            "COURIER__SECRETS__ENCRYPTION_KEY",
            courier_testkit::TEST_ENCRYPTION_KEY,
        )
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr).to_lowercase()
        + &String::from_utf8_lossy(&output.stdout).to_lowercase();
    assert!(said.contains("tls") || said.contains("ssl"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_over_redis_tls_verified_against_the_operators_ca() {
    let certs =
        std::env::temp_dir().join(format!("courier-certs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&certs).unwrap();
    let (ca, cert, key) = courier_testkit::make_certificates(&certs);
    let tls_port = courier_testkit::free_port().to_string();
    // The plain port stays for the test's own look at the server; Courier gets only TLS.
    let redis = RedisServer::start(
        false,
        &[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ],
    )
    .await;
    let redis_url = format!("rediss://127.0.0.1:{tls_port}");
    let env = TestEnv::on("postgres://postgres@127.0.0.1:5432/postgres", &redis_url).await;

    // Without the CA the server's certificate is not trusted: no connection, and /readyz
    // says why, rather than falling back to plain text.
    let untrusted = ChildProcess::spawn(
        "courier-api",
        &["serve"],
        &env.process_env_with(&[("COURIER__SERVER__PORT", "0")]),
    );
    let port = untrusted.api_port().await;
    let ready = env
        .client()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let said = ready.text().await.unwrap().to_lowercase();
    assert!(
        said.contains("certificate") || said.contains("tls"),
        "{said}"
    );
    drop(untrusted);

    // With the operator's CA (SSL_CERT_FILE, read by rustls-native-certs), jobs run.
    let trusted = env.process_env_with(&[
        ("COURIER__SERVER__PORT", "0"),
        ("SSL_CERT_FILE", ca.as_str()),
    ]);
    let api = ChildProcess::spawn("courier-api", &["serve"], &trusted);
    let port = api.api_port().await;
    let _worker = ChildProcess::start_worker(&trusted).await;
    let target = Target::start().await;
    let client = env.client();
    for i in 0..10 {
        let created = client
            .post(format!("http://127.0.0.1:{port}/v1/jobs"))
            .json(&json!({"target": {"url": target.url(&format!("/rediss/{i}"))}}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    wait_until("10 jobs to succeed over TLS", T, || async {
        (env.count_jobs(Some("succeeded")).await == 10).then_some(())
    })
    .await;
    assert_eq!(target.received().len(), 10);
    // Courier's keys are in this server, reached only through its TLS port.
    let keys: RedisValue = redis
        .command(&["KEYS", &format!("{}:*", env.settings.redis.prefix)])
        .await;
    assert!(!text(&keys).is_empty(), "no Courier keys in the TLS Redis");
    let _ = std::fs::remove_dir_all(&certs);
}
