//! SSRF protection on the wire. Names are resolved by [`GuardedResolver`], which hands
//! the connector only the addresses the policy allows, so the address checked is the
//! address connected to (a name that resolves differently a moment later, DNS
//! rebinding, gains nothing). IP-literal hosts never reach a resolver, so
//! [`HttpCaller`](crate::http::HttpCaller) checks them before sending, and
//! [`redirect_policy`] checks every redirect hop the same way.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use courier_core::outbound::{OutboundPolicy, Refusal};
use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    redirect::{Attempt, Policy},
};

/// Resolves with the system resolver, then drops the addresses the policy refuses;
/// fails with the [`Refusal`] when none is left.
pub struct GuardedResolver {
    /// The allow-list the resolved addresses are checked against.
    pub policy: Arc<OutboundPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<IpAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => tokio::net::lookup_host((host.as_str(), 0))
                    .await?
                    .map(|a| a.ip())
                    .collect(),
            };
            let allowed = policy.filter_resolved(&host, resolved)?;
            // Port 0 is replaced by the URL's port (or the scheme's).
            let addrs: Addrs = Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Most redirects followed for one call.
pub const MAX_REDIRECTS: usize = 10;

#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_REDIRECTS} redirects")]
struct TooManyRedirects;

/// Follows up to [`MAX_REDIRECTS`] redirects, each hop's URL checked like the first
/// (a hop to a name is checked again by the resolver when it connects).
pub fn redirect_policy(policy: Arc<OutboundPolicy>) -> Policy {
    Policy::custom(move |attempt: Attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(TooManyRedirects);
        }
        match policy.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refusal) => attempt.error(refusal),
        }
    })
}

/// The [`Refusal`] somewhere in an error's chain of causes, if SSRF protection caused it.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(allow: &[&str]) -> GuardedResolver {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        GuardedResolver {
            policy: Arc::new(OutboundPolicy::new(&allow).unwrap()),
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_by_the_resolver() {
        // `localhost` resolves through the system resolver (/etc/hosts) on every machine.
        let err = match resolver(&[]).resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        let refusal = refusal_in(&*err).expect("a refusal");
        assert!(refusal.subject.starts_with("localhost ("), "{refusal}");
        assert_eq!(refusal.reason.kind, "loopback");
    }

    #[tokio::test]
    async fn an_allowed_range_lets_the_resolved_addresses_through() {
        let addrs: Vec<SocketAddr> = resolver(&["127.0.0.0/8", "::1/128"])
            .resolve("localhost".parse().unwrap())
            .await
            .expect("allowed")
            .collect();
        assert!(
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()),
            "{addrs:?}"
        );
    }
}
