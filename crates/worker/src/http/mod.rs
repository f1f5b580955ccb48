//! Making one call: the job's method, URL, headers and body, plus `X-Courier-*` headers
//! and, when secrets are configured, the Standard Webhooks signature headers; redirects
//! off unless the job enables them; SSRF protection on every address connected to; the
//! answer read up to a cap.
//!
//! The client is hyper-util's (hyper underneath): HTTP/1.1, and HTTP/2 where a TLS
//! server offers it by ALPN; a pool per origin that drops connections the server closed;
//! TLS by rustls with the platform's roots (plus `outbound.ca_file`); proxies from
//! `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` ([`connector`]). reqwest, which wraps the same
//! client, was tried first and measured: its layers (a request clone for its retry
//! policy, a redirect layer, a URL parse per answer) cost 12 µs of the worker's CPU per
//! job, 20% of a drain, and hyper-util exposes the buffer settings reqwest does not.

mod answer;
mod connector;
mod redirect;
mod resolver;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::Utc;
use courier_core::{
    Settings,
    crypto::SecretBox,
    domain::Target,
    outbound::{OutboundPolicy, Refusal},
    queue::Leased,
    settings::JobLimits,
    signing::Signer,
};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_util::client::{legacy::Client, proxy::matcher::Matcher};
use rustls_platform_verifier::BuilderVerifierExt;

pub use answer::{EXCERPT_BYTES, excerpt, parse_retry_after};
use connector::Connector;
pub use courier_core::stages::attempt::CallResult;
pub use redirect::MAX_REDIRECTS;
pub use resolver::CheckedResolver;

/// An idle kept-alive connection is closed after this long: below the keep-alive of
/// common servers (5 s in Node.js and Apache httpd), so Courier closes first and a
/// request is rarely sent on a connection the server is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The signature headers of Standard Webhooks; a job's own headers of these names are
/// dropped when Courier signs.
const SIGNATURE_HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

/// The client (its pool, TLS and SSRF protection), the signer, and the keys that open
/// sealed header values.
#[derive(Clone)]
pub struct HttpCaller {
    client: Client<Connector, Full<Bytes>>,
    proxies: Arc<Matcher>,
    outbound: Arc<OutboundPolicy>,
    signer: Arc<Signer>,
    secrets: Arc<SecretBox>,
    limits: JobLimits,
    max_response_bytes: usize,
    /// `server.public_url` without its trailing slash, when progress URLs are sent.
    progress_base: Option<Arc<str>>,
}

