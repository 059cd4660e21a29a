//! Ctrl+C and SIGTERM (the `ctrlc` crate's `termination` feature).

use std::sync::atomic::{AtomicBool, Ordering};

/// Calls `first` on the first SIGINT/SIGTERM: it asks the loop to stop
/// cleanly. A second signal, or a first one after the loop has gone (`first`
/// returns false), exits at once so the user is never stuck.
pub fn on_interrupt(first: impl Fn() -> bool + Send + 'static) -> Result<(), String> {
    let seen = AtomicBool::new(false);
    ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) || !first() {
            std::process::exit(130);
        }
    })
    .map_err(|e| format!("cannot install the Ctrl+C handler: {e}"))
}
