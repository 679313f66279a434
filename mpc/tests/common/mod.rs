//! Helpers shared by the QUIC integration tests (`transport.rs`, `securesum.rs`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sotto_mpc::transport::TransportOptions;

/// Upper bound on any single test.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Runs `f`, failing the test if it takes longer than [`TEST_LIMIT`].
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test exceeded its time limit")
}

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sotto-mpc-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Short timeouts, so that a broken test fails fast.
pub fn options() -> TransportOptions {
    TransportOptions {
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(10),
        keep_alive: Duration::from_secs(1),
        write_timeout: Duration::from_secs(5),
        ..TransportOptions::default()
    }
}
