//! The real binaries: `registry standalone`, `registryctl pub` and `registryctl sub`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn interrupt(child: &Child) {
    let pid = child.id().expect("child is running");
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>, what: &str) -> Value {
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no line within {WAIT:?} waiting for {what}"))
        .expect("stdout readable")
        .unwrap_or_else(|| panic!("registryctl sub exited waiting for {what}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test]
async fn registryctl_pub_and_sub_against_registry_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data, session) = (free_port(), free_port(), free_port());
    let _registry = Command::new(env!("CARGO_BIN_EXE_registry"))
        .arg("standalone")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--meta-port", &meta.to_string()])
        .args(["--data-port", &data.to_string()])
        .args(["--session-port", &session.to_string()])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("registry starts");
    let session_addr = format!("127.0.0.1:{session}");

    // `registryctl sub` retries its connection for up to its connect timeout, so it can
    // start while the standalone is still coming up.
    let mut sub = Command::new(env!("CARGO_BIN_EXE_registryctl"))
        .args(["sub", "svc.cli", "--session", &session_addr])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("registryctl sub starts");
    let mut lines = BufReader::new(sub.stdout.take().expect("piped")).lines();
    let first = next_json(&mut lines, "the first push").await;
    assert_eq!(
        first["dataInfoId"],
        "svc.cli#@#DEFAULT_INSTANCE_ID#@#DEFAULT_GROUP"
    );
    assert!(first["version"].is_u64());

    let publisher = Command::new(env!("CARGO_BIN_EXE_registryctl"))
        .args([
            "pub",
            "svc.cli",
            "10.9.9.9:8080",
            "--session",
            &session_addr,
        ])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("registryctl pub starts");
    let started = Instant::now();
    let with = loop {
        let v = next_json(&mut lines, "a push with the published data").await;
        if v["data"] == serde_json::json!(["10.9.9.9:8080"]) {
            break v;
        }
        assert!(started.elapsed() < WAIT);
    };

    interrupt(&publisher);
    let without = loop {
        let v = next_json(&mut lines, "a push without the data").await;
        if v["data"] == serde_json::json!([]) {
            break v;
        }
    };
    assert!(without["version"].as_u64() > with["version"].as_u64());
    let mut publisher = publisher;
    let status = tokio::time::timeout(WAIT, publisher.wait())
        .await
        .expect("registryctl pub exits after Ctrl-C")
        .expect("wait works");
    assert!(status.success(), "registryctl pub exit status: {status}");
    interrupt(&sub);

    // The operator's view of the data tier: one server holding every slot.
    let out = Command::new(env!("CARGO_BIN_EXE_registryctl"))
        .args([
            "data",
            "slots",
            "--json",
            "--meta",
            &format!("127.0.0.1:{meta}"),
        ])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("registryctl data slots runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let slots: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let servers = slots["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0]["status"]["primarySlots"], 256);
    assert_eq!(servers[0]["addr"], format!("127.0.0.1:{data}"));
}

/// Waits for `child` to exit; returns its status and what it wrote to stderr.
async fn exit_of(child: Child) -> (std::process::ExitStatus, String) {
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("exits within the deadline")
        .expect("waitable");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn standalone_on(host: &str, dir: &std::path::Path, ports: (u16, u16, u16)) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_registry"));
    cmd.arg("standalone")
        .arg("--data-dir")
        .arg(dir)
        .args(["--host", host])
        .args(["--meta-port", &ports.0.to_string()])
        .args(["--data-port", &ports.1.to_string()])
        .args(["--session-port", &ports.2.to_string()])
        .env("RUST_LOG", "warn")
        .env_remove("REGISTRY_INSECURE")
        .env_remove("REGISTRY_CLUSTER_SECRET_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn a_public_address_without_auth_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port());
    let refused = standalone_on("0.0.0.0", dir.path(), ports)
        .spawn()
        .expect("registry runs");
    let (status, stderr) = exit_of(refused).await;
    assert!(!status.success(), "started open on 0.0.0.0: {stderr}");
    assert!(stderr.contains("--insecure"), "message: {stderr}");

    let mut open = standalone_on("0.0.0.0", dir.path(), ports);
    let _open = open.arg("--insecure").spawn().expect("registry runs");
    let health = format!("http://127.0.0.1:{}/health", ports.2);
    let deadline = Instant::now() + WAIT;
    loop {
        match reqwest::get(&health).await {
            Ok(r) if r.status().is_success() => break,
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("--insecure standalone not healthy: {other:?}"),
        }
    }
}
