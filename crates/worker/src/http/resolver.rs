//! The worker's DNS resolver: the system's (`getaddrinfo`, on tokio's blocking pool),
//! with SSRF protection dropping every address it refuses before the connector sees
//! them. The addresses checked are the addresses connected to, so a name that resolves
//! differently a moment later (DNS rebinding) gains nothing.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use courier_core::outbound::OutboundPolicy;
use hyper_util::client::legacy::connect::dns::Name;

/// Resolves names through SSRF protection.
pub struct CheckedResolver {
    policy: Arc<OutboundPolicy>,
    /// Hosts of the operator's proxies (`HTTP_PROXY`...), which may be internal: they
    /// are configuration, not a job's target.
    proxies: Vec<String>,
}

impl CheckedResolver {
    pub fn new(policy: Arc<OutboundPolicy>, proxies: Vec<String>) -> Self {
        Self { policy, proxies }
    }

    /// The addresses of `host` that may be called.
    ///
    /// # Errors
    /// The lookup failing, or SSRF protection refusing every address (the error is then a
    /// [`courier_core::outbound::Refusal`], which the caller recognises).
    pub async fn lookup(
        &self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let resolved: Vec<std::net::IpAddr> = tokio::net::lookup_host((host, 0))
            .await?
            .map(|a| a.ip())
            .collect();
        let allowed = if self.proxies.iter().any(|p| p.eq_ignore_ascii_case(host)) {
            resolved
        } else {
            self.policy.filter_resolved(host, resolved)?
        };
        Ok(allowed
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 0))
            .collect())
    }
}

/// [`CheckedResolver`] as the resolver of hyper-util's `HttpConnector`.
#[derive(Clone)]
pub struct CheckedDns(pub Arc<CheckedResolver>);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for CheckedDns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = self.0.clone();
        Box::pin(async move { Ok(resolver.lookup(name.as_str()).await?.into_iter()) })
    }
}

/// The hosts of the proxies the environment configures (`HTTP_PROXY`, `HTTPS_PROXY`,
/// `ALL_PROXY`, in either case), which the connector uses.
pub fn proxy_hosts_from_env() -> Vec<String> {
    ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]
        .iter()
        .flat_map(|name| [name.to_string(), name.to_ascii_lowercase()])
        .filter_map(|name| std::env::var(name).ok())
        .filter_map(|value| {
            let value = if value.contains("://") {
                value
            } else {
                format!("http://{value}")
            };
            url::Url::parse(&value).ok()?.host_str().map(str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::outbound::Refusal;

    fn resolver(allow: &[&str]) -> CheckedResolver {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        CheckedResolver::new(Arc::new(OutboundPolicy::new(&allow).unwrap()), vec![])
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        // `localhost` resolves through the system resolver (/etc/hosts) on every machine.
        let error = resolver(&[]).lookup("localhost").await.unwrap_err();
        let refusal = error.downcast_ref::<Refusal>().expect("a refusal");
        assert!(refusal.to_string().contains("loopback"), "{refusal}");
    }

    #[tokio::test]
    async fn an_allowed_range_lets_the_resolved_addresses_through() {
        let addrs = resolver(&["127.0.0.0/8", "::1/128"])
            .lookup("localhost")
            .await
            .unwrap();
        assert!(!addrs.is_empty());
    }

    #[tokio::test]
    async fn the_operators_proxy_may_be_internal() {
        let r = CheckedResolver::new(Arc::default(), vec!["localhost".into()]);
        assert!(!r.lookup("localhost").await.unwrap().is_empty());
    }
}
