//! Browsers for the web client in `public/`: a `chromedriver` of our own on a free port that
//! opens one headless Chromium per page (one WebDriver session each, with a fresh profile, so
//! pages share no cookies or storage, like two people). Needs Debian's `chromium` and
//! `chromium-driver`; without them the tests fail and say how to install them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use switchboard::{Config, StreamAuthFlags, UrlTokens};

use super::{POLL, free_port, public_dir};

/// The server as the browser tests run it: the contract's defaults serving `public/`, with
/// the test API key (to list sessions), and `--url-tokens off`: every page opens its streams
/// with the session cookie (or a ticket, from another origin), never `?token=`.
pub fn page_config() -> Config {
    Config {
        public_dir: Some(public_dir()),
        api_key_file: Some(super::api_key_file()),
        streams: StreamAuthFlags {
            url_tokens: UrlTokens::Off,
            ..StreamAuthFlags::default()
        },
        ..Config::default()
    }
}

/// Debian's paths; `SWITCHBOARD_CHROMIUM` and `SWITCHBOARD_CHROMEDRIVER` override them.
const CHROMIUM: (&str, &str) = ("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium");
const CHROMEDRIVER: (&str, &str) = ("SWITCHBOARD_CHROMEDRIVER", "/usr/bin/chromedriver");
const INSTALL_HINT: &str = "the browser tests need Debian's Chromium and its driver: \
                            run `apt-get install -y chromium chromium-driver`";

/// How long any one condition of a page (or chromedriver) may take to become true: longer
/// than [`super::WAIT`]: a browser starts, renders and reacts more slowly than the API answers.
pub const PAGE_WAIT: Duration = Duration::from_secs(10);

/// How a page is shown: a desktop window, or Chromium's phone emulation
/// (a plain window cannot be made narrower than about 500 px).
#[derive(Clone, Copy)]
pub enum Screen {
    Desktop,
    Phone,
}

// ------------------------------------------------------------ chromedriver

/// A `chromedriver` process of our own on a free port.
///
/// It runs in a process group of its own, so dropping it (also when a test
/// panics) kills it together with every Chromium it started, then removes
/// the temporary folder holding the browser profiles and the driver's log.
pub struct ChromeDriver {
    child: Child,
    url: String,
    dir: PathBuf,
    profiles: AtomicU32,
}

impl ChromeDriver {
    pub async fn start() -> Self {
        binary(CHROMIUM);
        let chromedriver = binary(CHROMEDRIVER);

        let dir = unique_temp_dir();
        let port = free_port();
        let log = dir.join("chromedriver.log");
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {}: {e}; {INSTALL_HINT}",
                        chromedriver.display()
                    )
                })
        };
        let mut driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            profiles: AtomicU32::new(0),
        };
        driver.wait_until_ready().await;
        driver
    }

    /// Polls `GET /status` until chromedriver says it is ready.
    async fn wait_until_ready(&mut self) {
        let http = reqwest::Client::new();
        let status_url = format!("{}/status", self.url);
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            if let Some(exit) = self.child.try_wait().expect("poll chromedriver") {
                panic!(
                    "chromedriver exited early ({exit}); see {}",
                    self.log().display()
                );
            }
            if let Ok(response) = http.get(&status_url).send().await {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {status_url} within {PAGE_WAIT:?}; see {}",
                self.log().display()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("chromedriver.log")
    }

    /// Starts a new Chromium (a WebDriver session with its own profile) and
    /// opens `url` in it.
    pub async fn open(&self, url: &str, screen: Screen) -> Client {
        self.open_with(url, screen, &[], true).await
    }

    /// [`ChromeDriver::open`] with `extra` Chromium flags; without `wait_for_load`, every
    /// navigation returns at once (WebDriver's `pageLoadStrategy: none`), for pages that
    /// may never load.
    pub async fn open_with(
        &self,
        url: &str,
        screen: Screen,
        extra: &[String],
        wait_for_load: bool,
    ) -> Client {
        let n = self.profiles.fetch_add(1, Ordering::Relaxed);
        let profile = self.dir.join(format!("profile-{n}"));
        let mut options = json!({
            "binary": binary(CHROMIUM),
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        if let Some(args) = options["args"].as_array_mut() {
            args.extend(extra.iter().map(|arg| json!(arg)));
        }
        if let Screen::Phone = screen {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 2 },
            });
        }
        let mut capabilities = Capabilities::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        if !wait_for_load {
            capabilities.insert("pageLoadStrategy".into(), json!("none"));
        }
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start Chromium through chromedriver: {e}; see {}; {INSTALL_HINT}",
                    self.log().display()
                )
            });
        client.goto(url).await.expect("open the page");
        client
    }

    /// Has `page` run `script` before any script of its own in every document it loads from
    /// now on, as a host page's script runs before the web client's module (CDP's
    /// `Page.addScriptToEvaluateOnNewDocument`, through chromedriver's `goog/cdp/execute`).
    pub async fn run_first_in_each_document(&self, page: &Client, script: &str) {
        let session = page
            .session_id()
            .await
            .expect("read the WebDriver session")
            .expect("a WebDriver session");
        let command = json!({
            "cmd": "Page.addScriptToEvaluateOnNewDocument",
            "params": { "source": script },
        });
        let url = format!("{}/session/{session}/goog/cdp/execute", self.url);
        let response = super::send(reqwest::Client::new().post(url).json(&command)).await;
        assert!(
            response.status().is_success(),
            "chromedriver refused the CDP command: {}; see {}",
            response.status(),
            self.log().display()
        );
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every browser process it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The path of a browser binary, which must exist.
fn binary((var, default): (&str, &str)) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found (set {var} to use another path): {INSTALL_HINT}",
        path.display()
    );
    path
}

fn unique_temp_dir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "switchboard-browser-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
