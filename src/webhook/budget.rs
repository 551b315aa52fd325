//! The global budget of request-body bytes held at once, across every request in flight: memory
//! stays bounded however many clients send large bodies, and the rest are shed with a 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::webhook::metrics::Metrics;

pub struct BodyBudget {
    limit: usize,
    used: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl BodyBudget {
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(BodyBudget {
            limit,
            used: AtomicUsize::new(0),
            metrics,
        })
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// An empty reservation, grown as the body arrives and given back when dropped.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    fn take(&self, bytes: usize) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok();
        if taken {
            self.metrics.body_bytes_buffered.inc_by(gauge(bytes));
        }
        taken
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        self.metrics.body_bytes_buffered.dec_by(gauge(bytes));
    }
}

fn gauge(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Bytes one request holds of the budget.
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Reservation {
    /// Holds at least `total` bytes; false (and nothing more taken) when the budget cannot.
    pub fn hold(&mut self, total: usize) -> bool {
        if total <= self.bytes {
            return true;
        }
        let more = total - self.bytes;
        if !self.budget.take(more) {
            return false;
        }
        self.bytes = total;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give_back(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_one_budget_and_give_it_back_on_drop() {
        let metrics = Arc::new(Metrics::default());
        let budget = BodyBudget::new(100, metrics.clone());
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        assert!(a.hold(60));
        assert!(a.hold(40), "holding less than held is a no-op");
        assert!(!b.hold(41), "over the budget");
        assert_eq!(budget.used(), 60, "a refused hold takes nothing");
        assert!(b.hold(40));
        assert!(metrics.encode().contains("keywire_body_bytes_buffered 100"));
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.hold(100));
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(metrics.encode().contains("keywire_body_bytes_buffered 0"));
    }
}
