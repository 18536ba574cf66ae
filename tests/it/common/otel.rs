//! A real OTLP/HTTP receiver for the trace tests: `tests/otel/receiver.py`, which decodes what
//! arrives with the `opentelemetry-proto` package from PyPI (installed from
//! `tests/otel/requirements.txt` into `tests/otel/.venv` on first use) and writes each span as a
//! JSON line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::KillOnDrop;

/// The Python of `tests/otel/.venv`, made (once per test process) when it cannot import
/// `opentelemetry.proto`.
fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otel"));
        let venv = dir.join(".venv");
        let python = venv.join("bin/python");
        let has = |p: &PathBuf| {
            std::process::Command::new(p)
                .args([
                    "-c",
                    "import opentelemetry.proto.collector.trace.v1.trace_service_pb2",
                ])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !has(&python) {
            let made = std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 runs");
            assert!(made.success(), "python3 -m venv failed");
            let installed = std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "-r"])
                .arg(dir.join("requirements.txt"))
                .status()
                .expect("pip runs");
            assert!(
                installed.success(),
                "pip install -r tests/otel/requirements.txt failed"
            );
        }
        assert!(has(&python), "opentelemetry-proto is not importable");
        python
    })
}

/// A running receiver; killed when dropped.
pub struct Receiver {
    _process: KillOnDrop,
    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` is set to (the exporter adds `/v1/traces`).
    pub endpoint: String,
    file: PathBuf,
}

impl Receiver {
    /// Starts a receiver on 127.0.0.1, port 0, once it listens.
    pub fn start() -> Receiver {
        let file = std::env::temp_dir().join(format!(
            "erasure-spans-{}-{}.jsonl",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::write(&file, "").unwrap();
        let mut child = std::process::Command::new(python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/otel/receiver.py"
            ))
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the receiver starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("the receiver said {line:?}"))
            .to_string();
        Receiver {
            _process: KillOnDrop(child),
            endpoint: format!("http://127.0.0.1:{port}"),
            file,
        }
    }

    /// Every line received so far, as written (for searches of the whole text).
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until the spans received satisfy `done`; they are returned.
    pub async fn wait_for(&self, secs: u64, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the spans expected did not arrive in {secs}s; got {}:\n{}",
                    spans.len(),
                    self.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The standard variables that make the service export its traces to `receiver`, in batches
/// sent every 100 ms.
pub fn variables(receiver: &Receiver) -> Vec<(String, String)> {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A span's attribute, when it has it.
pub fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"].get(key)
}

/// Sends SIGTERM to a child (a graceful stop) and waits until it exits, at most `secs`:
/// whether it exited successfully.
pub fn terminate(child: &mut std::process::Child, secs: u64) -> bool {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -TERM failed");
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service did not stop within {secs}s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
