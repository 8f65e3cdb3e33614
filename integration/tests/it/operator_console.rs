//! The operator console in a real browser: headless Chromium, driven over WebDriver by a
//! chromedriver the test starts, against a cluster with auth on (so the page signs every admin
//! call with WebCrypto as the Rust signer does). Asserts what the page shows (members, the
//! slot picture, a service's publishers and subscribers, an API error) and that its push
//! switch changes the cluster. Leaves a screenshot in `target/console.png`.
//!
//! Skipped, saying why, when `chromedriver` or a Chromium is not on the PATH
//! (`apt-get install chromium chromium-driver`; `.ci/run` installs them).

use std::future::Future;
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client_sdk::{DatumUpdate, Subscriber};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use integration::cluster::{Cluster, ClusterConfig};
use registry_common::acl::Permissions;
use registry_common::proto::admin::{ClusterStatus, ServiceReport};
use serde_json::{json, Value};

/// Longest any one condition may take to hold (the machine may be busy).
const WAIT: Duration = Duration::from_secs(20);
/// How often a condition on the page is checked.
const POLL: Duration = Duration::from_millis(100);

/// The first of `names` found on the PATH.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(binary: &Path) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        // Ready once its status says so.
        let http = reqwest::Client::new();
        let status = format!("{}/status", driver.url);
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = match http.get(&status).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                return Ok(driver);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "chromedriver not ready on {status} after {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, failing with `what` (and the last observation)
/// after [`WAIT`].
async fn wait_page<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; last seen: {last}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `script` in the page and returns its value.
async fn js(page: &Client, script: &str) -> Result<Value, String> {
    page.execute(script, vec![])
        .await
        .map_err(|e| format!("script failed: {e}"))
}

async fn click(page: &Client, id: &str) {
    page.find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click #{id}: {e}"));
}

async fn type_into(page: &Client, id: &str, text: &str) {
    let input = page
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id}: {e}"));
    input.clear().await.unwrap_or_else(|e| panic!("#{id}: {e}"));
    input
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("cannot type into #{id}: {e}"));
}

/// Waits until element `id` is shown (failing at once on an error banner).
async fn wait_shown(page: &Client, id: &str) {
    wait_page(&format!("#{id} shown"), || async {
        no_error(page).await?;
        let shown = js(
            page,
            &format!("return !document.getElementById('{id}').hidden"),
        )
        .await?;
        Ok((shown == true).then_some(()))
    })
    .await
}

/// Fails at once if the page shows an error banner.
async fn no_error(page: &Client) -> Result<(), String> {
    let e = js(
        page,
        "const e = document.getElementById('error'); return e.hidden ? null : e.textContent",
    )
    .await?;
    match e {
        Value::Null => Ok(()),
        e => panic!("the page shows an error: {e}"),
    }
}

/// Signs in on the page shown (which asks for a key first).
async fn sign_in(page: &Client, admin: &registry_common::auth::Credential) {
    wait_shown(page, "signin").await;
    type_into(page, "key-id", &admin.key_id).await;
    type_into(
        page,
        "key-secret",
        std::str::from_utf8(admin.secret.expose()).expect("a text secret"),
    )
    .await;
    click(page, "sign-in").await;
    wait_shown(page, "signed-in").await;
}

/// Waits until the page shows pushes `state` ("on" or "off").
async fn wait_push_state(page: &Client, state: &str) {
    wait_page(&format!("pushes {state} on the page"), || async {
        no_error(page).await?;
        let shown = js(
            page,
            "return document.getElementById('push-state').dataset.state",
        )
        .await?;
        Ok((shown == state).then_some(()))
    })
    .await
}

async fn cluster_status(cluster: &Cluster, meta: &str) -> ClusterStatus {
    cluster
        .admin_http()
        .get(meta, "/admin/v1/status", WAIT)
        .await
        .expect("cluster status")
}

