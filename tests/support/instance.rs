//! The real `switchboard` binary as a child process ([`Instance`]), started as a test asks
//! ([`Launch`]: working directory, open-file limit) and read through its log; and
//! [`refused`], for a start that must fail.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::time::timeout;

use super::server::{Endpoint, http_client};
use super::{POLL, WAIT};

/// The real `switchboard` binary as a child process, killed (SIGKILL) on drop; when the test
/// is failing (or `CLUSTER_LOGS` is set) the drop prints the end of its log.
pub struct Instance {
    pub endpoint: Endpoint,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Deref for Instance {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Instance {
    /// Runs the binary with `--listen 127.0.0.1:0` and `args`, and waits for the `listening`
    /// log line that gives its address. Its stdout and stderr are drained into a log by
    /// background threads for as long as it runs, so it never blocks on a full pipe.
    /// `SWITCHBOARD_*` variables of the test's environment are not passed on.
    pub async fn start(label: &str, args: &[&str]) -> Instance {
        Instance::launch(label).start(args).await
    }

    /// [`Instance::start`] with `dir` as the working directory.
    pub async fn start_in(label: &str, dir: &Path, args: &[&str]) -> Instance {
        Instance::launch(label).dir(dir).start(args).await
    }

    /// Runs the binary with exactly `args` (which must make it listen on an ephemeral port) and
    /// waits for the `listening` log line, in text or JSON, that gives its address.
    pub async fn with_args(label: &str, args: &[&str]) -> Instance {
        Instance::launch(label).with_args(args).await
    }

    /// How to run the binary when the arguments are not all a test sets: see [`Launch`].
    pub fn launch(label: &str) -> Launch {
        Launch {
            label: label.to_owned(),
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            program: None,
            open_files: None,
        }
    }

    /// The first log line (stdout or stderr) containing `needle`, and every line before it;
    /// fails the test if none appears within [`WAIT`].
    pub async fn log_line(&self, needle: &str) -> (String, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(at) = log.iter().position(|line| line.contains(needle)) {
                    return (log[at].clone(), log[..at].to_vec());
                }
                assert!(
                    Instant::now() < deadline,
                    "no log line with {needle:?} from {}; saw {log:#?}",
                    self.label
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM, the signal a service manager stops it with, and returns at once.
    pub fn send_sigterm(&self) {
        self.signal("-TERM");
    }

    /// SIGHUP: a TLS server reloads its certificate.
    pub fn send_sighup(&self) {
        self.signal("-HUP");
    }

    /// Freezes the process (SIGSTOP), as a long pause or an overloaded host would; its sockets
    /// stay open. [`Instance::resume`] thaws it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {which} {}", self.id());
    }

    /// Whether the process still runs (it has not been killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id, to send it signals.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("the instance runs").id()
    }

    /// Waits at most `limit` for the process to exit by itself; its exit status.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the instance runs");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(exit) = child.try_wait().expect("polling the instance") {
                self.child = None;
                return exit;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {limit:?}",
                self.endpoint.label
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then waits (bounded) for the graceful shutdown to finish; its exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait_for_exit(WAIT * 2).await
    }

    /// The lines it has logged so far (stdout and stderr).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGKILL: no shutdown, no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaping the killed instance");
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("CLUSTER_LOGS").is_some() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let tail = &log[log.len().saturating_sub(40)..];
            eprintln!(
                "--- last lines of instance {} ({}) ---\n{}",
                self.label,
                self.base_url,
                tail.join("\n")
            );
        }
        self.kill();
    }
}

/// An [`Instance`] about to start: its working directory (the crate's root unless
/// [`Launch::dir`]) and the limits of its process.
pub struct Launch {
    label: String,
    dir: PathBuf,
    /// The binary to run; this build's when `None`.
    program: Option<PathBuf>,
    /// `RLIMIT_NOFILE` (soft, hard) for the child; inherited when `None`.
    open_files: Option<(u64, u64)>,
}

impl Launch {
    /// Runs the binary in `dir`.
    pub fn dir(mut self, dir: &Path) -> Launch {
        self.dir = dir.to_owned();
        self
    }

    /// Runs `program` instead of this build's binary (another release's, say).
    pub fn program(mut self, program: &Path) -> Launch {
        self.program = Some(program.to_owned());
        self
    }

    /// Lowers the child's open-file limit (soft and hard) to `limit` before it execs, so the
    /// server sizes its connection budget from it, as under a service manager's `LimitNOFILE`.
    pub fn open_file_limit(self, limit: u64) -> Launch {
        self.open_file_limits(limit, limit)
    }

    /// Sets the child's soft and hard open-file limits apart, as a shell's `ulimit -n` does
    /// below a higher hard limit.
    pub fn open_file_limits(mut self, soft: u64, hard: u64) -> Launch {
        self.open_files = Some((soft, hard));
        self
    }

    /// Starts with `--listen 127.0.0.1:0 --log info`, the test API key and `args`; see
    /// [`Instance::start`].
    pub async fn start(self, args: &[&str]) -> Instance {
        let key = super::server::api_key_file();
        let key = key.to_str().expect("a UTF-8 temporary path");
        let mut all = vec![
            "--listen",
            "127.0.0.1:0",
            "--log",
            "info",
            "--api-key-file",
            key,
        ];
        all.extend_from_slice(args);
        self.with_args(&all).await
    }

    /// Starts with exactly `args` and waits for its address; see [`Instance::with_args`].
    pub async fn with_args(self, args: &[&str]) -> Instance {
        let Launch {
            label,
            dir,
            program,
            open_files,
        } = self;
        let program = program.unwrap_or_else(|| env!("CARGO_BIN_EXE_switchboard").into());
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWITCHBOARD_") {
                command.env_remove(key);
            }
        }
        if let Some((soft, hard)) = open_files {
            // SAFETY: setrlimit is async-signal-safe, and nothing else runs between fork and
            // exec.
            unsafe {
                command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard));
            }
        }
        let mut child = command.spawn().expect("starting switchboard");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address, listening) = oneshot::channel();
        drain(
            child.stdout.take().unwrap(),
            Arc::clone(&log),
            Some(address),
        );
        drain(child.stderr.take().unwrap(), Arc::clone(&log), None);
        let addr = match timeout(WAIT, listening).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "instance {label} never logged `listening address=...`; its log:\n{}",
                    log.lock().unwrap().join("\n")
                )
            }
        };
        Instance {
            endpoint: Endpoint::new(&label, addr, http_client()),
            child: Some(child),
            log,
        }
    }
}

/// Reads `pipe` line by line into `log` until the process closes it; the first `listening`
/// line's `address=` goes to `address`.
fn drain(
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    mut address: Option<oneshot::Sender<SocketAddr>>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
            if line.contains("listening")
                && let Some(addr) = listening_address(&line)
                && let Some(address) = address.take()
            {
                let _ = address.send(addr);
            }
            log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
}

/// The address of a `listening` log line: `address=...` in text, `"address":"..."` in JSON.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let text = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("address="));
    let json = || {
        let rest = line.split("\"address\":\"").nth(1)?;
        rest.split('"').next()
    };
    text.or_else(json)?.parse().ok()
}

/// Runs the binary with `args` and no `SWITCHBOARD_*` environment to its exit, which must
/// come without a word on stdout; its exit code and stderr.
pub fn refused(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("running the switchboard binary");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).expect("stderr is text");
    (output.status.code().expect("exited, not killed"), stderr)
}
