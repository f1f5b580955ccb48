//! Time, injected: the scheduler asks a [`Clock`] for the time and waits on it, so tests
//! can set the time (a daylight-saving change, a night of missed occurrences) instead of
//! waiting for it.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// Where time comes from.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once the clock reads `at` or later.
    fn sleep_until(
        &self,
        at: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(
        &self,
        at: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told to (tests).
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
    changed: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
            changed: watch::Sender::new(start),
        }
    }

    /// Sets the time (forward or back) and wakes every sleeper whose time has come.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().expect("clock lock") = at;
        self.changed.send_replace(at);
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let at = self.now() + by;
        self.set(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock lock")
    }

    fn sleep_until(
        &self,
        at: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        let mut changes = self.changed.subscribe();
        Box::pin(async move {
            let _ = changes.wait_for(|now| *now >= at).await;
        })
    }
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_set_past_their_time() {
        let start = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let clock = ManualClock::new(start);
        let at = start + chrono::Duration::seconds(60);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(at).await })
        };
        clock.advance(chrono::Duration::seconds(30));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(chrono::Duration::seconds(30));
        sleeper.await.unwrap();
        assert_eq!(clock.now(), at);
    }
}
