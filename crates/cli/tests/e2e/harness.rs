//! Starts the real `daemonhost` binary in a temp dir and talks to it.
//!
//! No bare sleeps: everything that waits polls a condition with a deadline. A [`Host`] kills
//! its process on drop, so a failing test leaves nothing running.

use bytes::{Buf, BytesMut};
use daemonhost_protocol::{Client, Frame, HEADER_LEN, Response};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

pub const BIN: &str = env!("CARGO_BIN_EXE_daemonhost");
pub const WAIT: Duration = Duration::from_secs(20);

/// A temp dir under /tmp (short paths: a socket path must stay under ~100 bytes).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("dh")
        .tempdir_in("/tmp")
        .expect("temp dir")
}

/// A running host process.
pub struct Host {
    pub child: Option<Child>,
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub socket: PathBuf,
}

impl Host {
    /// Start a host on a fresh data dir `TMP/data` (which does not exist yet).
    pub fn start() -> Host {
        Host::start_with(&[], &[])
    }

    /// Start with extra `run` arguments and environment.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Host {
        let tmp = tempdir();
        let data = tmp.path().join("data");
        let mut h = Host {
            child: None,
            socket: data.join("daemonhost.sock"),
            data,
            tmp,
        };
        h.spawn(args, env);
        h
    }

    /// Start another host process on this host's data dir (after the previous one ended).
    pub fn spawn(&mut self, args: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join("host.log"))
            .expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir")
            .arg(&self.data)
            .args(["--log-level", "info", "run"])
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            // The host's own default applies unless a test sets it.
            .env_remove("MALLOC_ARENA_MAX")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn daemonhost run"));
    }

    /// What the host printed (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("host.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("kill");
    }

    /// Wait for the process to exit, at most `WAIT`.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "host did not exit; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Connect once the socket accepts (polling), with the reference client.
    pub async fn client(&self) -> Client {
        wait_for_socket(&self.socket).await;
        Client::connect(&self.socket).await.expect("connect")
    }

    /// A raw stream once the socket accepts.
    pub async fn raw(&self) -> UnixStream {
        wait_for_socket(&self.socket).await;
        UnixStream::connect(&self.socket).await.expect("connect")
    }

    /// Run the CLI against this host.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.data, args)
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

/// Run `daemonhost --data-dir DATA ARGS…` to completion.
pub fn cli(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run cli")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code, or 128+signal.
pub fn code(st: ExitStatus) -> i32 {
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// Poll until connecting to `socket` succeeds.
pub async fn wait_for_socket(socket: &Path) {
    let deadline = Instant::now() + WAIT;
    loop {
        if UnixStream::connect(socket).await.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "socket {} never accepted",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Poll `cond` until it holds.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `N` as a 4-byte big-endian prefix followed by `body`.
pub fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Reads frames from a raw stream.
pub struct Reader {
    pub stream: tokio::net::unix::OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    pub fn new(stream: tokio::net::unix::OwnedReadHalf) -> Self {
        Reader {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// The next frame body; `None` at EOF (or a reset after the peer closed).
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
            let read = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("no frame within the wait");
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
