//! Graceful shutdown on SIGINT/SIGTERM, shared by `weir run` and `weir sink`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag set on the first SIGINT or SIGTERM, so the caller can finish its
/// current work (flush, commit) and stop; a second signal exits at once.
/// Must be called inside a Tokio runtime.
pub fn on_signal() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if set.swap(true, Ordering::SeqCst) {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
            tracing::info!("signal received: finishing the current work");
        }
    });
    flag
}
