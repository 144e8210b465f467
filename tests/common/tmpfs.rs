//! A small tmpfs of its own for a `weir run` state directory, and a filler
//! file that takes every byte left on it: a full state filesystem, on
//! demand (needs root; `mount -t tmpfs`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at `path`; unmounted when dropped (also on a panic: drop
/// the processes using it first, i.e. declare this guard before them).
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `path` (created if needed). Panics,
    /// saying why, when that is not possible (not root, no tmpfs).
    pub fn mount(path: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs at {} (needs root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (used, size) in bytes, from statvfs (`df`).
    pub fn usage(&self) -> (u64, u64) {
        let out = Command::new("df")
            .args(["-B1", "--output=used,size"])
            .arg(&self.path)
            .output()
            .expect("run df");
        let text = String::from_utf8_lossy(&out.stdout);
        let nums: Vec<u64> = text
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        (nums.first().copied().unwrap_or(0), nums.get(1).copied().unwrap_or(0))
    }

    /// Deletes everything on it (a lost state directory), keeping the
    /// mount point.
    pub fn wipe(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }

    /// Fills it: a file of every byte left (written until ENOSPC). Returns
    /// the filler; [`Filler::free`] (or dropping it) deletes it.
    pub fn fill(&self) -> Filler {
        let path = self.path.join("filler.bin");
        let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut filler = Filler { path, file, bytes: 0 };
        filler.top_up();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a process still has a file open): detach it now, freed
            // once the last user is gone.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// The file that fills a [`Tmpfs`]; deleted when dropped.
pub struct Filler {
    path: PathBuf,
    file: std::fs::File,
    /// Bytes written so far.
    pub bytes: u64,
}

impl Filler {
    /// Takes whatever space came free since (another tenant that keeps
    /// writing: RocksDB gives back the unused preallocated tail of a file
    /// it closes, and that must not be room for the next one). Returns the
    /// bytes added.
    pub fn top_up(&mut self) -> u64 {
        let before = self.bytes;
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0xA5u8; chunk];
            loop {
                match self.file.write(&buf) {
                    Ok(0) => break,
                    Ok(n) => self.bytes += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => panic!("filling {}: {e}", self.path.display()),
                }
            }
        }
        self.bytes - before
    }

    pub fn free(self) {}
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
