//! A real OpenID Provider for the console's sign-in tests — oidc-provider from the npm registry
//! (`tests/oidc/provider.mjs`, pinned by `tests/oidc/package-lock.json` and installed with
//! `npm ci` on first use, as `tests/browser` installs axe-core) — and a fake issuer the tests
//! control for forged ID tokens (`tests/oidc/forge.mjs`). Each runs on 127.0.0.1 on a free port
//! and is stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use erasure::config::{ConsoleSettings, OidcSettings};
use erasure::secrets::Secret;

use super::console::{Console, csrf_of};
use super::{KillOnDrop, Options, TestApp};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc");

pub const CLIENT_ID: &str = "erasure-console";
pub const CLIENT_SECRET: &str = "erasure-console-test-secret";
/// The tests' `ERASURE_OIDC_ROLES`.
pub const ROLES: &str =
    "privacy-officers=requester,dpo=approver,internal-audit=auditor,platform=admin";

/// oidc-provider (and jose, which the fake issuer uses), installed once per test process.
fn installed() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if !Path::new(DIR)
            .join("node_modules/oidc-provider/package.json")
            .exists()
        {
            let ok = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefix", DIR])
                .status()
                .expect("npm runs (Node.js is on this machine)");
            assert!(ok.success(), "npm ci in tests/oidc failed");
        }
    });
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Node.js server of `tests/oidc`: the provider or the fake issuer.
pub struct Node {
    pub issuer: String,
    pub port: u16,
    script: &'static str,
    env: Vec<(String, String)>,
    child: Option<KillOnDrop>,
}

impl Node {
    fn start(script: &'static str, env: Vec<(String, String)>) -> Node {
        installed();
        let port = free_port();
        let mut node = Node {
            issuer: format!("http://127.0.0.1:{port}"),
            port,
            script,
            env,
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let mut child = Command::new("node")
            .arg(Path::new(DIR).join(self.script))
            .env("PORT", self.port.to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(
            first.starts_with("listening"),
            "{} did not start: {first}",
            self.script
        );
        // Keep reading (and dropping) what it prints, so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(KillOnDrop(child));
    }

    /// The real provider, with the console's client registered for `app_base`.
    pub fn provider(app_base: &str) -> Node {
        Node::start(
            "provider.mjs",
            vec![
                (
                    "REDIRECT_URI".into(),
                    format!("{app_base}/auth/oidc/callback"),
                ),
                ("POST_LOGOUT_URI".into(), format!("{app_base}/")),
            ],
        )
    }

    /// The fake issuer.
    pub fn forger() -> Node {
        Node::start("forge.mjs", vec![])
    }

    /// Stops and starts it again on the same port: the provider makes a new signing key (a
    /// rotation) and forgets its sessions.
    pub fn restart(&mut self) {
        self.child = None;
        self.spawn();
    }
}

/// The console's sign-in through `issuer`, with the tests' client and role map.
pub fn settings(issuer: &str, base: &str, client_id: &str, secret: &str) -> ConsoleSettings {
    ConsoleSettings {
        session_hours: 8,
        key_sign_in: false,
        oidc: Some(OidcSettings {
            issuer: issuer.to_string(),
            client_id: client_id.to_string(),
            client_secret: Some(Secret::new(secret)),
            redirect_url: format!("{base}/auth/oidc/callback"),
            public_url: base.to_string(),
            scopes: ["openid", "profile", "email", "groups"]
                .map(String::from)
                .to_vec(),
            role_claim: "groups".into(),
            roles: erasure::config::parse_role_map(ROLES).unwrap(),
            display_name: "Test IdP".into(),
        }),
    }
}

/// The service behind the real provider: the app's port is chosen first, so that the provider
/// knows its redirect URI.
pub async fn app_with_provider(options: Options) -> (Node, TestApp) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let provider = Node::provider(&base);
    let app = TestApp::spawn(Options {
        bind: format!("127.0.0.1:{port}"),
        console: settings(&provider.issuer, &base, CLIENT_ID, CLIENT_SECRET),
        ..options
    })
    .await;
    (provider, app)
}

/// A browser over HTTP: a cookie jar, redirects followed or not.
pub struct Browser {
    pub jar: std::sync::Arc<reqwest::cookie::Jar>,
    /// Follows redirects.
    pub http: reqwest::Client,
    /// Does not.
    pub step: reqwest::Client,
    pub base: String,
}

/// A page: status, final URL, body.
pub struct Page {
    pub status: u16,
    pub url: String,
    pub body: String,
}

/// The first `<form ... action="...">` of a page.
fn form_action(page: &str) -> String {
    let at = page.find("action=\"").expect("a form") + 8;
    page[at..at + page[at..].find('"').unwrap()]
        .replace("&amp;", "&")
        .to_string()
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let build = |redirects| {
            reqwest::Client::builder()
                .cookie_provider(jar.clone())
                .redirect(redirects)
                .build()
                .unwrap()
        };
        Browser {
            http: build(reqwest::redirect::Policy::limited(20)),
            step: build(reqwest::redirect::Policy::none()),
            jar,
            base: base.to_string(),
        }
    }

