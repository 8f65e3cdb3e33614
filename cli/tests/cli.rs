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
    let servers = slots.as_array().expect("servers");
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0]["data"]["primarySlots"], 256);
    assert_eq!(servers[0]["addr"], format!("127.0.0.1:{data}"));

    // The operator's screen: healthy, exit 0; with pushes off it says so and exits 3. Global
    // options work before the command, and the meta list fails over past a dead address.
    let metas = format!("127.0.0.1:{},127.0.0.1:{meta}", free_port());
    let status = ctl(&["--meta", &metas, "status"]).await;
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let screen = String::from_utf8_lossy(&status.stdout);
    assert!(
        screen.contains("no problems") && screen.contains("leader node 1"),
        "{screen}"
    );
    ok(&ctl(&["push", "off", "--meta", &metas]).await);
    let status = ctl(&["status", "--json", "--meta", &metas]).await;
    assert_eq!(status.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(report["pushEnabled"], false);
    ok(&ctl(&["push", "on", "--meta", &metas]).await);
    // An error is one line, even with backtraces asked for.
    let failed = Command::new(env!("CARGO_BIN_EXE_registryctl"))
        .args(["service", "svc.never", "--meta", &metas])
        .env("RUST_BACKTRACE", "1")
        .output()
        .await
        .expect("registryctl runs");
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: not_found"), "{stderr}");
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

/// Runs `registryctl` to completion with `args`.
async fn ctl(args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        WAIT,
        Command::new(env!("CARGO_BIN_EXE_registryctl"))
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("REGISTRY_KEY_FILE")
            .output(),
    )
    .await
    .expect("registryctl finishes within the deadline")
    .expect("registryctl runs")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "registryctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn spawn_ctl(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_registryctl"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("REGISTRY_KEY_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("registryctl starts")
}

/// The secure setup of `docs/security.md`, step by step, with the real binaries.
#[tokio::test]
async fn the_secure_setup_of_the_security_guide() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (cluster_secret, admin_key) = (path("cluster.secret"), path("admin.key"));
    let (orders_key, orders_key_2) = (path("orders.key"), path("orders-2.key"));
    let tls_dir = path("tls");
    let (ca, cert, cert_key) = (
        path("tls/ca.pem"),
        path("tls/server.pem"),
        path("tls/server-key.pem"),
    );

    // 1. A cluster secret and the first admin key.
    ok(&ctl(&["gen-secret", "--out", &cluster_secret]).await);
    ok(&ctl(&["gen-secret", "--key-id", "admin.0", "--out", &admin_key]).await);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&admin_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key file readable by others: {mode:o}");
    }

    // 2. A private CA and the servers' certificate.
    ok(&ctl(&["tls", "ca", "--out-dir", &tls_dir]).await);
    ok(&ctl(&[
        "tls",
        "cert",
        "--ca-dir",
        &tls_dir,
        "--name",
        "127.0.0.1",
        "--name",
        "localhost",
        "--out-dir",
        &tls_dir,
    ])
    .await);
    #[cfg(unix)]
    for private in ["tls/ca-key.pem", "tls/server-key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(private))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{private} readable by others: {mode:o}");
    }

    // 3. The servers, with auth and TLS on.
    let ports = (free_port(), free_port(), free_port());
    let mut cmd = standalone_on("127.0.0.1", &dir.path().join("data"), ports);
    let _registry = cmd
        .args(["--cluster-secret-file", &cluster_secret])
        .args(["--admin-key-file", &admin_key])
        .args(["--tls-cert", &cert, "--tls-key", &cert_key, "--tls-ca", &ca])
        .spawn()
        .expect("registry starts");
    let meta = format!("127.0.0.1:{}", ports.0);
    let session = format!("127.0.0.1:{}", ports.2);
    let admin = [
        "--key-file",
        admin_key.as_str(),
        "--tls-ca",
        ca.as_str(),
        "--meta",
        meta.as_str(),
    ];

    // The admin key works once the meta node has installed it.
    let deadline = Instant::now() + WAIT;
    loop {
        let out = ctl(&[&["acl", "list", "--json"][..], &admin[..]].concat()).await;
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "admin key never accepted: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Without TLS the same call fails.
    let plain = ctl(&["--key-file", &admin_key, "acl", "list", "--meta", &meta]).await;
    assert!(!plain.status.success(), "a plaintext call was answered");

    // 4. A principal for the orders application and its key.
    ok(&ctl(&[
        &[
            "acl",
            "put",
            "orders",
            "--publish",
            "com.acme.orders*",
            "--subscribe",
            "com.acme.*",
        ][..],
        &admin[..],
    ]
    .concat())
    .await);
    ok(&ctl(&[
        &["acl", "key", "create", "orders", "--out", &orders_key][..],
        &admin[..],
    ]
    .concat())
    .await);
    let listed: Value =
        serde_json::from_str(&ok(&ctl(
            &[&["acl", "list", "--json"][..], &admin[..]].concat()
        )
        .await))
        .expect("JSON");
    let keys = listed["principals"]["orders"]["keys"]
        .as_array()
        .expect("keys");
    assert_eq!(keys.len(), 1);
    let first_key_id = keys[0]["id"].as_str().expect("key id").to_string();
    assert!(
        !listed.to_string().contains(
            std::fs::read_to_string(&orders_key)
                .unwrap()
                .trim()
                .split_once(':')
                .unwrap()
                .1
        ),
        "acl list shows a secret"
    );

    // 5. The application publishes and subscribes with its key.
    let mut sub = spawn_ctl(&[
        "--key-file",
        &orders_key,
        "sub",
        "com.acme.orders",
        "--session",
        &session,
        "--tls-ca",
        &ca,
    ]);
    let mut lines = BufReader::new(sub.stdout.take().expect("piped")).lines();
    next_json(&mut lines, "the first push").await;
    let _publisher = spawn_ctl(&[
        "--key-file",
        &orders_key,
        "pub",
        "com.acme.orders",
        "10.0.0.1:8080",
        "--session",
        &session,
        "--tls-ca",
        &ca,
    ]);
    loop {
        let v = next_json(&mut lines, "the published address").await;
        if v["data"] == serde_json::json!(["10.0.0.1:8080"]) {
            break;
        }
    }

    // Refused: no key, a service not granted, the admin API with an application key.
    let anonymous = ctl(&[
        "sub",
        "com.acme.orders",
        "--session",
        &session,
        "--tls-ca",
        &ca,
    ])
    .await;
    assert!(!anonymous.status.success());
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("unauthenticated"),
        "{}",
        String::from_utf8_lossy(&anonymous.stderr)
    );
    let not_granted = spawn_ctl(&[
        "--key-file",
        &orders_key,
        "pub",
        "com.acme.payments",
        "10.6.6.6:1",
        "--session",
        &session,
        "--tls-ca",
        &ca,
    ]);
    let (status, stderr) = exit_of(not_granted).await;
    assert!(!status.success());
    assert!(stderr.contains("forbidden"), "{stderr}");
    let members = ctl(&[
        "--key-file",
        &orders_key,
        "--tls-ca",
        &ca,
        "members",
        "--meta",
        &meta,
    ])
    .await;
    assert!(
        !members.status.success(),
        "an application key read the view"
    );
    let members = ctl(&["--tls-ca", &ca, "members", "--meta", &meta]).await;
    assert!(!members.status.success(), "anyone read the view");
    ok(&ctl(&[&["members"][..], &admin[..]].concat()).await);

    // 6. Rotation: a second key, the application moves to it, the first is revoked.
    ok(&ctl(&[
        &["acl", "key", "create", "orders", "--out", &orders_key_2][..],
        &admin[..],
    ]
    .concat())
    .await);
    let mut sub_2 = spawn_ctl(&[
        "--key-file",
        &orders_key_2,
        "sub",
        "com.acme.orders",
        "--session",
        &session,
        "--tls-ca",
        &ca,
    ]);
    let mut lines_2 = BufReader::new(sub_2.stdout.take().expect("piped")).lines();
    loop {
        let v = next_json(&mut lines_2, "the address, over the second key").await;
        if v["data"] == serde_json::json!(["10.0.0.1:8080"]) {
            break;
        }
    }
    ok(&ctl(&[&["acl", "key", "revoke", &first_key_id][..], &admin[..]].concat()).await);
    // The first key's connections are closed and refused: its subscriber exits, and so
    // does the publisher that used it.
    let (status, stderr) = exit_of(sub).await;
    assert!(!status.success(), "a revoked key's subscriber kept running");
    assert!(stderr.contains("credential refused"), "{stderr}");
    let reused = ctl(&[
        "--key-file",
        &orders_key,
        "sub",
        "com.acme.orders",
        "--session",
        &session,
        "--tls-ca",
        &ca,
    ])
    .await;
    assert!(!reused.status.success(), "a revoked key connected");
    // The second key's subscriber is still served.
    let _publisher_2 = spawn_ctl(&[
        "--key-file",
        &orders_key_2,
        "pub",
        "com.acme.orders",
        "10.0.0.2:8080",
        "--session",
        &session,
        "--tls-ca",
        &ca,
    ]);
    loop {
        let v = next_json(&mut lines_2, "the second key's publication").await;
        let data = v["data"].as_array().cloned().unwrap_or_default();
        if data.contains(&serde_json::json!("10.0.0.2:8080")) {
            break;
        }
    }
}

