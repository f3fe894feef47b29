//! The real `daemonhost` binary in a temp dir, for end-to-end tests of any crate: start it on a
//! data dir (with arguments, environment, a config file), wait for its socket, connect the
//! protocol client or a raw stream, stop it with SIGTERM or SIGKILL, read what it printed.
//!
//! The web bridge listens on any free port (`--web-listen 127.0.0.1:0`) unless a test passes
//! `--web-listen` itself, so hosts started at once never collide on the default port;
//! [`Host::web_url`] reads the URL the host wrote to `DATA/web.url`.
//!
//! The binary's path is an argument: tests in `crates/cli` pass
//! `env!("CARGO_BIN_EXE_daemonhost")`. Nothing here sleeps bare: every wait polls a condition
//! with a deadline ([`crate::TIMEOUT`]). A [`Host`] kills its process on drop, so a failing
//! test leaves nothing running.

use crate::TIMEOUT;
use bytes::{Buf, BytesMut};
use daemonhost_protocol::{Client, Frame, HEADER_LEN, Response};
use nix::sys::signal::Signal;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The file in the data dir holding the web bridge's URL.
pub const WEB_URL_FILE: &str = "web.url";

/// A temp dir under /tmp (short paths: a socket path must stay under ~100 bytes).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("dh")
        .tempdir_in("/tmp")
        .expect("temp dir")
}

/// A host process on `TMP/data`, its output in `TMP/host.log`.
#[derive(Debug)]
pub struct Host {
    /// The binary this host runs.
    pub bin: PathBuf,
    /// The running process, if any.
    pub child: Option<Child>,
    /// Owns the data dir, the log and any config written with [`Host::write_config`].
    pub tmp: tempfile::TempDir,
    /// `TMP/data`, the `--data-dir`.
    pub data: PathBuf,
    /// `DATA/daemonhost.sock`.
    pub socket: PathBuf,
}

impl Host {
    /// A host on a fresh data dir `TMP/data` (which does not exist yet), not started: write
    /// files into it first (schemas, a config), then [`Host::spawn`].
    pub fn new(bin: impl AsRef<Path>) -> Host {
        let tmp = tempdir();
        let data = tmp.path().join("data");
        Host {
            bin: bin.as_ref().to_owned(),
            child: None,
            socket: data.join("daemonhost.sock"),
            data,
            tmp,
        }
    }

    /// Start `bin` on a fresh data dir.
    pub fn start(bin: impl AsRef<Path>) -> Host {
        Host::start_with(bin, &[], &[])
    }

    /// Start with extra `run` arguments and environment.
    pub fn start_with(bin: impl AsRef<Path>, args: &[&str], env: &[(&str, &str)]) -> Host {
        let mut h = Host::new(bin);
        h.spawn(args, env);
        h
    }

    /// Start with `config` as its config file (`--config TMP/host.toml`).
    pub fn start_with_config(bin: impl AsRef<Path>, config: &str) -> Host {
        let mut h = Host::new(bin);
        let cfg = h.write_config(config);
        h.spawn(&["--config", &cfg.display().to_string()], &[]);
        h
    }

    /// Write `TMP/host.toml` and return its path (for `--config`).
    pub fn write_config(&self, config: &str) -> PathBuf {
        let path = self.tmp.path().join("host.toml");
        std::fs::write(&path, config).expect("write the config file");
        path
    }

