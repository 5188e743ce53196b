//! One etcd (Debian's `etcd-server`) per federation; every API server of the federation
//! keeps its data under its own `--etcd-prefix`.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{ManagedProcess, free_port};
use crate::{Error, Result};

/// How many times [`Etcd::start_healthy`] picks new ports after losing one to another process.
const PORT_TRIES: u32 = 3;

/// A started etcd.
pub(crate) struct Etcd {
    pub(crate) process: ManagedProcess,
    pub(crate) client_port: u16,
    /// Its member name (also its cluster token), unique to this start: what tells it from
    /// another run's etcd on the same port.
    name: String,
    /// Length of the (appended) log before this start.
    log_start: u64,
}

/// A member name no other etcd of this machine has: pid, time and a counter.
fn unique_name() -> String {
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("gpufed-e2e-{}-{nanos}-{n}", std::process::id())
}

impl Etcd {
    /// Starts etcd with its data in `dir/data` and its log in `dir/etcd.log`, and waits until
    /// it is healthy. [`free_port`] keeps ports apart only within this process: when another
    /// test run's process took a port first, ours exits, and it starts again on new ports.
    pub(crate) async fn start_healthy(program: &Path, dir: &Path, timeout: Duration) -> Result<Self> {
        Self::start_healthy_on(program, dir, timeout, free_port).await
    }