/// `registry health`, the probe of the container image: 0 when the server answers 2xx on
/// the path, 1 when it answers otherwise or not at all.
#[tokio::test]
async fn registry_health_exits_zero_only_on_a_2xx_answer() {
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
    let health = |addr: String, path: &'static str| async move {
        Command::new(env!("CARGO_BIN_EXE_registry"))
            .args(["health", "--addr", &addr, "--path", path])
            .output()
            .await
            .expect("registry health runs")
    };
    let session_addr = format!("127.0.0.1:{session}");
    let started = Instant::now();
    loop {
        let out = health(session_addr.clone(), "/ready").await;
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("200"));
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the session never became ready: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for port in [meta, data] {
        let out = health(format!("127.0.0.1:{port}"), "/health").await;
        assert!(out.status.success(), "port {port} is healthy");
    }
    let missing = health(session_addr, "/no-such-page").await;
    assert_eq!(missing.status.code(), Some(1), "a 404 is not healthy");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    let closed = health(format!("127.0.0.1:{}", free_port()), "/health").await;
    assert_eq!(
        closed.status.code(),
        Some(1),
        "nobody listening is not healthy"
    );
}

/// A server listening on every interface must be told the address to advertise: the
/// wildcard would otherwise go into the membership, where no peer can reach it.
#[tokio::test]
async fn a_wildcard_listener_without_advertise_is_refused() {
    for role in ["meta", "data", "session"] {
        let out = Command::new(env!("CARGO_BIN_EXE_registry"))
            .args([role, "--listen", "0.0.0.0:0", "--insecure"])
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("registry runs");
        assert!(!out.status.success(), "{role} started on a wildcard");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--advertise"), "{role}: {err}");
    }
}
