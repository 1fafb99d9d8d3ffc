//! A job's cancel token. `Job.Cancel` works until the swap begins: the job then ends
//! `cancelled` with nothing changed. Once the job commits (the swap begins) a cancel is
//! refused with `NotCancellable` and the job finishes or rolls back. The two sides race
//! through one atomic, so exactly one of them wins.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

const OPEN: u8 = 0;
const CANCELLED: u8 = 1;
const COMMITTED: u8 = 2;

/// Shared between a job and its `Cancel` method; checked between chunks and steps.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicU8>);

impl Cancel {
    /// A fresh, open token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work to stop. `Ok` when it will stop (or was already asked to);
    /// `NotCancellable` once it has committed.
    pub fn cancel(&self) -> Result<()> {
        match self
            .0
            .compare_exchange(OPEN, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) | Err(CANCELLED) => Ok(()),
            Err(_) => Err(Error::NotCancellable(
                "the job is past the swap and can no longer be cancelled; it will finish or \
                 roll back"
                    .into(),
            )),
        }
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst) == CANCELLED
    }

    /// Resolves once a cancel is asked for (checked every 100 ms): for waits that must see a
    /// Cancel within a second, whatever they wait for.
    pub async fn cancelled(&self) {
        while !self.is_cancelled() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// `Cancelled` when a cancel was asked for.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled(
                "the job was cancelled before anything was changed".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// The point of no return (the swap begins): from now on cancels are refused. `Cancelled`
    /// when a cancel came first.
    pub fn commit(&self) -> Result<()> {
        match self
            .0
            .compare_exchange(OPEN, COMMITTED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) | Err(COMMITTED) => Ok(()),
            Err(_) => self.check(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_wins_before_the_commit_and_loses_after() {
        let c = Cancel::new();
        c.check().unwrap();
        c.cancel().unwrap();
        c.cancel().unwrap();
        assert_eq!(c.check().unwrap_err().name(), "Cancelled");
        assert_eq!(c.commit().unwrap_err().name(), "Cancelled");
        let c = Cancel::new();
        c.commit().unwrap();
        c.commit().unwrap();
        assert_eq!(c.cancel().unwrap_err().name(), "NotCancellable");
        c.check().unwrap();
    }
}
