//! The provider chart's device plugin DaemonSet as the plugin reads it: its args parsed
//! with the binary's own flags (`gpufed_device_plugin::cli::Cli`), and every path a flag
//! names mounted from the same path on the host, under `devicePlugin.kubeletRootDir`.
//! Also the priority class (`devicePlugin.priorityClassName`) and the ResourceQuota some
//! platforms need for it (`devicePlugin.priorityClassQuota`).

use std::path::{Path, PathBuf};

use clap::{CommandFactory as _, Parser as _};
use gpufed_device_plugin::cli::Cli;
use gpufed_device_plugin::{DEFAULT_PLUGIN_DIR, DEFAULT_POD_RESOURCES_SOCKET};
use serde_json::Value;

use super::{NS, of_kind, render, try_render};

const CHART: &str = "gpufed-provider";

/// The DaemonSet's pod spec in a rendering of the provider chart.
fn pod_of(docs: &[Value]) -> &Value {
    let ds = of_kind(docs, "DaemonSet");
    assert_eq!(ds.len(), 1, "one device plugin DaemonSet");
    &ds[0]["spec"]["template"]["spec"]
}

/// The plugin as the pod starts it. Env set by the chart must be the plugin's own (a
/// misspelt name would be silently ignored by the plugin); those are fieldRefs here, so
/// only their names are checked, and the process' own env is what clap sees for them.
fn plugin_cli(pod: &Value) -> Cli {
    let container = &pod["containers"][0];
    assert_eq!(container["name"], "device-plugin");
    let cmd = Cli::command();
    for env in container["env"].as_array().expect("env") {
        let name = env["name"].as_str().expect("env name");
        assert!(
            name == "RUST_LOG"
                || cmd
                    .get_arguments()
                    .any(|a| a.get_env() == Some(std::ffi::OsStr::new(name))),
            "env {name} is no flag of gpufed-device-plugin"
        );
    }
    let argv = super::argv("gpufed-device-plugin", container);
    Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("gpufed-device-plugin rejects {argv:?}: {e}"))
}

/// The hostPath volume mounted at `dir` in the plugin's container, with the mount's
/// readOnly; it must be the same directory on the host as in the container, so that the
/// paths the plugin logs and hands kubelet are the host's.
fn host_dir<'a>(pod: &'a Value, dir: &Path) -> (&'a Value, bool) {
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"].as_str().map(Path::new) == Some(dir))
        .unwrap_or_else(|| panic!("nothing mounted at {}", dir.display()));
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let host = &volume["hostPath"];
    assert_eq!(
        host["path"].as_str().map(Path::new),
        Some(dir),
        "{}: mounted from the same host path",
        dir.display()
    );
    (host, mount["readOnly"] == true)
}

/// The plugin's flags and the pod's hostPaths agree, all under `root`; the node key is
/// the only hostPath elsewhere.
fn assert_paths_under(pod: &Value, cli: &Cli, root: &str) {
    let root = Path::new(root);
    let kubelet = cli.kubelet_config();
    assert_eq!(
        kubelet.plugin_dir,
        root.join("device-plugins"),
        "--plugin-dir under kubeletRootDir"
    );
    let (plugins, read_only) = host_dir(pod, &kubelet.plugin_dir);
    assert!(
        !read_only,
        "the plugin creates its socket in the plugin directory"
    );
    // A wrong root must fail the pod, not create an empty directory kubelet never reads.
    assert_eq!(plugins["type"], "Directory");
    let socket = kubelet
        .pod_resources_socket
        .as_deref()
        .expect("PodResources enabled");
    assert_eq!(
        socket,
        root.join("pod-resources/kubelet.sock"),
        "--pod-resources-socket under kubeletRootDir"
    );
    let (_, read_only) = host_dir(pod, socket.parent().expect("socket in a directory"));
    assert!(read_only, "PodResources mounted read-only");
    let key_dir = cli.node_key.parent().expect("key in a directory").to_owned();
    host_dir(pod, &key_dir);
    for volume in pod["volumes"].as_array().expect("volumes") {
        let Some(path) = volume["hostPath"]["path"].as_str() else {
            continue;
        };
        assert!(
            Path::new(path).starts_with(root) || Path::new(path) == key_dir,
            "hostPath {path} outside {} and the node key's directory",
            root.display()
        );
    }
}

