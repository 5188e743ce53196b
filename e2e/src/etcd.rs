//! One etcd (Debian's `etcd-server`) per federation; every API server of the federation
//! keeps its data under its own `--etcd-prefix`.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{ManagedProcess, free_port};
use crate::{Error, Result};

/// A started etcd.
pub(crate) struct Etcd {
    pub(crate) process: ManagedProcess,
    pub(crate) client_port: u16,
}

impl Etcd {
    /// Starts etcd with its data in `dir/data` and its log in `dir/etcd.log`.
    pub(crate) fn start(program: &Path, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let args = vec![
            "--name=gpufed-e2e".to_owned(),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=gpufed-e2e={peer}"),
            "--initial-cluster-state=new".to_owned(),
            "--logger=zap".to_owned(),
            "--log-level=warn".to_owned(),
            "--quota-backend-bytes=4294967296".to_owned(),
            "--snapshot-count=100000".to_owned(),
        ];
        let process = ManagedProcess::spawn_tied("etcd", program, &args, &dir.join("etcd.log"))?;
        Ok(Self { process, client_port })
    }

    /// The client URL for `--etcd-servers`.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Waits until etcd's `/health` answers `"health":"true"`.
    pub(crate) async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.process.check_running()?;
            if health(self.client_port).await {
                return Ok(());
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
