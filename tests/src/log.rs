//! The library's `tracing` events printed during a test, when asked for: set
//! `PARTI_TEST_LOG` to a level (`error`, `warn`, `info`, `debug`, `trace`) and run the test
//! with `--nocapture`. Each event carries its spans (the worker it is about).

use tracing::Level;

/// Prints events at `PARTI_TEST_LOG`'s level and above for the rest of the process, if it
/// is set; does nothing otherwise, or when a subscriber is already installed.
///
/// # Panics
/// When `PARTI_TEST_LOG` is set to something that is no level.
pub fn init() {
    let Ok(level) = std::env::var("PARTI_TEST_LOG") else {
        return;
    };
    let level: Level = level
        .parse()
        .unwrap_or_else(|_| panic!("PARTI_TEST_LOG={level:?} is no level (error … trace)"));
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_test_writer()
        .try_init();
}
