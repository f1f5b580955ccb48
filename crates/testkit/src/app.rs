//! The API and workers in-process, bound to port 0, with a client for the API.

use std::time::Duration;

use courier_api::Application;
use courier_core::{Settings, repo::keys};
use courier_worker::Worker;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::wait::wait_until;

/// A running API and a client for it.
pub struct TestApp {
    pub base: String,
    /// Sends [`Self::api_key`] on every request.
    pub client: Client,
    /// An `admin` key made for this app.
    pub api_key: String,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Builds and starts the API with `settings`.
    pub async fn spawn(settings: Settings) -> Self {
        Self::spawn_with_clock(settings, courier_core::clock::system()).await
    }

    /// Builds and starts the API with `settings`, its scheduler on `clock`.
    pub async fn spawn_with_clock(
        settings: Settings,
        clock: courier_core::clock::SharedClock,
    ) -> Self {
        // Logs are shown by the test runner only when a test fails.
        courier_core::telemetry::init(&settings.telemetry);
        let app = Application::build_with_clock(settings, clock)
            .await
            .expect("build the api");
        let api_key = keys::create_key(&app.state().db, "test-app", keys::Scope::Admin, None)
            .await
            .expect("create an API key")
            .secret;
        let base = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            base,
            client: crate::env::client_with_key(&api_key),
            api_key,
            stop,
            done,
        }
    }

    /// Shuts the API down (its scheduler and upkeep loops too) and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` as JSON to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("post");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sends `method` to `path` with `body` as JSON (none when `Null`).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if !body.is_null() {
            request = request.json(body);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("get");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits a job and returns its id; panics unless the API answers 201.
    pub async fn submit(&self, job: Value) -> String {
        let (status, body) = self.post("/v1/jobs", &job).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Submits `n` jobs (`job(i)` for each) through `POST /v1/jobs/batch`, 1000 a
    /// request; panics unless each batch is accepted. Returns the ids in order.
    pub async fn submit_many(&self, n: usize, job: impl Fn(usize) -> Value) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for start in (0..n).step_by(1000) {
            let jobs: Vec<Value> = (start..n.min(start + 1000)).map(&job).collect();
            let (status, body) = self
                .post("/v1/jobs/batch", &serde_json::json!({"jobs": jobs}))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            ids.extend(
                body["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|id| id.as_str().expect("id").to_owned()),
            );
        }
        ids
    }

    pub async fn job(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn executions(&self, id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/v1/jobs/{id}/executions")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["executions"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the job is in `state`, and returns it.
    pub async fn wait_for_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        wait_until(&format!("job {id} to be {state}"), timeout, || async {
            let job = self.job(id).await;
            (job["state"] == state).then_some(job)
        })
        .await
    }

    /// Waits until the job has `n` execution records.
    pub async fn wait_for_executions(&self, id: &str, n: usize, timeout: Duration) -> Vec<Value> {
        wait_until(
            &format!("job {id} to have {n} executions"),
            timeout,
            || async {
                let executions = self.executions(id).await;
                (executions.len() >= n).then_some(executions)
            },
        )
        .await
    }
}

/// A worker running in this process; stops gracefully when dropped or `stop`ped.
pub struct WorkerHandle {
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    pub name: String,
}

impl WorkerHandle {
    pub async fn spawn(settings: Settings) -> Self {
        let worker = Worker::build(settings).await.expect("build a worker");
        let name = worker.name().to_owned();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            worker
                .run_until_stopped(async {
                    let _ = stopped.await;
                })
                .await
                .expect("worker run");
        });
        Self {
            stop: Some(stop),
            done,
            name,
        }
    }

    /// Shuts down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.done).await.expect("worker task");
    }
}
