//! One test's isolated world: a fresh database (migrated) and a unique Redis prefix.

use courier_core::{Settings, db, repo::keys, settings::LogFormat};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// The encryption key of every test (32 bytes of 0x2a, base64): tests need a key, not a secret one.
pub const TEST_ENCRYPTION_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

/// A test's own database and Redis prefix, and settings pointing at them.
pub struct TestEnv {
    pub settings: Settings,
    pub db: PgPool,
    pub database_url: String,
    /// An `admin` API key of this database.
    pub api_key: String,
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis the tests use unless a test starts its own.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

impl TestEnv {
    /// Creates database `courier_test_<uuid>`, applies the migrations and picks the
    /// Redis prefix `ct_<uuid>`.
    pub async fn new() -> Self {
        Self::on(&admin_url(), &redis_url()).await
    }

    /// Like [`Self::new`], on the PostgreSQL reached through `admin` (a URL ending in a
    /// database to connect to for `CREATE DATABASE`) and the Redis at `redis`.
    pub async fn on(admin: &str, redis: &str) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let name = format!("courier_test_{id}");
        let admin = admin.to_owned();
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("connect to TEST_DATABASE_URL");
        // The name is built from a UUID above, never from input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let database_url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("TEST_DATABASE_URL must end in /<database>"),
        };
        let mut settings = Settings::defaults();
        settings.database.url = database_url.clone();
        settings.database.max_connections = 8;
        settings.redis.url = redis.to_owned();
        settings.redis.prefix = format!("ct_{id}");
        settings.redis.pool_size = 8;
        settings.server.host = "127.0.0.1".into();
        settings.server.port = 0;
        settings.server.shutdown_grace_ms = 5000;
        settings.worker.idle_poll_ms = 500;
        // Tests run side by side: each worker's metrics on a port of its own.
        settings.worker.metrics_host = "127.0.0.1".into();
        settings.worker.metrics_port = 0;
        settings.telemetry.format = LogFormat::Pretty;
        settings.telemetry.filter = "warn,courier=info".into();
        // Tests call targets on 127.0.0.1, which SSRF protection refuses unless allowed.
        settings.outbound.allow = vec!["127.0.0.0/8".into(), "::1/128".into()];
        settings.secrets.encryption_key = TEST_ENCRYPTION_KEY.into();
        let pool = db::connect_lazy(&settings.database).expect("database url");
        db::migrate(&pool).await.expect("migrate test database");
        let api_key = keys::create_key(&pool, "test", keys::Scope::Admin, None)
            .await
            .expect("create the test's API key")
            .secret;
        Self {
            settings,
            db: pool,
            database_url,
            api_key,
        }
    }

    /// An HTTP client that sends this test's admin API key.
    pub fn client(&self) -> reqwest::Client {
        client_with_key(&self.api_key)
    }

    /// Environment variables that give a child process these settings.
    pub fn process_env(&self) -> Vec<(String, String)> {
        let mut vars = self.base_env();
        if self.settings.redis.cluster {
            vars.push(("COURIER__REDIS__CLUSTER".into(), "true".into()));
            vars.push((
                "COURIER__REDIS__NODES".into(),
                self.settings.redis.nodes.join(","),
            ));
        }
        vars
    }

    fn base_env(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.settings.database.url.clone()),
            ("REDIS_URL".into(), self.settings.redis.url.clone()),
            (
                "COURIER__REDIS__PREFIX".into(),
                self.settings.redis.prefix.clone(),
            ),
            ("COURIER__SERVER__HOST".into(), "127.0.0.1".into()),
            ("COURIER__WORKER__METRICS_HOST".into(), "127.0.0.1".into()),
            ("COURIER__WORKER__METRICS_PORT".into(), "0".into()),
            ("COURIER__TELEMETRY__FORMAT".into(), "json".into()),
            (
                "COURIER__WORKER__IDLE_POLL_MS".into(),
                self.settings.worker.idle_poll_ms.to_string(),
            ),
            (
                "COURIER__OUTBOUND__ALLOW".into(),
                self.settings.outbound.allow.join(","),
            ),
            (
                "COURIER__SECRETS__ENCRYPTION_KEY".into(),
                self.settings.secrets.encryption_key.clone(),
            ),
        ]
    }

    /// [`Self::process_env`] plus `extra`.
    pub fn process_env_with(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars = self.process_env();
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        vars
    }

    /// Jobs in the database, by state name.
    pub async fn count_jobs(&self, state: Option<&str>) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE $1::text IS NULL OR state::text = $1")
            .bind(state)
            .fetch_one(&self.db)
            .await
            .expect("count jobs")
    }
}

/// An HTTP client that sends `Authorization: Bearer <key>` on every request.
pub fn client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
        .expect("API keys are header-safe");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("build an HTTP client")
}