    /// [`Self::start_healthy`] with the ports from `port` (tests hand out a taken one).
    async fn start_healthy_on(
        program: &Path,
        dir: &Path,
        timeout: Duration,
        mut port: impl FnMut() -> Result<u16>,
    ) -> Result<Self> {
        let mut attempt = 1;
        loop {
            let mut etcd = Self::start_on(program, dir, port()?, port()?)?;
            match etcd.wait_healthy(timeout).await {
                Ok(()) => return Ok(etcd),
                Err(e) if attempt < PORT_TRIES && etcd.lost_port().await => {
                    tracing::warn!(attempt, error = %e, "etcd lost a port to another process; new ports");
                    etcd.process.stop(Duration::from_secs(5));
                    // It died binding, before writing data; whatever it left must not be
                    // taken for the next start's existing cluster.
                    let data = dir.join("data");
                    if data.exists() {
                        std::fs::remove_dir_all(&data).map_err(Error::io("removing", &data))?;
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether this etcd is gone for a port another process holds (its log says so). It
    /// exits within milliseconds of failing to bind, but the other etcd's answer may come
    /// first: it is given a moment.
    async fn lost_port(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.process.check_running().is_ok() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::read(&self.process.record().log).is_ok_and(|log| {
            let ours = log
                .get(usize::try_from(self.log_start).unwrap_or(usize::MAX)..)
                .unwrap_or_default();
            String::from_utf8_lossy(ours).contains("address already in use")
        })
    }

    /// Starts etcd on the given ports (see [`Self::start_healthy`]).
    fn start_on(program: &Path, dir: &Path, client_port: u16, peer_port: u16) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let name = unique_name();
        let args = vec![
            format!("--name={name}"),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={name}={peer}"),
            format!("--initial-cluster-token={name}"),
            "--initial-cluster-state=new".to_owned(),
            "--logger=zap".to_owned(),
            "--log-level=warn".to_owned(),
            "--quota-backend-bytes=4294967296".to_owned(),
            "--snapshot-count=100000".to_owned(),
        ];
        let log = dir.join("etcd.log");
        // The log is appended to: only what this start writes says why it exited.
        let log_start = std::fs::metadata(&log).map_or(0, |m| m.len());
        let process = ManagedProcess::spawn_tied("etcd", program, &args, &log)?;
        Ok(Self {
            process,
            client_port,
            name,
            log_start,
        })
    }

    /// The client URL for `--etcd-servers`.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Waits until etcd's `/health` answers `"health":"true"` and the member answering is
    /// this one. Another run's etcd on our port (ours then exits, unable to bind) answers
    /// healthy too, and its API servers' data would have mixed with ours.
    async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.process.check_running()?;
            if health(self.client_port).await {
                match member_names(self.client_port).await {
                    Ok(names) if names == [self.name.as_str()] => {
                        // Ours answered, so it holds the port: it is alive now.
                        self.process.check_running()?;
                        return Ok(());
                    }
                    Ok(names) => {
                        return Err(Error::State(format!(
                            "127.0.0.1:{} is answered by another etcd (members {names:?}), not {}; \
                             another process took the port",
                            self.client_port, self.name
                        )));
                    }
                    Err(e) => tracing::debug!(error = %e, "etcd member list; retrying"),
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "etcd /health".into(),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn health(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        Ok::<_, std::io::Error>(body.contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(true))
    )
}

/// The names of the members of the etcd cluster answering on `port`.
async fn member_names(port: u16) -> std::io::Result<Vec<String>> {
    let list = tokio::time::timeout(
        Duration::from_secs(2),
        post_json(port, "/v3/cluster/member/list", "{}"),
    )
    .await
    .map_err(std::io::Error::other)??;
    let members = list["members"]
        .as_array()
        .ok_or_else(|| std::io::Error::other(format!("member list without members: {list}")))?;
    Ok(members
        .iter()
        .map(|m| m["name"].as_str().unwrap_or_default().to_owned())
        .collect())
}

/// POSTs `body` to etcd's JSON gateway (`/v3/...`) and returns the JSON answer.
async fn post_json(port: u16, path: &str, body: &str) -> std::io::Result<serde_json::Value> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    let json = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(json).map_err(std::io::Error::other)
}

impl Etcd {
    /// Compacts etcd's history up to its current revision: every watch that resumes from
    /// an older resourceVersion then gets `410 Gone` and must list again. Returns the
    /// revision compacted to.
    pub(crate) async fn compact_now(&self) -> Result<i64> {
        let io = |source| crate::Error::Io {
            action: "compacting etcd at",
            path: format!("127.0.0.1:{}", self.client_port).into(),
            source,
        };
        // A range over the empty key returns the store's current revision in its header.
        let range = post_json(self.client_port, "/v3/kv/range", r#"{"key":"AA==","limit":1}"#)
            .await
            .map_err(io)?;
        let revision: i64 = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| crate::Error::State(format!("etcd range answered without a revision: {range}")))?;
        let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        post_json(self.client_port, "/v3/kv/compaction", &body)
            .await
            .map_err(io)?;
        Ok(revision)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);

    /// Debian's etcd (what [`crate::binaries::Binaries`] falls back to), or `None`: skipped.
    fn etcd_program() -> Option<std::path::PathBuf> {
        let found = std::env::var_os("GPUFED_ETCD")
            .map(std::path::PathBuf::from)
            .into_iter()
            .chain([std::path::PathBuf::from("/usr/bin/etcd")])
            .find(|p| p.is_file());
        if found.is_none() {
            eprintln!("SKIPPED: no etcd (set GPUFED_ETCD or install etcd-server)");
        }
        found
    }

    #[tokio::test]
    async fn another_etcd_on_our_port_is_not_taken_for_ours_and_new_ports_are_picked() {
        let Some(program) = etcd_program() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let mut other = Etcd::start_healthy(&program, &tmp.path().join("other"), T)
            .await
            .unwrap();
        let taken = other.client_port;

        // Ours cannot bind and exits; the other one answers healthy meanwhile.
        let mut ours =
            Etcd::start_on(&program, &tmp.path().join("ours"), taken, free_port().unwrap()).unwrap();
        let refused = ours.wait_healthy(T).await;
        assert!(refused.is_err(), "another run's etcd was taken for ours");
        ours.process.stop(Duration::from_secs(5));

        // Started to be healthy, it moves to new ports.
        let mut first = true;
        let ports = || {
            if std::mem::take(&mut first) {
                Ok(taken)
            } else {
                free_port()
            }
        };
        let mut moved = Etcd::start_healthy_on(&program, &tmp.path().join("moved"), T, ports)
            .await
            .unwrap();
        assert_ne!(moved.client_port, taken);
        assert_eq!(
            member_names(moved.client_port).await.unwrap(),
            vec![moved.name.clone()]
        );
        moved.process.stop(Duration::from_secs(5));
        other.process.stop(Duration::from_secs(5));
    }
}
