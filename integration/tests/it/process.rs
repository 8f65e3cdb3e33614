//! One server binary run as a real OS process, for the tests of what a process does on a
//! signal (graceful exits): start it on a fixed address, send it SIGTERM, wait for its exit,
//! read its log.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::meta_fixture::workspace_binary;

/// A free loopback port (so a restarted process can come back on the same address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A server process and the file its log goes to.
pub struct ServerProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `bin` (a binary of the package of the same name) with `args`, logging at info
    /// to `log`, one runtime worker.
    pub fn spawn(bin: &str, args: &[String], log: &Path) -> Self {
        let out = std::fs::File::create(log).expect("the log file can be created");
        let child = Command::new(workspace_binary(bin, bin))
            .args(args)
            .env("RUST_LOG", "info,openraft=warn")
            .env("REGISTRY_WORKER_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} starts: {e}"));
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Sends SIGTERM, as `docker stop` and Kubernetes do.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the process is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits for the process to exit; panics if it is still running after `timeout` or
    /// exited with a failure.
    pub async fn exits_cleanly(&mut self, timeout: Duration) {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "still running {timeout:?} after SIGTERM; log:\n{}",
                    self.log_text()
                )
            })
            .expect("wait on the child");
        assert!(
            status.success(),
            "exited with {status}; log:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Whether `addr` answers 2xx on `path` (the probe the container image runs).
pub async fn answers(addr: &str, path: &str) -> bool {
    registry_cli::health::check(&registry_cli::health::HealthArgs {
        addr: Some(addr.to_owned()),
        path: path.to_owned(),
        timeout_ms: 1_000,
    })
    .await
    .is_ok()
}
