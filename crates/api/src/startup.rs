//! Building and running the API: `Application::build(settings)` binds the listener (port
//! 0 in tests), `run_until_stopped` serves until the shutdown future resolves, then
//! drains requests in flight.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{Router, extract::DefaultBodyLimit, http::Request, serve::ListenerExt};
use courier_core::{Settings, crypto::SecretBox, db, outbound::OutboundPolicy, queue::RedisQueue};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{routes::api_router, state::AppState};

/// A built API, bound and ready to serve.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Connects (lazily) to PostgreSQL and Redis, applies migrations when configured, and
    /// binds the listener.
    ///
    /// # Errors
    /// Bad URLs, an invalid `outbound.allow` entry, a failing migration or a port that
    /// cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, courier_core::clock::system()).await
    }

    /// [`Self::build`] with the scheduler's time from `clock` (tests set it).
    ///
    /// # Errors
    /// As [`Self::build`].
    pub async fn build_with_clock(
        settings: Settings,
        clock: courier_core::clock::SharedClock,
    ) -> anyhow::Result<Self> {
        courier_core::metrics::install();
        let secrets = Arc::new(SecretBox::from_settings(&settings.secrets)?);
        let outbound = Arc::new(OutboundPolicy::from_settings(&settings.outbound)?);
        let db = db::connect_lazy(&settings.database)?;
        if settings.server.migrate_on_start {
            db::migrate(&db).await?;
        }
        let queue = RedisQueue::new(&settings.redis)?;
        queue.warn_on_unsafe_settings().await;
        let listener =
            TcpListener::bind((settings.server.host.as_str(), settings.server.port)).await?;
        let settings = Arc::new(settings);
        let dispatcher = courier_core::stages::Dispatcher::new(db.clone(), queue.clone());
        let intake = crate::intake::Intake::spawn(db.clone(), dispatcher);
        let scheduler = crate::scheduler::Scheduler::new(
            db.clone(),
            queue.clone(),
            secrets.clone(),
            clock.clone(),
            settings.scheduler.clone(),
        );
        let per_job = std::num::NonZeroU32::new(settings.server.progress_per_second)
            .unwrap_or(std::num::NonZeroU32::MIN);
        let progress_limiter = Arc::new(governor::RateLimiter::keyed(
            governor::Quota::per_second(per_job).allow_burst(per_job),
        ));
        let state = AppState {
            document: Arc::new(crate::openapi::document(&settings.jobs)),
            progress_limiter,
            auth: Arc::new(crate::auth::Authenticator::new(&settings.auth)),
            clock,
            scheduler,
            secrets,
            db,
            intake,
            queue,
            settings,
            outbound,
        };
        Ok(Self {
            listener,
            router: router(state.clone()),
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting connections and waits for
    /// requests in flight (up to the configured grace).
    ///
    /// # Errors
    /// The listener failing.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let mut background = self.state.maintenance().spawn(&stop, true);
        background.push(
            courier_core::metrics::StatusLoop {
                db: self.state.db.clone(),
                queue: self.state.queue.clone(),
                depths: true,
            }
            .spawn(stop.clone()),
        );
        if self.state.settings.scheduler.enabled {
            background.push(tokio::spawn(self.state.scheduler.clone().run(stop.clone())));
        }
        let grace = Duration::from_millis(self.state.settings.server.shutdown_grace_ms);
        let stopping = stop.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: draining requests in flight");
            stopping.cancel();
        };
        // Without TCP_NODELAY an answer written in two parts waits for the client's
        // delayed ACK (tens of milliseconds) before its second part goes out.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let serve = axum::serve(listener, self.router).with_graceful_shutdown(signal);
        let served = tokio::select! {
            result = serve => result.map_err(anyhow::Error::from),
            () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("requests still in flight after the grace period; closing them");
                Ok(())
            }
        };
        stop.cancel();
        for task in background {
            let _ = task.await;
        }
        served
    }
}

fn router(state: AppState) -> Router {
    api_router(state.clone())
        .route(
            "/openapi.json",
            axum::routing::get(crate::openapi::serve).with_state(state.clone()),
        )
        // Body limits are enforced by `ApiJson` per route, as problem+json.
        .layer(DefaultBodyLimit::disable())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            // Only method, path and request id: headers (and their secrets) are never logged.
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
