//! One Kubernetes control plane: kube-apiserver, kube-scheduler and
//! kube-controller-manager (the real 1.20.2 components), with its own PKI and kubeconfigs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::binaries::Binaries;
use crate::kubeconfig::{client_from_kubeconfig, write_kubeconfig};
use crate::pki::ClusterPki;
use crate::process::{ManagedProcess, ProcessRecord, free_port};
use crate::{Error, Result};

/// Ports a cluster listens on (all on 127.0.0.1).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct ClusterPorts {
    /// The API server's secure port.
    pub apiserver: u16,
}

/// A running control plane.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    dir: PathBuf,
    server: String,
    kubeconfig: PathBuf,
    ports: ClusterPorts,
    pki: ClusterPki,
    pub(crate) procs: Vec<ManagedProcess>,
    /// How each component was started, to start it again alike: kube-apiserver first,
    /// then (once started) kube-scheduler and kube-controller-manager.
    launches: Vec<Launch>,
}

/// How one control-plane component is started.
#[derive(Debug, Clone)]
struct Launch {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Launch {
    fn spawn(&self) -> Result<ManagedProcess> {
        ManagedProcess::spawn_tied(&self.name, &self.program, &self.args, &self.log)
    }
}

fn arg(flag: &str, value: impl std::fmt::Display) -> String {
    format!("--{flag}={value}")
}

impl Cluster {
    /// Generates PKI and kubeconfigs in `dir` and starts kube-apiserver against `etcd_url`
    /// under the prefix `/gpufed-e2e/<name>`; [`Cluster::start_controllers`] starts the rest
    /// once it is ready.
    pub(crate) fn start(name: &str, dir: &Path, bins: &Binaries, etcd_url: &str) -> Result<Self> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(Error::io("creating", &logs))?;
        let pki = ClusterPki::generate(&dir.join("pki"), name)?;
        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, name, &server, &pki.ca_cert, &pki.admin, "admin")?;
        let sched_kc = dir.join("scheduler.kubeconfig");
        write_kubeconfig(
            &sched_kc,
            name,
            &server,
            &pki.ca_cert,
            &pki.scheduler,
            "system:kube-scheduler",
        )?;
        let cm_kc = dir.join("controller-manager.kubeconfig");
        write_kubeconfig(
            &cm_kc,
            name,
            &server,
            &pki.ca_cert,
            &pki.controller_manager,
            "system:kube-controller-manager",
        )?;