    /// Start a host process on this host's data dir (the first, or after the previous ended):
    /// `BIN --data-dir DATA --log-level info run [--web-listen 127.0.0.1:0] ARGS…`, stdout and
    /// stderr appended to the log. The web bridge gets any free port unless `args` name
    /// `--web-listen`; a `DATA/web.url` left by an earlier process is removed first, so
    /// [`Host::web_url`] reads this one's.
    pub fn spawn(&mut self, args: &[&str], env: &[(&str, &str)]) {
        let _ = std::fs::remove_file(self.data.join(WEB_URL_FILE));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join("host.log"))
            .expect("log file");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--data-dir")
            .arg(&self.data)
            .args(["--log-level", "info", "run"]);
        if !args.iter().any(|a| a.starts_with("--web-listen")) {
            cmd.args(["--web-listen", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .env_remove("NOTIFY_SOCKET")
            // The host's own default applies unless a test sets it.
            .env_remove("MALLOC_ARENA_MAX")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log file"))
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn daemonhost run"));
    }

    /// The web bridge's URL (`http://127.0.0.1:PORT/?token=…`) from `DATA/web.url`, once the
    /// host has written it.
    ///
    /// # Panics
    /// If the file does not appear within [`TIMEOUT`] (the log is in the message).
    pub async fn web_url(&self) -> String {
        let path = self.data.join(WEB_URL_FILE);
        let read = crate::try_eventually_for(TIMEOUT, async || {
            std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .await;
        match read {
            Ok(url) => url,
            Err(_) => panic!(
                "{} did not appear within {TIMEOUT:?}; log:\n{}",
                path.display(),
                self.log()
            ),
        }
    }

    /// What the host printed (stdout and stderr, every process of this host so far).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("host.log")).unwrap_or_default()
    }

    /// The running process's pid.
    pub fn pid(&self) -> nix::unistd::Pid {
        let id = self.child.as_ref().expect("a running host").id();
        nix::unistd::Pid::from_raw(i32::try_from(id).expect("a pid fits in i32"))
    }

    /// Send `sig` to the process.
    pub fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("kill");
    }

    /// SIGTERM, then wait for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit().await
    }

    /// SIGKILL, then wait for the exit.
    pub async fn kill(&mut self) -> ExitStatus {
        self.signal(Signal::SIGKILL);
        self.wait_exit().await
    }

    /// Wait for the process to exit, at most [`TIMEOUT`].
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("a running host");
        let exited =
            crate::try_eventually_for(TIMEOUT, async || child.try_wait().expect("try_wait")).await;
        match exited {
            Ok(st) => {
                self.child = None;
                st
            }
            Err(_) => panic!(
                "the host did not exit within {TIMEOUT:?}; log:\n{}",
                self.log()
            ),
        }
    }

    /// Connect the reference client once the socket accepts.
    pub async fn client(&self) -> Client {
        wait_for_socket(&self.socket).await;
        Client::connect(&self.socket).await.expect("connect")
    }

    /// A raw stream once the socket accepts.
    pub async fn raw(&self) -> UnixStream {
        wait_for_socket(&self.socket).await;
        UnixStream::connect(&self.socket).await.expect("connect")
    }

    /// Run the CLI against this host's data dir.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.bin, &self.data, args)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run `BIN --data-dir DATA ARGS…` to completion.
pub fn cli(bin: impl AsRef<Path>, data: &Path, args: &[&str]) -> Output {
    Command::new(bin.as_ref())
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run the cli")
}

/// A command's stdout, lossily decoded.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's stderr, lossily decoded.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code, or 128+signal.
pub fn code(st: ExitStatus) -> i32 {
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// Wait until connecting to `socket` succeeds.
pub async fn wait_for_socket(socket: &Path) {
    let what = format!("socket {} to accept", socket.display());
    crate::eventually(&what, async || UnixStream::connect(socket).await.is_ok()).await;
}

/// `body` framed: its length as 4 bytes big-endian, then the body.
pub fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(body.len())
        .expect("a frame body under 4 GiB")
        .to_be_bytes()
        .to_vec();
    v.extend_from_slice(body);
    v
}

/// Reads frames from a raw stream.
#[derive(Debug)]
pub struct Reader {
    /// The read half.
    pub stream: tokio::net::unix::OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    /// A reader over `stream`.
    pub fn new(stream: tokio::net::unix::OwnedReadHalf) -> Self {
        Reader {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// The next frame body; `None` at EOF (or a reset after the peer closed).
    ///
    /// # Panics
    /// If no frame arrives within [`TIMEOUT`], or the read fails otherwise.
    pub async fn next_body(&mut self) -> Option<BytesMut> {
        loop {
            if self.buf.len() >= HEADER_LEN {
                let n = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if self.buf.len() >= HEADER_LEN + n {
                    self.buf.advance(HEADER_LEN);
                    return Some(self.buf.split_to(n));
                }
            }
            let read = crate::within("the next frame", self.stream.read_buf(&mut self.buf)).await;
            match read {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// The next frame, decoded.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        let body = self.next_body().await?;
        Some(Frame::decode(&body).expect("the host sends valid frames"))
    }

    /// The next frame, which must be a response.
    pub async fn response(&mut self) -> Response {
        match self.next_frame().await {
            Some(Frame::Response(r)) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

/// Split a raw stream into a frame reader and its write half.
pub fn split(s: UnixStream) -> (Reader, tokio::net::unix::OwnedWriteHalf) {
    let (r, w) = s.into_split();
    (Reader::new(r), w)
}

/// Write `bytes` fully.
pub async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, bytes: &[u8]) {
    w.write_all(bytes).await.expect("write");
}
