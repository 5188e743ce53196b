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