    async fn page(r: reqwest::Response) -> Page {
        Page {
            status: r.status().as_u16(),
            url: r.url().to_string(),
            body: r.text().await.unwrap(),
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        Self::page(self.http.get(url).send().await.unwrap()).await
    }

    async fn post_form(&self, url: &str, fields: &[(&str, &str)]) -> Page {
        Self::page(self.http.post(url).form(fields).send().await.unwrap()).await
    }

    /// Signs in as `login` on the provider's own pages (its login form, then its consent form
    /// when it asks): the page the console answers at the end.
    pub async fn sign_in(&self, provider: &Node, login: &str) -> Page {
        let mut page = self.get(&format!("{}/auth/oidc/login", self.base)).await;
        for _ in 0..4 {
            if !page.url.starts_with(&provider.issuer) {
                break;
            }
            assert_eq!(page.status, 200, "{}", page.body);
            let action = form_action(&page.body);
            let url = if action.starts_with("http") {
                action
            } else {
                format!("{}{action}", provider.issuer)
            };
            page = if page.body.contains("name=\"login\"") {
                self.post_form(
                    &url,
                    &[("prompt", "login"), ("login", login), ("password", "any")],
                )
                .await
            } else if page.body.contains("value=\"consent\"") {
                self.post_form(&url, &[("prompt", "consent")]).await
            } else {
                panic!("an unexpected page of the provider: {}", page.body)
            };
        }
        page
    }

    /// Goes through the provider's pages as `login` without following the provider's redirect
    /// back: the callback URL it sends the browser to.
    pub async fn callback_of(&self, provider: &Node, login: &str) -> String {
        let mut url = format!("{}/auth/oidc/login", self.base);
        for _ in 0..20 {
            let r = self.step.get(&url).send().await.unwrap();
            let r = if r.status().is_redirection() {
                r
            } else {
                let body = r.text().await.unwrap();
                let action = form_action(&body);
                let fields: Vec<(&str, &str)> = if body.contains("name=\"login\"") {
                    vec![("prompt", "login"), ("login", login), ("password", "any")]
                } else {
                    vec![("prompt", "consent")]
                };
                let action = if action.starts_with("http") {
                    action
                } else {
                    format!("{}{action}", provider.issuer)
                };
                self.step.post(action).form(&fields).send().await.unwrap()
            };
            let location = r.headers()["location"].to_str().unwrap().to_string();
            let location = if location.starts_with('/') {
                format!("{}{location}", provider.issuer)
            } else {
                location
            };
            if location.starts_with(&self.base) && location.contains("/auth/oidc/callback") {
                return location;
            }
            url = location;
        }
        panic!("the provider never sent the browser back")
    }

    /// The console's session cookie, when this browser holds one.
    pub fn session_cookie(&self) -> Option<String> {
        use reqwest::cookie::CookieStore;
        let header = self
            .jar
            .cookies(&self.base.parse::<reqwest::Url>().unwrap())?;
        header
            .to_str()
            .unwrap()
            .split("; ")
            .find(|c| c.starts_with("erasure_session=") && c.len() > "erasure_session=".len())
            .map(str::to_string)
    }

    /// This browser's console session, for the forms of `tests/it/common/console.rs`.
    pub async fn console(&self) -> Console {
        let cookie = self.session_cookie().expect("a session cookie");
        let mut console = Console {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: self.base.clone(),
            cookie,
            csrf: String::new(),
        };
        let (status, page) = console.get("/").await;
        assert_eq!(status, 200, "{page}");
        console.csrf = csrf_of(&page);
        console
    }
}
