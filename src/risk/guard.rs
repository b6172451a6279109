//! A provider behind a time budget and a circuit breaker: a call that takes too long is
//! cut off, and after repeated failures calls are not made at all for a while (one probe
//! then tests the provider). Failures come back as [`RiskError`]s, which the route's fail
//! mode resolves.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use super::{RiskError, RiskProvider, RiskRequest, RiskVerdict};

/// Time budget and circuit-breaker settings for one provider on one route, from the
/// route's `budget` and `[providers.circuit]` (validated there).
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Longest a provider call may take before the gateway stops waiting and applies its
    /// fail mode.
    pub budget: Duration,
    /// Consecutive failures (timeouts and errors) that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit rejects calls before one probe call is let through.
    pub open_for: Duration,
    /// Upper bound on how long a provider's `Retry-After` keeps the circuit open.
    pub max_retry_after: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            budget: Duration::from_millis(300),
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// The state of a circuit breaker, for `/readyz` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls are rejected with [`RiskError::CircuitOpen`].
    Open,
    /// One probe call is in flight; the others are rejected until it returns.
    HalfOpen,
}

#[derive(Debug)]
enum Breaker {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// The result of one guarded call and how long the caller waited for it.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub provider: &'static str,
    pub result: Result<RiskVerdict, RiskError>,
    pub latency: Duration,
}

/// A provider behind a time budget and a circuit breaker. Cheap to clone; clones share the
/// breaker and the counters.
#[derive(Clone)]
pub struct Guarded {
    inner: Arc<GuardInner>,
}

struct GuardInner {
    provider: Arc<dyn RiskProvider>,
    config: GuardConfig,
    breaker: Mutex<Breaker>,
}

