//! The krew manifest (`krew/gpufed.yaml`) installs this crate's binary under the plugin
//! name kubectl derives from it, for every platform we release, at the crate's version.
//! No network: the URLs and sums are the release process' placeholders.

use std::collections::BTreeSet;

use serde_yaml::Value;

const MANIFEST: &str = include_str!("../krew/gpufed.yaml");

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_else(|| panic!("krew/gpufed.yaml: no string at {}", path.join(".")))
}

#[test]
fn krew_manifest_installs_the_plugin_for_every_platform() {
    let m: Value = serde_yaml::from_str(MANIFEST).expect("krew/gpufed.yaml is YAML");
    assert_eq!(
        str_at(&m, &["apiVersion"]),
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(str_at(&m, &["kind"]), "Plugin");
    // kubectl runs `kubectl-gpufed` for `kubectl gpufed`: the plugin name is the binary's
    // name without the `kubectl-` prefix.
    let bin = env!("CARGO_BIN_EXE_kubectl-gpufed")
        .rsplit(['/', '\\'])
        .next()
        .map(|b| b.trim_end_matches(".exe").to_owned())
        .expect("binary name");
    assert_eq!(
        Some(str_at(&m, &["metadata", "name"])),
        bin.strip_prefix("kubectl-")
    );
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        str_at(&m, &["spec", "version"]),
        version,
        "spec.version = v + crate version"
    );
    for key in ["homepage", "shortDescription", "description"] {
        assert!(!str_at(&m, &["spec", key]).is_empty(), "spec.{key}");
    }

    let platforms = m["spec"]["platforms"].as_sequence().expect("spec.platforms");
    let mut seen = BTreeSet::new();
    for p in platforms {
        let os = str_at(p, &["selector", "matchLabels", "os"]);
        let arch = str_at(p, &["selector", "matchLabels", "arch"]);
        assert!(seen.insert((os, arch)), "{os}/{arch} twice");
        assert_eq!(str_at(p, &["bin"]), bin, "{os}/{arch}: bin");
        let uri = str_at(p, &["uri"]);
        assert!(
            uri.starts_with("https://") && uri.contains(&format!("/{version}/")),
            "{os}/{arch}: {uri} is not the {version} release"
        );
        assert!(
            uri.ends_with(&format!("_{os}_{arch}.tar.gz")),
            "{os}/{arch}: {uri}"
        );
        let sum = str_at(p, &["sha256"]);
        assert!(
            sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()),
            "{os}/{arch}: sha256 must be 64 hex digits (krew validates it)"
        );
        let files = p["files"].as_sequence().expect("files");
        assert!(
            files.iter().any(|f| f["from"].as_str() == Some(bin.as_str())),
            "{os}/{arch}: the archive's binary is not installed"
        );
    }
    for want in [
        ("linux", "amd64"),
        ("linux", "arm64"),
        ("darwin", "amd64"),
        ("darwin", "arm64"),
    ] {
        assert!(seen.contains(&want), "no platform {}/{}", want.0, want.1);
    }
}