/// Defaults (kubelet's standard root, system-node-critical, no quota) and other values
/// (k0s' and microk8s' roots, no or another priority class, the quota), each rendered and
/// read as the plugin and the API server would; and the values the chart must refuse.
pub fn check_device_plugin(helm: &Path) {
    // Defaults: the chart passes what the binary would assume anyway.
    let docs = render(helm, CHART, CHART, &[]);
    let pod = pod_of(&docs);
    let cli = plugin_cli(pod);
    assert_eq!(cli.plugin_dir, PathBuf::from(DEFAULT_PLUGIN_DIR));
    assert_eq!(cli.pod_resources_socket, DEFAULT_POD_RESOURCES_SOCKET);
    assert!(cli.apply_node_labels);
    assert_paths_under(pod, &cli, "/var/lib/kubelet");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(of_kind(&docs, "ResourceQuota").is_empty(), "no quota by default");

    // k0s' root (a trailing slash is dropped), no priority class: the key is left out, not
    // rendered empty, and nothing points into the standard root.
    let docs = render(
        helm,
        CHART,
        CHART,
        &[
            "--set",
            "devicePlugin.kubeletRootDir=/var/lib/k0s/kubelet/",
            "--set",
            "devicePlugin.priorityClassName=",
        ],
    );
    let pod = pod_of(&docs);
    let cli = plugin_cli(pod);
    assert_paths_under(pod, &cli, "/var/lib/k0s/kubelet");
    assert!(
        pod.get("priorityClassName").is_none(),
        "no priorityClassName: {}",
        pod["priorityClassName"]
    );
    let text = pod.to_string();
    assert!(
        !text.contains("/var/lib/kubelet"),
        "the standard root left in {text}"
    );
    assert!(!text.contains("//"), "a doubled slash in {text}");
    assert!(of_kind(&docs, "ResourceQuota").is_empty());

    // microk8s' root, a class of one's own and the quota that admits it.
    let docs = render(
        helm,
        CHART,
        CHART,
        &[
            "--set",
            "devicePlugin.kubeletRootDir=/var/snap/microk8s/common/var/lib/kubelet",
            "--set",
            "devicePlugin.priorityClassName=gpu-critical",
            "--set",
            "devicePlugin.priorityClassQuota.create=true",
            "--set",
            "devicePlugin.priorityClassQuota.pods=50",
        ],
    );
    let pod = pod_of(&docs);
    let cli = plugin_cli(pod);
    assert_paths_under(pod, &cli, "/var/snap/microk8s/common/var/lib/kubelet");
    assert_eq!(pod["priorityClassName"], "gpu-critical");
    let quotas = of_kind(&docs, "ResourceQuota");
    assert_eq!(quotas.len(), 1, "the priority class quota");
    let quota = quotas[0];
    assert_eq!(quota["metadata"]["namespace"], NS, "in the DaemonSet's namespace");
    assert_eq!(quota["spec"]["hard"], serde_json::json!({ "pods": "50" }));
    // The API server's admission asks for a quota whose scope selects the pod's class.
    assert_eq!(
        quota["spec"]["scopeSelector"]["matchExpressions"],
        serde_json::json!([
            { "scopeName": "PriorityClass", "operator": "In", "values": ["gpu-critical"] }
        ])
    );

    // Refused: a quota for no class, a relative root, a root of "/".
    for (values, why) in [
        (
            &[
                "devicePlugin.priorityClassQuota.create=true",
                "devicePlugin.priorityClassName=",
            ][..],
            "priorityClassName",
        ),
        (
            &["devicePlugin.kubeletRootDir=var/lib/kubelet"][..],
            "kubeletRootDir",
        ),
        (&["devicePlugin.kubeletRootDir=/"][..], "kubeletRootDir"),
    ] {
        let args: Vec<&str> = values.iter().flat_map(|v| ["--set", v]).collect();
        match try_render(helm, CHART, CHART, &args) {
            Ok(_) => panic!("the chart renders {values:?}"),
            Err(e) => assert!(e.contains(why), "{values:?} refused for another reason: {e}"),
        }
    }
}
