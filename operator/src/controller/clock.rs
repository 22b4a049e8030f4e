//! Time is injected so status computations are deterministic in tests.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
    fn now_time(&self) -> Time {
        Time(self.now())
    }
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock tests move by hand.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }
    pub fn advance(&self, by: jiff::SignedDuration) {
        let mut t = self.0.lock().expect("clock lock");
        *t = t.checked_add(by).expect("clock in range");
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock lock")
    }
}
