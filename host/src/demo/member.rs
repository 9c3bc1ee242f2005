//! A group member in a process of its own: `ferry run`, this very binary, so that
//! a crash is a real one (SIGKILL: no drain, no final commit). Its admin server
//! says when it has joined its group (`/readyz`).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A `ferry run` child process.
pub struct Member {
    /// What the story calls it.
    pub name: String,
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
}

/// A loopback address no one listens on (bound, then released for the child).
pub fn free_address() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("failed to find a free port")?;
    listener.local_addr().context("failed to find a free port")
}

impl Member {
    /// Writes `config` (a ferry config without an `[admin]` table) to `dir` and
    /// starts `ferry run` on it, its admin server on a free loopback port and its
    /// log in `dir`.
    pub fn start(dir: &Path, name: &str, config: &str) -> anyhow::Result<Self> {
        let admin = free_address()?;
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, format!("{config}\n[admin]\nlisten = \"{admin}\"\n"))
            .with_context(|| format!("failed to write {}", path.display()))?;
        let log = dir.join(format!("{name}.log"));
        let exe = std::env::current_exe().context("failed to find the ferry binary")?;
        let child = Command::new(exe)
            .args(["run", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).with_context(|| format!("failed to create {}", log.display()))?)
            .spawn()
            .context("failed to start `ferry run`")?;
        Ok(Self { name: name.to_owned(), child, admin, log })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until its `/readyz` answers 200 (it joined its group and got
    /// partitions), failing if it exits or `patience` runs out.
    pub fn wait_ready(&mut self, patience: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) before joining its group; its log: {}", self.name, self.log.display());
            }
            if readyz(self.admin).is_ok_and(|(status, _)| status == 200) {
                return Ok(());
            }
            if started.elapsed() > patience {
                bail!(
                    "{} did not join its group within {} s; its log: {}",
                    self.name,
                    patience.as_secs(),
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().with_context(|| format!("failed to kill {}", self.name))?;
        self.child.wait().with_context(|| format!("failed to reap {}", self.name))?;
        Ok(())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET /readyz`: the status code and body.
fn readyz(admin: SocketAddr) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("GET /readyz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
    Ok((status, body))
}
