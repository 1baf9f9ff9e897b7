//! The built binary as a child process: started with a config file and environment, its
//! output collected as it runs, stopped with SIGTERM (or killed when a test ends early).

use crate::common::free_port;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_agentassist-hooks");

/// How long a child may take to do what a test waits for; only a hang takes this long.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Service {
    child: Child,
    pub base: String,
    output: Arc<Mutex<String>>,
    /// The threads reading its stdout and stderr, which end when it does.
    readers: Vec<std::thread::JoinHandle<()>>,
    _config: tempfile::TempDir,
}

impl Service {
    /// `serve` with `config` (TOML) layered over the defaults, listening on a free port,
    /// logging JSON, with `env` set and `RUST_LOG` unset.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("config.toml");
        std::fs::write(&file, config).unwrap();
        let mut command = Command::new(BINARY);
        command
            .args(["serve", "--config"])
            .arg(&file)
            .env("HOOKS__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("HOOKS__LOG__FORMAT", "json")
            .env_remove("RUST_LOG")
            .env_remove("DATABASE_URL")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), output.clone()),
            collect(child.stderr.take().unwrap(), output.clone()),
        ];
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            output,
            readers,
            _config: directory,
        }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The status `GET path` is answered with, or `None` while nothing answers.
    pub async fn status(&self, path: &str) -> Option<u16> {
        let client = reqwest::Client::new();
        let response = client
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }

    /// Waits until `GET path` is answered `status`; panics if the process exits first or
    /// it takes longer than [`PATIENCE`].
    pub async fn wait_for(&mut self, path: &str, status: u16) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.status(path).await == Some(status) {
                return;
            }
            if let Some(exit) = self.child.try_wait().unwrap() {
                panic!("the service exited ({exit}):\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "{path} was not {status} within {PATIENCE:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the process to exit, for at most `limit`; once it has, its output is all
    /// in [`Service::output`].
    pub async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: the process ends where it stands, mid-transaction or not.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }

    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "SIGTERM was delivered");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends what `stream` prints to `output`, line by line, until it closes.
fn collect(
    stream: impl Read + Send + 'static,
    output: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut output = output.lock().unwrap();
            output.push_str(&line);
            output.push('\n');
        }
    })
}
