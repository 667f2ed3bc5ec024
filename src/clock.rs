//! The wall clock, the one place the service reads the time of day: the core takes `now` as
//! an argument, and tests pass a clock of their own.

use std::sync::Arc;

/// The wall clock, injected so that tests control "now". Unix milliseconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn wall_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
}
