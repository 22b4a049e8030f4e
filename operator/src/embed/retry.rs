//! Exponential backoff with jitter for provider calls, honouring the server's `Retry-After`.

use std::time::Duration;

use rand::Rng;

use super::provider::ProviderError;

/// Longest `Retry-After` obeyed; a server asking for more gets this (the batch's row locks are
/// held meanwhile, and a SIGTERM's grace is shorter anyway).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct Backoff {
    /// Pause before the first retry (doubled each time).
    pub base: Duration,
    /// Ceiling of the doubling.
    pub max: Duration,
    /// Retries after the first try; then the error goes to the worker.
    pub max_retries: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_retries: 5,
        }
    }
}

impl Backoff {
    /// Pause before retry number `attempt` (0-based). `Retry-After` wins when given (plus a little
    /// jitter so replicas told the same second do not return in lockstep); else "equal jitter":
    /// half the exponential step fixed, half random — spread out, never immediate.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let mut rng = rand::rng();
        if let Some(ra) = retry_after {
            let jitter = rng.random_range(0..=self.base.as_millis().min(1000) as u64);
            return ra.min(MAX_RETRY_AFTER) + Duration::from_millis(jitter);
        }
        let step = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(30)))
            .min(self.max);
        let half = step / 2;
        half + Duration::from_micros(rng.random_range(0..=half.as_micros() as u64))
    }

    /// Call `f` until it succeeds, fails for good, or retries run out. `on_retry` sees each
    /// retried error (metrics, logs).
    pub async fn run<T, F, Fut>(
        &self,
        mut on_retry: impl FnMut(&ProviderError, Duration),
        mut f: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Err(e) if e.is_retriable() && attempt < self.max_retries => {
                    let pause = self.delay(attempt, e.retry_after());
                    on_retry(&e, pause);
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_jittered_and_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_retries: 5,
        };
        for _ in 0..50 {
            let d0 = b.delay(0, None);
            assert!(
                d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100),
                "{d0:?}"
            );
            let d3 = b.delay(3, None);
            assert!(
                d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800),
                "{d3:?}"
            );
            let d20 = b.delay(20, None);
            assert!(
                d20 >= Duration::from_millis(500) && d20 <= Duration::from_secs(1),
                "{d20:?}"
            );
        }
    }

    #[test]
    fn retry_after_wins_and_is_bounded() {
        let b = Backoff::default();
        let d = b.delay(0, Some(Duration::from_secs(7)));
        assert!(
            d >= Duration::from_secs(7) && d <= Duration::from_millis(7500),
            "{d:?}"
        );
        assert!(
            b.delay(0, Some(Duration::from_secs(86400)))
                <= MAX_RETRY_AFTER + Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn retries_only_what_is_retriable() {
        let b = Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
            max_retries: 3,
        };
        let mut calls = 0;
        let r: Result<(), _> = b
            .run(
                |_, _| {},
                || {
                    calls += 1;
                    async { Err(ProviderError::Timeout) }
                },
            )
            .await;
        assert_eq!((r, calls), (Err(ProviderError::Timeout), 4));
        let mut calls = 0;
        let rejected = ProviderError::Rejected {
            status: 400,
            message: "x".into(),
        };
        let r: Result<(), _> = b
            .run(
                |_, _| {},
                || {
                    calls += 1;
                    let e = rejected.clone();
                    async move { Err(e) }
                },
            )
            .await;
        assert_eq!((r, calls), (Err(rejected), 1));
    }
}
