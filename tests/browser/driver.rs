//! Headless Chromium for the browser tests, driven through chromedriver by fantoccini: sign-in,
//! forms, downloads, screenshots, and axe-core's accessibility check of each page.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them) and axe-core from
//! the npm registry (`tests/browser/package.json`, installed on first use with `npm ci`).

#![allow(dead_code)] // each test binary uses a part of it

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::common::KillOnDrop;

/// The Tab and Enter keys, for `keys`.
pub const TAB: &str = "\u{e004}";
pub const ENTER: &str = "\u{e007}";

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

/// axe-core's script, installed from the npm registry once per test process.
fn axe() -> &'static str {
    static AXE: OnceLock<String> = OnceLock::new();
    AXE.get_or_init(|| {
        let script = Path::new(DIR).join("node_modules/axe-core/axe.min.js");
        if !script.exists() {
            let installed = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefix", DIR])
                .status()
                .expect("npm runs (Node.js is on this machine)");
            assert!(installed.success(), "npm ci in tests/browser failed");
        }
        std::fs::read_to_string(&script).expect("axe-core is installed")
    })
}

/// Where screenshots go: `target/tmp/screenshots` (copy the ones the README shows to `docs/`).
pub fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver's browser log (not in the W3C protocol, so not in fantoccini's API).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// A signed-out headless Chromium looking at one service.
pub struct Browser {
    pub client: Client,
    base: String,
    /// Where the browser saves downloads.
    pub downloads: PathBuf,
    _driver: KillOnDrop,
}

impl Browser {
    pub async fn start(base: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
        let driver = KillOnDrop(driver);
        let downloads =
            std::env::temp_dir().join(format!("erasure-downloads-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&downloads).unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--lang=en"],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                }
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        });
        let caps = match caps {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let mut last = None;
        for _ in 0..100 {
            let builder =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await;
            match builder {
                Ok(client) => {
                    return Browser {
                        client,
                        base: base.trim_end_matches('/').to_string(),
                        downloads,
                        _driver: driver,
                    };
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no WebDriver session: {last:?}");
    }

    pub async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    /// The page's path and query.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    pub async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// The page's source once it contains `text` (navigations finish in their own time).
    pub async fn wait_for(&self, text: &str) -> String {
        for _ in 0..150 {
            let source = self.source().await;
            if source.contains(text) {
                return source;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the page {} never showed {text:?}: {}",
            self.path().await,
            self.source().await
        );
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let found = self
            .client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => panic!("no element {css} on {}: {e}", self.path().await),
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// Types into a field (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn select(&self, css: &str, value: &str) {
        self.find(css).await.select_by_value(value).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types on whatever has the focus, as a keyboard does (`TAB`, `ENTER`, text).
    pub async fn keys(&self, text: &str) {
        let focused = self.client.active_element().await.unwrap();
        focused.send_keys(text).await.unwrap();
    }

    /// Whether the focus is on an element matching `css`.
    pub async fn focused(&self, css: &str) -> bool {
        let found = self
            .client
            .execute(
                "return document.activeElement !== null && document.activeElement.matches(arguments[0]);",
                vec![json!(css)],
            )
            .await
            .unwrap();
        found == json!(true)
    }

    /// Presses Tab until the focus is on `css`; panics after `max` presses.
    pub async fn tab_to(&self, css: &str, max: usize) {
        for _ in 0..max {
            self.keys(TAB).await;
            if self.focused(css).await {
                return;
            }
        }
        panic!(
            "{max} Tab presses never reached {css} on {}",
            self.path().await
        );
    }

    /// Signs in with an API key through the sign-in form; waits for the status page.
    pub async fn sign_in(&self, key: &str) {
        self.open("/").await;
        self.fill("input[name=key]", key).await;
        self.click("button[type=submit]").await;
        self.wait_for("Requests by state").await;
    }

    /// Signs out with the header's button.
    pub async fn sign_out(&self) {
        self.click("header form[action='/logout'] button").await;
        self.wait_for("API key").await;
    }

    /// axe-core's serious and critical violations on this page: none allowed.
    pub async fn assert_accessible(&self) {
        self.client.execute(axe(), vec![]).await.unwrap();
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']}).then(r => done(
                   r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' +
                          v.nodes.map(n => n.target.join(' ')).join(', '))),
                   e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .unwrap();
        let violations: Vec<String> = serde_json::from_value(found).unwrap();
        assert!(
            violations.is_empty(),
            "accessibility of {}: {violations:#?}",
            self.path().await
        );
    }

    /// Saves a screenshot of the viewport as `<name>.png` under `screenshots()`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
    }

    /// Errors in the browser's console since the last call (CSP violations, failed loads).
    pub async fn console_errors(&self) -> Vec<String> {
        let logs = self.client.issue_cmd(BrowserLog).await.unwrap();
        logs.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A file the browser downloaded whose name starts with `prefix`, once complete.
    pub async fn downloaded(&self, prefix: &str) -> PathBuf {
        for _ in 0..200 {
            let done = std::fs::read_dir(&self.downloads)
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with(prefix) && !name.ends_with(".crdownload")
                });
            if let Some(path) = done {
                return path;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no download {prefix}* in {}: {:?}",
            self.downloads.display(),
            std::fs::read_dir(&self.downloads)
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect::<Vec<_>>()
        );
    }

    pub async fn quit(self) {
        let _ = self.client.close().await;
        let _ = std::fs::remove_dir_all(&self.downloads);
    }
}
