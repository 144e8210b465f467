//! Graceful shutdown on SIGINT/SIGTERM, shared by `weir run`, `weir sink`
//! and `weir simulate`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag set on the first SIGINT or SIGTERM, so the caller can finish its
/// current work (flush, commit) and stop; a second signal exits at once.
/// Must be called inside a Tokio runtime. The handlers are registered
/// before this returns (not when the spawned task first runs): a signal
/// that arrives while the caller starts up is not the default action
/// (killing the process mid-start) but a request to stop. Call it first.
pub fn on_signal() -> Arc<AtomicBool> {
    use tokio::signal::unix::{signal, SignalKind};
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM/SIGINT");
            return flag;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => {}
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

/// `weir run`: SIGUSR1 stops like SIGTERM (sets `stop`) and also sets the
/// returned flag: leave the consumer group on the way out even as a static
/// member (scaling in rather than restarting; see docs/operations.md, Deploying). Call
/// it right after [`on_signal`].
pub fn on_leave_signal(stop: &Arc<AtomicBool>) -> Arc<AtomicBool> {
    use tokio::signal::unix::{signal, SignalKind};
    let leave = Arc::new(AtomicBool::new(false));
    let mut usr1 = match signal(SignalKind::user_defined1()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGUSR1");
            return leave;
        }
    };
    let (set_leave, set_stop) = (leave.clone(), stop.clone());
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            set_leave.store(true, Ordering::SeqCst);
            if set_stop.swap(true, Ordering::SeqCst) {
                tracing::info!("SIGUSR1: leaving the consumer group when stopping");
            } else {
                tracing::info!("SIGUSR1: stopping and leaving the consumer group");
            }
        }
    });
    leave
}
