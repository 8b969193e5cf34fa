//! The global in-flight byte budget.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes are counted in KiB units so a `u32` permit count covers budgets up to 4 TiB.
const UNIT: u64 = 1024;

/// Bounds the bytes in flight across the whole pipeline, whatever the object sizes: every
/// buffer (a part being copied, a package being re-encrypted) holds a [`BudgetPermit`] for its
/// size until it is dropped. An object larger than the whole budget takes all of it (and so
/// runs alone) rather than waiting forever.
#[derive(Debug, Clone)]
pub(crate) struct ByteBudget {
    semaphore: Arc<Semaphore>,
    units: u32,
}

/// Bytes reserved from a [`ByteBudget`], returned when dropped. Owned, so it can travel with
/// the data into another task.
#[derive(Debug)]
pub(crate) struct BudgetPermit {
    _permit: OwnedSemaphorePermit,
    /// What the permit accounts for (rounded up to the unit); read by the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    bytes: u64,
}

impl BudgetPermit {
    #[cfg(test)]
    /// The bytes this permit accounts for (rounded up to the budget's unit).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl ByteBudget {
    /// A budget of `bytes` (at least one unit).
    pub(crate) fn new(bytes: u64) -> Self {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        ByteBudget { semaphore: Arc::new(Semaphore::new(units as usize)), units }
    }

    /// The budget's size in bytes.
    pub(crate) fn capacity(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    #[cfg(test)]
    /// Bytes not reserved right now.
    pub(crate) fn available(&self) -> u64 {
        self.semaphore.available_permits() as u64 * UNIT
    }

    fn units_for(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX).min(self.units)
    }

    /// Waits until `bytes` are free and reserves them.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled wait reserves nothing (tokio's semaphore queue is fair, and a
    /// dropped acquire leaves it).
    pub(crate) async fn acquire(&self, bytes: u64) -> BudgetPermit {
        let units = self.units_for(bytes);
        // The semaphore is never closed, so acquiring cannot fail.
        match self.semaphore.clone().acquire_many_owned(units).await {
            Ok(p) => BudgetPermit { _permit: p, bytes: u64::from(units) * UNIT },
            Err(_) => unreachable!("the budget's semaphore is never closed"),
        }
    }

    #[cfg(test)]
    /// Reserves `bytes` if they are free now.
    pub(crate) fn try_acquire(&self, bytes: u64) -> Option<BudgetPermit> {
        let units = self.units_for(bytes);
        self.semaphore
            .clone()
            .try_acquire_many_owned(units)
            .ok()
            .map(|p| BudgetPermit { _permit: p, bytes: u64::from(units) * UNIT })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_bound_bytes_in_flight_and_return_on_drop() {
        let b = ByteBudget::new(64 * 1024);
        let a = b.acquire(40 * 1024).await;
        assert_eq!(b.available(), 24 * 1024);
        assert!(b.try_acquire(30 * 1024).is_none(), "over budget");
        let c = b.try_acquire(1).unwrap();
        assert_eq!(c.bytes(), 1024, "rounded up to the unit");
        drop(a);
        assert!(b.try_acquire(30 * 1024).is_some());
        drop(c);
        // Larger than the whole budget: takes all of it instead of waiting forever.
        let huge = b.acquire(10 << 30).await;
        assert_eq!(huge.bytes(), b.capacity());
        assert_eq!(b.available(), 0);
    }

    #[tokio::test]
    async fn waiters_proceed_when_bytes_return() {
        let b = ByteBudget::new(8 * 1024);
        let first = b.acquire(8 * 1024).await;
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire(4 * 1024).await.bytes() });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "blocked while the budget is used");
        drop(first);
        assert_eq!(waiter.await.unwrap(), 4 * 1024);
    }
}