        let p = |path: &Path| path.display().to_string();
        let apiserver_args = vec![
            arg("etcd-servers", etcd_url),
            arg("etcd-prefix", format!("/gpufed-e2e/{name}")),
            arg("bind-address", "127.0.0.1"),
            arg("advertise-address", "127.0.0.1"),
            arg("secure-port", port),
            arg("insecure-port", 0),
            arg("cert-dir", p(&dir.join("pki"))),
            arg("tls-cert-file", p(&pki.serving.cert)),
            arg("tls-private-key-file", p(&pki.serving.key)),
            arg("client-ca-file", p(&pki.ca_cert)),
            arg("authorization-mode", "RBAC"),
            arg("service-account-key-file", p(&pki.sa_pub)),
            arg("service-account-signing-key-file", p(&pki.sa_key)),
            arg(
                "service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
            ),
            arg("api-audiences", "https://kubernetes.default.svc.cluster.local"),
            // Pull-mode agents register with bootstrap tokens (kube-system Secrets).
            arg("enable-bootstrap-token-auth", "true"),
            arg("service-cluster-ip-range", "10.96.0.0/16"),
            // No token controller races: pods need no ServiceAccount token here.
            arg("disable-admission-plugins", "ServiceAccount"),
            arg("enable-priority-and-fairness", "false"),
            // 127.0.0.1 is not a valid endpoint for the `kubernetes` Service.
            arg("endpoint-reconciler-type", "none"),
            arg("allow-privileged", "true"),
            arg("profiling", "false"),
            arg("v", 1),
        ];
        let mut cluster = Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            server,
            kubeconfig,
            ports: ClusterPorts { apiserver: port },
            pki,
            procs: Vec::new(),
            launches: Vec::new(),
        };
        cluster.launch(Launch {
            name: format!("{name}/kube-apiserver"),
            program: bins.apiserver.clone(),
            args: apiserver_args,
            log: logs.join("kube-apiserver.log"),
        })?;
        Ok(cluster)
    }

    fn launch(&mut self, launch: Launch) -> Result<()> {
        self.procs.push(launch.spawn()?);
        self.launches.push(launch);
        Ok(())
    }

    /// Stops kube-apiserver (SIGTERM, as an upgrade or a crash-restart would), keeps it
    /// down for `down_for`, starts it again with the same flags and waits until it is
    /// ready. Every client's watches break. The scheduler and controller-manager ride it
    /// out once running; one still starting up exits (1.20's controller-manager dies with
    /// `F… client_builder_dynamic` when it cannot create its controllers' service accounts),
    /// and is started again once the API server is back, as the kubelet restarts a crashed
    /// static pod.
    pub async fn restart_apiserver(&mut self, down_for: Duration) -> Result<()> {
        // procs[i] was started from launches[i]; kube-apiserver is the first.
        if self.procs.len() != self.launches.len() {
            return Err(Error::ShutDown {
                name: self.name.clone(),
            });
        }
        self.procs[0].stop(Duration::from_secs(20));
        tokio::time::sleep(down_for).await;
        self.procs[0] = self.launches[0].spawn()?;
        self.wait_apiserver_ready(Duration::from_secs(90)).await?;
        for (proc, launch) in self.procs.iter_mut().zip(&self.launches).skip(1) {
            if let Err(exited) = proc.check_running() {
                tracing::warn!(%exited, "restarting a control-plane component");
                *proc = launch.spawn()?;
            }
        }
        Ok(())
    }

    /// Starts kube-scheduler and kube-controller-manager. Call after [`Cluster::wait_ready`]:
    /// the 1.20 controller-manager exits when `/healthz` is not reachable (or still forbidden
    /// while RBAC bootstraps) within 10 s.
    pub(crate) fn start_controllers(&mut self, bins: &Binaries) -> Result<()> {
        let p = |path: &Path| path.display().to_string();
        let logs = self.log_dir();
        let sched_kc = self.dir.join("scheduler.kubeconfig");
        let cm_kc = self.dir.join("controller-manager.kubeconfig");
        let name = self.name.clone();
        let scheduler_args = vec![
            arg("kubeconfig", p(&sched_kc)),
            arg("leader-elect", "false"),
            arg("port", 0),
            arg("secure-port", 0),
            arg("kube-api-qps", 500),
            arg("kube-api-burst", 1000),
            arg("v", 1),
        ];
        self.launch(Launch {
            name: format!("{name}/kube-scheduler"),
            program: bins.scheduler.clone(),
            args: scheduler_args,
            log: logs.join("kube-scheduler.log"),
        })?;
        let cm_args = vec![
            arg("kubeconfig", p(&cm_kc)),
            arg("leader-elect", "false"),
            arg("port", 0),
            arg("secure-port", 0),
            arg("service-account-private-key-file", p(&self.pki.sa_key)),
            arg("root-ca-file", p(&self.pki.ca_cert)),
            arg("cluster-signing-cert-file", p(&self.pki.ca_cert)),
            arg("cluster-signing-key-file", p(&self.pki.ca_key)),
            arg("use-service-account-credentials", "true"),
            arg("kube-api-qps", 200),
            arg("kube-api-burst", 400),
            arg("v", 1),
        ];
        self.launch(Launch {
            name: format!("{name}/kube-controller-manager"),
            program: bins.controller_manager.clone(),
            args: cm_args,
            log: logs.join("kube-controller-manager.log"),
        })
    }

    /// Waits until `/readyz` answers `ok` (and no component has exited).
    pub(crate) async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        for p in &mut self.procs {
            p.check_running()?;
        }
        self.wait_apiserver_ready(timeout).await
    }

    /// Waits until `/readyz` answers `ok` (and kube-apiserver has not exited).
    async fn wait_apiserver_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let client = self.client().await?;
        loop {
            match self.procs.first_mut() {
                Some(apiserver) => apiserver.check_running()?,
                None => {
                    return Err(Error::ShutDown {
                        name: self.name.clone(),
                    });
                }
            }
            let req = http::Request::get("/readyz").body(Vec::new());
            if let Ok(req) = req
                && let Ok(body) = client.request_text(req).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "{} /readyz (log: {})",
                        self.name,
                        self.log_dir().join("kube-apiserver.log").display()
                    ),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The cluster name (`hub`, `provider-a`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The API server URL, `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The ports the cluster listens on.
    pub fn ports(&self) -> ClusterPorts {
        self.ports
    }

    /// The admin (`system:masters`) kubeconfig, with all credentials embedded.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The directory holding this cluster's logs.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// A new admin client for this cluster.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// The processes of this cluster.
    pub fn processes(&self) -> Vec<ProcessRecord> {
        self.procs.iter().map(|p| p.record().clone()).collect()
    }

    /// Stops this cluster's processes (e.g. to simulate a provider that disappears).
    pub fn stop(&mut self) {
        crate::process::stop_all(&mut self.procs, Duration::from_secs(10));
    }
}