async fn next_update(sub: &mut Subscriber, what: &str, pred: impl Fn(&DatumUpdate) -> bool) {
    integration::wait::update(sub, what, WAIT, pred).await
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn the_console_shows_the_cluster_and_switches_pushes_in_a_browser() {
    let Some(chromedriver) = on_path(&["chromedriver"]) else {
        eprintln!(
            "skipping the console browser test: no `chromedriver` on the PATH \
             (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let Some(chromium) = on_path(&["chromium", "chromium-browser", "google-chrome"]) else {
        eprintln!(
            "skipping the console browser test: no Chromium on the PATH \
             (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let started = Instant::now();

    let mut config = ClusterConfig::new(3, 2, 2).with_auth().expect("auth files");
    // Elections calm enough for a busy machine: the page's writes go to the leader.
    config.meta.raft_heartbeat_ms = 100;
    config.meta.raft_election_ms = 1_000;
    let cluster = Cluster::start(config).await.expect("cluster");
    let admin = cluster.config.auth.as_ref().expect("auth on").admin.clone();
    let leader = wait_page("a meta leader", || async {
        Ok(cluster
            .metas
            .iter()
            .find_map(|m| m.server().raft().status().leader_addr))
    })
    .await;

    // The page itself is public; the data it shows is not.
    let plain = reqwest::Client::new();
    let page_status = plain
        .get(format!("http://{leader}/console/"))
        .send()
        .await
        .expect("GET /console/")
        .status();
    assert_eq!(page_status, 200);
    let unsigned = plain
        .get(format!("http://{leader}/admin/v1/status"))
        .send()
        .await
        .expect("GET /admin/v1/status")
        .status();
    assert_eq!(unsigned, 401, "the admin API answered an unsigned call");

    // Services published through the SDK with an application key.
    let app = cluster
        .principal(
            "console-app",
            Permissions {
                publish: vec!["svc.console.*".into()],
                subscribe: vec!["svc.console.*".into()],
                admin: false,
            },
        )
        .await
        .expect("application key");
    let publisher_0 = cluster.client_with(0, &app).await.expect("client 0");
    let publisher_1 = cluster.client_with(1, &app).await.expect("client 1");
    let alpha_1 = publisher_0
        .publish("svc.console.alpha", vec!["10.1.0.1:8080".into()])
        .await
        .expect("publish");
    let _alpha_2 = publisher_1
        .publish("svc.console.alpha", vec!["10.1.0.2:8080".into()])
        .await
        .expect("publish");
    let _beta = publisher_1
        .publish("svc.console.beta", vec!["10.2.0.1:9090".into()])
        .await
        .expect("publish");
    let mut sub = publisher_1
        .subscribe("svc.console.alpha")
        .await
        .expect("subscribe");
    next_update(&mut sub, "both alpha publishers", |u| u.data.len() == 2).await;

    let driver = Driver::start(&chromedriver).await.expect("chromedriver");
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,2200",
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let page = tokio::time::timeout(
        Duration::from_secs(60),
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url),
    )
    .await
    .expect("the browser did not start within 60 s")
    .expect("a WebDriver session");

    // The browser is closed whatever happens, then the outcome reported.
    let outcome = AssertUnwindSafe(drive(&page, &cluster, &leader, &admin, &alpha_1, &mut sub))
        .catch_unwind()
        .await;
    let _ = page.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    eprintln!("console browser test took {:?}", started.elapsed());
}

async fn drive(
    page: &Client,
    cluster: &Cluster,
    leader: &str,
    admin: &registry_common::auth::Credential,
    alpha_1: &client_sdk::Publisher,
    sub: &mut Subscriber,
) {
    page.goto(&format!("http://{leader}/console/"))
        .await
        .expect("open the console");

    // Auth is on: the page asks for a key before it shows anything.
    sign_in(page, admin).await;

    // Topology: three meta nodes, one marked leader; every data and session server.
    let mut want: Vec<String> = cluster
        .datas
        .iter()
        .map(|d| d.server().id().to_string())
        .chain(cluster.sessions.iter().map(|s| s.server().id().to_string()))
        .collect();
    want.sort();
    let addrs: Vec<String> = cluster
        .datas
        .iter()
        .map(|d| d.addr.to_string())
        .chain(cluster.sessions.iter().map(|s| s.addr.to_string()))
        .collect();
    wait_page("every member listed and ready", || async {
        no_error(page).await?;
        let rows = js(
            page,
            "return Array.from(document.querySelectorAll('[data-testid=member-row]'))
                .map(r => [r.dataset.memberId, r.querySelector('.badge').textContent])",
        )
        .await?;
        let shown: Vec<(String, String)> =
            serde_json::from_value(rows.clone()).map_err(|e| format!("{rows}: {e}"))?;
        let ids = sorted(shown.iter().map(|(id, _)| id.clone()).collect());
        let ready = shown.iter().all(|(_, health)| health == "ready");
        if ids == want && ready {
            Ok(Some(()))
        } else {
            Err(format!("members shown: {rows}"))
        }
    })
    .await;
    let text = js(page, "return document.body.innerText").await.unwrap();
    let text = text.as_str().unwrap_or_default();
    for addr in &addrs {
        assert!(text.contains(addr.as_str()), "{addr} not on the page");
    }
    let meta = js(
        page,
        "return [document.querySelectorAll('[data-testid=meta-node]').length,
                 document.querySelectorAll('[data-testid=leader-mark]').length]",
    )
    .await
    .unwrap();
    assert_eq!(meta, json!([3, 1]), "meta nodes, leader marks");

    // The slot picture: every slot a cell, coloured by its primary, one colour per server.
    let cells = js(
        page,
        "return Array.from(document.querySelectorAll('[data-testid=slot-cell]'))
            .map(c => [c.dataset.primary, c.getAttribute('fill')])",
    )
    .await
    .unwrap();
    let cells: Vec<(String, String)> = serde_json::from_value(cells).unwrap();
    assert_eq!(cells.len(), 256);
    let mut colour_of = std::collections::BTreeMap::new();
    for (primary, fill) in &cells {
        let first = colour_of.entry(primary.clone()).or_insert(fill.clone());
        assert_eq!(first, fill, "slots of {primary} in two colours");
    }
    let datas: Vec<String> = sorted(
        cluster
            .datas
            .iter()
            .map(|d| d.server().id().to_string())
            .collect(),
    );
    assert_eq!(colour_of.keys().cloned().collect::<Vec<_>>(), datas);
    let colours: std::collections::BTreeSet<_> = colour_of.values().collect();
    assert_eq!(colours.len(), datas.len(), "two servers share a colour");
    let legend = js(
        page,
        "return document.querySelectorAll('[data-testid=legend-item]').length",
    )
    .await
    .unwrap();
    assert_eq!(legend, json!(datas.len()));

    // An unknown service: the API's typed error, shown on the page.
    type_into(page, "service-data-id", "svc.console.nothing").await;
    click(page, "service-search").await;
    wait_page("the not_found error shown", || async {
        let code = js(
            page,
            "const e = document.getElementById('error'); return e.hidden ? null : e.dataset.code",
        )
        .await?;
        Ok((code == "not_found").then_some(()))
    })
    .await;
    click(page, "error-close").await;

    // A service: its publishers' data, owning sessions and client addresses, and the
    // subscriber with what it acknowledged (searched again until the ack is in).
    type_into(page, "service-data-id", "svc.console.alpha").await;
    let service = wait_page("the publishers and an up-to-date subscriber", || async {
        click(page, "service-search").await;
        let shown = js(
            page,
            "if (document.getElementById('service-result').hidden) return null;
             const cells = (q) => Array.from(document.querySelectorAll(q)).map(c => c.textContent);
             return {
               data: cells('[data-testid=publisher-data]'),
               rows: cells('[data-testid=publisher-row]'),
               acked: Array.from(document.querySelectorAll('[data-testid=subscriber-row] td:nth-child(5)'))
                 .map(c => [c.textContent, c.classList.contains('ok')]),
             }",
        )
        .await?;
        if shown.is_null() {
            return Ok(None);
        }
        let up_to_date = shown["acked"]
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0][1] == true);
        Ok(up_to_date.then_some(shown))
    })
    .await;
    assert_eq!(
        sorted(serde_json::from_value(service["data"].clone()).unwrap()),
        vec!["10.1.0.1:8080", "10.1.0.2:8080"]
    );
    let report: ServiceReport = cluster
        .admin_http()
        .get(leader, "/admin/v1/services/svc.console.alpha", WAIT)
        .await
        .unwrap();
    let rows = service["rows"].to_string();
    for p in &report.publishers {
        assert!(rows.contains(&p.client_id), "client id of {p:?}");
        let client = p.client_addr.as_deref().expect("a client address");
        assert!(rows.contains(client), "client address of {p:?}");
    }
    for s in &cluster.sessions {
        let owns = report
            .publishers
            .iter()
            .any(|p| p.session == *s.server().id());
        assert_eq!(owns, rows.contains(&s.addr.to_string()), "owner {}", s.addr);
    }
    let acked = report.subscribers[0].acked_version.expect("an ack");
    assert_eq!(
        service["acked"][0][0],
        json!(acked.to_string()),
        "exact version"
    );

    // Pushes off through the page (it asks first): the cluster holds changes back.
    click(page, "push-off").await;
    wait_shown(page, "confirm").await;
    click(page, "confirm-yes").await;
    wait_page("pushes off in the cluster and on the page", || async {
        no_error(page).await?;
        let off = !cluster_status(cluster, leader).await.push_enabled
            && cluster
                .sessions
                .iter()
                .all(|s| !s.server().state().pusher.is_enabled());
        let shown = js(
            page,
            "return document.getElementById('push-state').dataset.state",
        )
        .await?;
        Ok((off && shown == "off").then_some(()))
    })
    .await;
    alpha_1
        .republish(vec!["10.1.0.9:8080".into()])
        .await
        .expect("republish");
    wait_page(
        "the change held back at the subscriber's session",
        || async {
            let r: ServiceReport = cluster
                .admin_http()
                .get(leader, "/admin/v1/services/svc.console.alpha", WAIT)
                .await
                .map_err(|e| e.to_string())?;
            let held = r.subscribers.first().and_then(|s| s.pending_version);
            let primary = r.holders.iter().find_map(|h| h.version);
            Ok((held.is_some() && held == primary).then_some(()))
        },
    )
    .await;
    assert!(
        sub.latest()
            .is_some_and(|u| !u.data.iter().any(|d| d == "10.1.0.9:8080")),
        "pushed while pushes were off"
    );
    wait_page("the problem listed", || async {
        let problems = js(
            page,
            "return document.getElementById('problems').textContent",
        )
        .await?;
        Ok(problems
            .as_str()
            .is_some_and(|p| p.contains("switched off"))
            .then_some(()))
    })
    .await;

    // Writes go to the leader: a follower's console sends none (it could not: browsers
    // repeat a request answered 421 not_leader, as a replay) and links to the leader's.
    let follower = cluster
        .metas
        .iter()
        .map(|m| m.addr.to_string())
        .find(|a| a != leader)
        .expect("a follower");
    page.goto(&format!("http://{follower}/console/"))
        .await
        .expect("open a follower's console");
    sign_in(page, admin).await;
    wait_push_state(page, "off").await;
    let note = js(
        page,
        "const a = document.getElementById('leader-link');
         return [document.getElementById('leader-note').hidden, a.hidden ? null : a.href,
                 document.getElementById('push-on').disabled]",
    )
    .await
    .unwrap();
    assert_eq!(
        note,
        json!([false, format!("http://{leader}/console/"), true]),
        "on {follower}: note hidden, link to the leader, push-on disabled"
    );
    // Following the link: the leader's console, still signed in (the tab kept the key for
    // that address), with its switches enabled.
    click(page, "leader-link").await;
    wait_shown(page, "signed-in").await;
    wait_push_state(page, "off").await;
    let enabled = js(
        page,
        "return [document.getElementById('leader-note').hidden,
                 !document.getElementById('push-on').disabled]",
    )
    .await
    .unwrap();
    assert_eq!(enabled, json!([true, true]), "the leader's console");

    // On again: the subscriber gets the newest.
    click(page, "push-on").await;
    next_update(sub, "the change once pushes are on", |u| {
        u.data.iter().any(|d| d == "10.1.0.9:8080")
    })
    .await;
    assert!(cluster_status(cluster, leader).await.push_enabled);

    // The push chart has a line of several points.
    wait_page("the push chart drawn", || async {
        no_error(page).await?;
        let points = js(
            page,
            "return [document.getElementById('push-chart').dataset.points,
                     document.getElementById('push-state').dataset.state,
                     document.querySelectorAll('[data-testid=push-rate-line]').length]",
        )
        .await?;
        let n: usize = points[0].as_str().unwrap_or("0").parse().unwrap_or(0);
        Ok((n >= 3 && points[1] == "on" && points[2] == 1).then_some(()))
    })
    .await;

    // The service again, as it is now, for the screenshot.
    type_into(page, "service-data-id", "svc.console.alpha").await;
    click(page, "service-search").await;
    wait_page("the new data on the page", || async {
        no_error(page).await?;
        let data = js(
            page,
            "return Array.from(document.querySelectorAll('[data-testid=publisher-data]'))
                .map(c => c.textContent)",
        )
        .await?;
        let data: Vec<String> = serde_json::from_value(data).map_err(|e| e.to_string())?;
        Ok((sorted(data) == ["10.1.0.2:8080", "10.1.0.9:8080"]).then_some(()))
    })
    .await;

    let shot = page.screenshot().await.expect("a screenshot");
    // The workspace's target/, wherever CARGO_TARGET_DIR points.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = manifest.parent().unwrap_or(manifest).join("target");
    std::fs::create_dir_all(&target).expect("create target/");
    let out = target.join("console.png");
    std::fs::write(&out, shot).expect("write the screenshot");
    eprintln!("console screenshot: {}", out.display());
}