impl Guarded {
    pub fn new(provider: Arc<dyn RiskProvider>, config: GuardConfig) -> Self {
        Self {
            inner: Arc::new(GuardInner {
                provider,
                config,
                breaker: Mutex::new(Breaker::Closed { failures: 0 }),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        self.inner.provider.name()
    }

    /// The wrapped provider, e.g. to reach adapter-specific methods.
    pub fn provider(&self) -> &Arc<dyn RiskProvider> {
        &self.inner.provider
    }

    pub fn circuit_state(&self) -> CircuitState {
        match *self.inner.breaker.lock() {
            Breaker::Closed { .. } => CircuitState::Closed,
            Breaker::Open { until } if Instant::now() >= until => CircuitState::HalfOpen,
            Breaker::Open { .. } => CircuitState::Open,
            Breaker::HalfOpen => CircuitState::HalfOpen,
        }
    }

    /// Ask the provider, waiting at most the budget. Never waits longer than the budget, and
    /// does not call the provider at all while the circuit is open.
    pub async fn evaluate(&self, req: &RiskRequest) -> Evaluation {
        let start = Instant::now();
        let result = match self.admit(start) {
            None => Err(RiskError::CircuitOpen),
            Some(mut permit) => {
                let call = self.inner.provider.evaluate(req);
                let result = match tokio::time::timeout(self.inner.config.budget, call).await {
                    Ok(result) => result,
                    Err(_) => Err(RiskError::Timeout),
                };
                permit.finish(&result);
                result
            }
        };
        Evaluation {
            provider: self.inner.provider.name(),
            result,
            latency: start.elapsed(),
        }
    }

    fn admit(&self, now: Instant) -> Option<Permit<'_>> {
        let mut breaker = self.inner.breaker.lock();
        let probe = match *breaker {
            Breaker::Closed { .. } => false,
            Breaker::Open { until } if now >= until => {
                *breaker = Breaker::HalfOpen;
                true
            }
            Breaker::Open { .. } | Breaker::HalfOpen => return None,
        };
        Some(Permit {
            guard: self,
            probe,
            done: false,
        })
    }

    fn record(&self, probe: bool, outcome: Outcome) {
        let config = &self.inner.config;
        let now = Instant::now();
        let mut breaker = self.inner.breaker.lock();
        match outcome {
            Outcome::Success => *breaker = Breaker::Closed { failures: 0 },
            Outcome::Failure { retry_after } => {
                let backoff = retry_after.map(|d| d.min(config.max_retry_after));
                let open_until = |base: Duration| now + backoff.map_or(base, |b| b.max(base));
                match &mut *breaker {
                    // Only the probe decides a half-open circuit; late answers from calls
                    // admitted before it opened do not.
                    Breaker::HalfOpen if probe => {
                        *breaker = Breaker::Open {
                            until: open_until(config.open_for),
                        }
                    }
                    Breaker::Closed { failures } => {
                        *failures += 1;
                        if *failures >= config.failure_threshold {
                            *breaker = Breaker::Open {
                                until: open_until(config.open_for),
                            };
                        } else if let Some(backoff) = backoff {
                            // A provider that says when to come back is believed at once.
                            *breaker = Breaker::Open {
                                until: now + backoff,
                            };
                        }
                    }
                    Breaker::HalfOpen | Breaker::Open { .. } => {}
                }
            }
        }
    }
}

enum Outcome {
    Success,
    Failure { retry_after: Option<Duration> },
}

/// Admission to call the provider. A probe dropped before it finished (the caller gave up)
/// counts as a failed probe, so the circuit cannot stay half-open forever.
struct Permit<'a> {
    guard: &'a Guarded,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    fn finish(&mut self, result: &Result<RiskVerdict, RiskError>) {
        self.done = true;
        let outcome = match result {
            Ok(_) => Outcome::Success,
            Err(RiskError::RateLimited { retry_after }) => Outcome::Failure {
                retry_after: *retry_after,
            },
            Err(_) => Outcome::Failure { retry_after: None },
        };
        self.guard.record(self.probe, outcome);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.guard
                .record(true, Outcome::Failure { retry_after: None });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails while `failing` is set; counts its calls.
    struct Flaky {
        failing: std::sync::atomic::AtomicBool,
        calls: AtomicUsize,
        delay: Duration,
    }

    #[async_trait]
    impl RiskProvider for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn evaluate(&self, _req: &RiskRequest) -> Result<RiskVerdict, RiskError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if self.failing.load(Ordering::SeqCst) {
                Err(RiskError::Unavailable("down".into()))
            } else {
                Ok(RiskVerdict::allow())
            }
        }
    }

    fn flaky(failing: bool, delay: Duration) -> Arc<Flaky> {
        Arc::new(Flaky {
            failing: failing.into(),
            calls: AtomicUsize::new(0),
            delay,
        })
    }

    fn config() -> GuardConfig {
        GuardConfig {
            budget: Duration::from_millis(300),
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_after_threshold_and_a_successful_probe_closes_it() {
        let provider = flaky(true, Duration::ZERO);
        let guard = Guarded::new(provider.clone(), config());
        let req = RiskRequest::default();
        for _ in 0..3 {
            let e = guard.evaluate(&req).await;
            assert!(matches!(e.result, Err(RiskError::Unavailable(_))));
        }
        assert_eq!(guard.circuit_state(), CircuitState::Open);
        let e = guard.evaluate(&req).await;
        assert_eq!(e.result, Err(RiskError::CircuitOpen));
        assert_eq!(
            provider.calls.load(Ordering::SeqCst),
            3,
            "open circuit must not call"
        );

        tokio::time::advance(Duration::from_secs(10)).await;
        // The probe fails: open again for another cool-down.
        let e = guard.evaluate(&req).await;
        assert!(matches!(e.result, Err(RiskError::Unavailable(_))));
        assert_eq!(guard.circuit_state(), CircuitState::Open);

        tokio::time::advance(Duration::from_secs(10)).await;
        provider.failing.store(false, Ordering::SeqCst);
        assert!(guard.evaluate(&req).await.result.is_ok());
        assert_eq!(guard.circuit_state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_probe_goes_through_a_half_open_circuit() {
        let provider = flaky(true, Duration::from_millis(100));
        let guard = Guarded::new(provider.clone(), config());
        let req = RiskRequest::default();
        for _ in 0..3 {
            guard.evaluate(&req).await;
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        provider.failing.store(false, Ordering::SeqCst);
        let (probe, other) = tokio::join!(guard.evaluate(&req), async {
            tokio::task::yield_now().await;
            guard.evaluate(&req).await
        });
        assert!(probe.result.is_ok());
        assert_eq!(other.result, Err(RiskError::CircuitOpen));
        assert_eq!(provider.calls.load(Ordering::SeqCst), 4);
        assert_eq!(guard.circuit_state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_reopens_the_circuit() {
        let provider = flaky(true, Duration::ZERO);
        let guard = Guarded::new(provider.clone(), config());
        let req = RiskRequest::default();
        for _ in 0..3 {
            guard.evaluate(&req).await;
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        provider.failing.store(false, Ordering::SeqCst);
        let slow = Guarded {
            inner: guard.inner.clone(),
        };
        // The caller gives up on the probe before it returns.
        let probe = tokio::time::timeout(Duration::from_millis(1), async {
            let p = slow.admit(Instant::now());
            assert!(p.as_ref().is_some_and(|p| p.probe));
            std::future::pending::<()>().await;
            drop(p);
        });
        assert!(probe.await.is_err());
        assert_eq!(guard.circuit_state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_cuts_a_slow_provider_with_a_timeout() {
        let guard = Guarded::new(flaky(false, Duration::from_secs(2)), config());
        let e = guard.evaluate(&RiskRequest::default()).await;
        assert_eq!(e.result, Err(RiskError::Timeout));
        assert_eq!(e.latency, Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_opens_the_circuit_until_then() {
        struct Limited;
        #[async_trait]
        impl RiskProvider for Limited {
            fn name(&self) -> &'static str {
                "limited"
            }
            async fn evaluate(&self, _: &RiskRequest) -> Result<RiskVerdict, RiskError> {
                Err(RiskError::RateLimited {
                    retry_after: Some(Duration::from_secs(20)),
                })
            }
        }
        let guard = Guarded::new(Arc::new(Limited), config());
        let req = RiskRequest::default();
        assert!(matches!(
            guard.evaluate(&req).await.result,
            Err(RiskError::RateLimited { .. })
        ));
        assert_eq!(
            guard.evaluate(&req).await.result,
            Err(RiskError::CircuitOpen)
        );
        tokio::time::advance(Duration::from_secs(19)).await;
        assert_eq!(guard.circuit_state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(guard.circuit_state(), CircuitState::HalfOpen);
    }
}
