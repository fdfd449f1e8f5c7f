//! Deadline-bound polling: tests wait for a condition to hold, never sleep and hope.

use std::future::Future;
use std::time::{Duration, Instant};

/// Deadline for things that take milliseconds on a laptop: generous, so that a loaded 2-core CI
/// machine does not fail tests, and finite, so that a broken test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// First pause between two polls; it doubles up to [`MAX_POLL_INTERVAL`], so that quick
/// conditions are seen quickly and slow ones are not hammered.
const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(10);
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Polls `condition` until it returns true; panics naming `what` once `deadline` has passed.
///
/// An attempt that is still running at the deadline counts as false. To use values from the
/// test inside the condition, borrow them outside the closure and move the borrows in:
///
/// ```ignore
/// let db = &db;
/// eventually(PATIENCE, "the row to arrive", || async move {
///     db.try_query_scalar::<i64>("SELECT count(*) FROM t").await.is_ok_and(|n| n == 1)
/// }).await;
/// ```
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    let mut interval = FIRST_POLL_INTERVAL;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_sub(started.elapsed());
        let held = tokio::time::timeout(remaining, condition()).await;
        if held == Ok(true) {
            return;
        }
        let elapsed = started.elapsed();
        if elapsed >= deadline {
            panic!("timed out after {elapsed:?} ({attempts} attempts) waiting for {what}");
        }
        tokio::time::sleep(interval.min(deadline - elapsed)).await;
        interval = (interval * 2).min(MAX_POLL_INTERVAL);
    }
}