impl HttpCaller {
    /// # Errors
    /// An invalid `outbound.allow` entry, signing secret, encryption key or CA file, or
    /// the TLS backend failing to initialise.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let outbound = Arc::new(OutboundPolicy::from_settings(&settings.outbound)?);
        let signer = Arc::new(Signer::from_settings(&settings.signing)?);
        let secrets = Arc::new(SecretBox::from_settings(&settings.secrets)?);
        let resolver = CheckedResolver::new(outbound.clone(), resolver::proxy_hosts_from_env());
        let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(
            resolver::CheckedDns(Arc::new(resolver)),
        );
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let tls = if settings.outbound.ca_file.is_empty() {
            tls.with_platform_verifier()?
        } else {
            let roots = extra_roots(&settings.outbound.ca_file)?;
            tls.dangerous().with_custom_certificate_verifier(Arc::new(
                rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider)?,
            ))
        }
        .with_no_client_auth();
        let proxies = Arc::new(Matcher::from_env());
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(settings.worker.concurrency)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .build(Connector::new(tcp, tls, proxies.clone()));
        Ok(Self {
            client,
            proxies,
            outbound,
            signer,
            secrets,
            limits: settings.jobs.clone(),
            max_response_bytes: settings.outbound.max_response_bytes,
            progress_base: settings
                .server
                .public_url
                .as_ref()
                .map(|url| Arc::from(url.as_str().trim_end_matches('/'))),
        })
    }

    /// Makes the call of `job`'s attempt, within the job's timeout.
    pub async fn call(&self, job: &Leased) -> CallResult {
        let spec = &job.spec;
        let url = spec.target.url.as_url();
        // Connections to IP literals skip the resolver: they are checked here.
        if let Err(refusal) = self.outbound.check_url(url) {
            return CallResult::Refused(refusal.to_string());
        }
        let headers = match self.headers(job) {
            Ok(headers) => headers,
            Err(problem) => return CallResult::Invalid(problem),
        };
        let method = http::Method::from_bytes(spec.target.method.as_str().as_bytes())
            .expect("the domain's methods are valid");
        let hop = redirect::Hop {
            method,
            url: url.clone(),
            headers,
            body: Bytes::from(spec.target.body.clone()),
        };
        let timeout = Duration::from_millis(spec.timeout_ms);
        match tokio::time::timeout(timeout, self.send(hop, spec.follow_redirects)).await {
            Ok(result) => result,
            Err(_) => CallResult::TimedOut,
        }
    }

    /// The headers to send: the job's own (secret values opened, and checked as strictly
    /// as the API checks them, since Redis is not trusted to hold only what the API
    /// wrote), the signature, and Courier's own.
    fn headers(&self, job: &Leased) -> Result<HeaderMap, String> {
        let id = job.id.to_string();
        let opened = job
            .spec
            .target
            .opened_headers(&self.secrets, &id)
            .map_err(|(name, e)| format!("cannot decrypt header {name}: {e}"))?;
        if let Err(problems) = Target::check_headers(
            &opened,
            self.limits.max_headers,
            self.limits.max_header_bytes,
        ) {
            let (name, problem) = &problems[0];
            return Err(format!("header {name:?} cannot be sent: {problem}"));
        }
        let body = job.spec.target.body.as_bytes();
        let signature = self
            .signer
            .headers(job.queue.as_str(), &id, Utc::now().timestamp(), body);
        let mut headers = HeaderMap::with_capacity(opened.len() + 5);
        for (name, value) in &opened {
            if signature.is_some()
                && SIGNATURE_HEADERS
                    .iter()
                    .any(|h| name.eq_ignore_ascii_case(h))
            {
                continue;
            }
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header {name:?} is not a valid header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("header {name} has an invalid value"))?;
            headers.append(name, value);
        }
        let mut set = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        if let Some(signature) = &signature {
            set("webhook-id", &signature.id);
            set("webhook-timestamp", &signature.timestamp);
            set("webhook-signature", &signature.signature);
        }
        set("x-courier-job-id", &id);
        set("x-courier-attempt", &job.attempt.to_string());
        if let Some(base) = &self.progress_base {
            let token = self.secrets.progress_token(&id, job.token.0);
            set(
                "x-courier-progress-url",
                &format!("{base}/v1/jobs/{id}/progress?token={token}"),
            );
        }
        if let Some(occurrence) = &job.spec.occurrence {
            set("x-courier-schedule", occurrence.schedule.as_str());
            set(
                "x-courier-occurrence",
                &occurrence
                    .at
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            );
        }
        Ok(headers)
    }

    /// Sends `hop`, following redirects when `follow` (see [`redirect`]).
    async fn send(&self, mut hop: redirect::Hop, follow: bool) -> CallResult {
        let mut hops = 0;
        loop {
            let response = match self.exchange(&hop).await {
                Ok(response) => response,
                Err(result) => return result,
            };
            let status = response.status();
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let (true, true, Some(location)) = (follow, redirect::is_redirect(status), location)
            {
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return CallResult::Failed(format!("more than {MAX_REDIRECTS} redirects"));
                }
                hop = match redirect::next(hop, status, &location, &self.outbound) {
                    Ok(next) => next,
                    Err(result) => return result,
                };
                continue;
            }
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
            let mut body = response.into_body();
            return match answer::read_capped(&mut body, self.max_response_bytes).await {
                Ok(body) => CallResult::Answered {
                    status: status.as_u16(),
                    retry_after,
                    excerpt: excerpt(&body),
                },
                Err(e) => CallResult::Failed(format!("reading the answer failed: {}", chain(&e))),
            };
        }
    }

    /// One request and its answer's head. A request that got no byte of answer because
    /// its connection was closed or reset under it is sent once more, on a new
    /// connection, within the same attempt: that is a kept-alive connection the server
    /// closed just as it was reused (valid HTTP/1.1, and a race no client can close),
    /// which must not cost an attempt (SPEC 4). hyper does not say whether the
    /// connection was a reused one, so a fresh connection reset before any answer is
    /// also tried once more; its target got the request at most twice, with the same
    /// `X-Courier-Job-Id`.
    async fn exchange(
        &self,
        hop: &redirect::Hop,
    ) -> Result<http::Response<hyper::body::Incoming>, CallResult> {
        let uri: http::Uri = hop
            .url
            .as_str()
            .parse()
            .map_err(|e| CallResult::Invalid(format!("the URL cannot be sent: {e}")))?;
        // Through a proxy, an `http` request carries the proxy's credentials itself (an
        // `https` one is tunnelled, and the tunnel carries them).
        let proxy_auth = (uri.scheme() == Some(&http::uri::Scheme::HTTP))
            .then(|| self.proxies.intercept(&uri))
            .flatten()
            .and_then(|proxy| proxy.basic_auth().cloned());
        let mut again = true;
        loop {
            let mut request = http::Request::new(Full::new(hop.body.clone()));
            *request.method_mut() = hop.method.clone();
            *request.uri_mut() = uri.clone();
            *request.headers_mut() = hop.headers.clone();
            if let Some(auth) = &proxy_auth {
                request
                    .headers_mut()
                    .insert(http::header::PROXY_AUTHORIZATION, auth.clone());
            }
            match self.client.request(request).await {
                Ok(response) => return Ok(response),
                Err(e) if again && closed_before_answer(&e) => again = false,
                Err(e) => return Err(failure(&e)),
            }
        }
    }
}

/// Whether `error` says the connection closed or was reset before any answer came.
fn closed_before_answer(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        source = cause.source();
    }
    false
}

/// What a failed request means: a refusal by SSRF protection (raised in the resolver),
/// or a connection error, described with its causes.
fn failure(e: &hyper_util::client::legacy::Error) -> CallResult {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return CallResult::Refused(refusal.to_string());
        }
        source = cause.source();
    }
    CallResult::Failed(chain(e))
}

/// An error and its causes, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// The certificates of a PEM bundle (`outbound.ca_file`).
fn extra_roots(path: &str) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("outbound.ca_file {path:?}: {e}"))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "outbound.ca_file {path:?} holds no certificate"
    );
    Ok(certs)
}
