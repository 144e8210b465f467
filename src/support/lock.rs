//! Mutex locking that survives a panicking holder.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, recovering the data if a holder panicked. Only for data that
/// every holder leaves consistent at each step (the callers' guards cover
/// one call, never a half-done update).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-lock `l`, recovering the data if a writer panicked (as [`lock`]).
pub(crate) fn read<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-lock `l`, recovering the data if a holder panicked (as [`lock`]).
pub(crate) fn write<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
