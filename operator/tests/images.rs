//! The Dockerfiles of `images/` build what the workspace really has and run it as non-root:
//! package and binary names against the Cargo manifests, the builder's Rust against the
//! workspace's rust-version, the runtime stage's USER, and the charts' image names.
//! No image is built here (no container engine on the test machines): docs/images.md.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// `images/<dir>`, the package it builds, the chart values naming its image, and the path
/// of keys to that image's `repository` in those values (the provider chart names two
/// images: the device plugin's and the pull-mode agent's).
const IMAGES: &[(&str, &str, &str, &[&str])] = &[
    (
        "operator",
        "gpufed-operator",
        "charts/gpufed/values.yaml",
        &["image", "repository"],
    ),
    (
        "device-plugin",
        "gpufed-device-plugin",
        "charts/gpufed-provider/values.yaml",
        &["devicePlugin", "image", "repository"],
    ),
    (
        "agent",
        "gpufed-agent",
        "charts/gpufed-provider/values.yaml",
        &["agent", "image", "repository"],
    ),
];

fn root() -> PathBuf {
    // The package's directory as cargo gives it at run time: a test binary built in a shared
    // target dir from another checkout still finds this checkout's files.
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .expect("workspace root")
    .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The string at `path` (a path of mapping keys) in the YAML file `rel`.
fn yaml_string(rel: &str, path: &[&str]) -> Option<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    path.iter()
        .try_fold(&doc, |v, key| v.get(*key))?
        .as_str()
        .map(str::to_owned)
}

/// The value of `key = "value"` on a TOML line.
fn toml_value(line: &str, key: &str) -> Option<String> {
    let (k, v) = line.split_once('=')?;
    (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
}

/// Package name and binary names of a crate (`[[bin]]` names, plus the package name when
/// `src/main.rs` exists: cargo's default binary).
fn crate_bins(dir: &str) -> (String, BTreeSet<String>) {
    let manifest = read(&format!("{dir}/Cargo.toml"));
    let (mut section, mut package, mut bins) = (String::new(), None, BTreeSet::new());
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if let Some(name) = toml_value(line, "name") {
            match section.as_str() {
                "[package]" => package = Some(name),
                "[[bin]]" => {
                    bins.insert(name);
                }
                _ => {}
            }
        }
    }
    let package = package.unwrap_or_else(|| panic!("{dir}/Cargo.toml: no package name"));
    if root().join(dir).join("src/main.rs").exists() {
        bins.insert(package.clone());
    }
    (package, bins)
}

/// The directory of the workspace member named `package`.
fn member_dir(package: &str) -> Option<String> {
    let manifest = read("Cargo.toml");
    let members = manifest.lines().find_map(|l| toml_value(l, "members"))?;
    members
        .trim_matches(['[', ']'])
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|dir| root().join(dir).join("Cargo.toml").exists())
        .find(|dir| crate_bins(dir).0 == package)
}

/// Dockerfile instructions, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// The word after `flag` in `text`.
fn after<'a>(text: &'a str, flag: &str) -> Option<&'a str> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == flag)?;
    words.next()
}

/// The uid of the last `USER` instruction in `ins`.
fn last_user(ins: &[String]) -> Option<&str> {
    ins.iter().filter_map(|i| i.strip_prefix("USER ")).next_back()
}

#[test]
fn dockerfiles_build_real_binaries_and_run_as_non_root() {
    let rust_version = read("Cargo.toml")
        .lines()
        .find_map(|l| toml_value(l, "rust-version"))
        .expect("workspace rust-version");
    for (dir, package, values, repository) in IMAGES {
        let path = format!("images/{dir}/Dockerfile");
        let ins = instructions(&read(&path));
        let crate_dir =
            member_dir(package).unwrap_or_else(|| panic!("{path}: no workspace member {package}"));
        let (_, bins) = crate_bins(&crate_dir);

        // Builder: cargo build --release --locked -p PACKAGE --bin BIN, BIN a real binary.
        let build = ins
            .iter()
            .find(|i| i.contains("cargo build"))
            .unwrap_or_else(|| panic!("{path}: no cargo build"));
        for flag in ["--release", "--locked"] {
            assert!(build.contains(flag), "{path}: cargo build without {flag}");
        }
        assert_eq!(after(build, "-p"), Some(*package), "{path}: -p");
        let bin = after(build, "--bin").unwrap_or_else(|| panic!("{path}: no --bin"));
        assert!(
            bins.contains(bin),
            "{path}: --bin {bin} is not a binary of {package}: {bins:?}"
        );
        assert!(
            build.contains(&format!("target/release/{bin} ")),
            "{path}: copies another binary out of target/"
        );
        let arg = format!("ARG RUST_VERSION={rust_version}");
        assert!(
            ins.contains(&arg),
            "{path}: want `{arg}` (the workspace's rust-version)"
        );

        // Runtime: the last stage, minimal, only the binary copied, non-root, runs the binary.
        let froms: Vec<usize> = (0..ins.len()).filter(|&i| ins[i].starts_with("FROM ")).collect();
        assert!(froms.len() >= 2, "{path}: not multi-stage");
        let runtime = &ins[froms[froms.len() - 1]..];
        let image = runtime[0].split_whitespace().nth(1).unwrap_or_default();
        assert!(
            image.contains("distroless"),
            "{path}: runtime image {image} is not minimal"
        );
        let copies: Vec<_> = runtime.iter().filter(|i| i.starts_with("COPY ")).collect();
        assert_eq!(
            copies.len(),
            1,
            "{path}: the runtime stage copies only the binary"
        );
        assert!(
            copies[0].starts_with("COPY --from=build ") && copies[0].ends_with(&format!("/{bin}")),
            "{path}: {}",
            copies[0]
        );
        let user = last_user(runtime).unwrap_or_else(|| panic!("{path}: runtime stage sets no USER"));
        let uid = user.split(':').next().unwrap_or_default().trim();
        assert!(
            uid.parse::<u32>().is_ok_and(|n| n != 0),
            "{path}: USER {user} is not a numeric non-root uid (runAsNonRoot needs one)"
        );
        let entry = runtime
            .iter()
            .find_map(|i| i.strip_prefix("ENTRYPOINT "))
            .unwrap_or_else(|| panic!("{path}: no ENTRYPOINT"));
        assert!(entry.contains(&format!("/{bin}\"")), "{path}: ENTRYPOINT {entry}");

        // The chart pulls an image named after the binary.
        let key = repository.join(".");
        let repo = yaml_string(values, repository).unwrap_or_else(|| panic!("{values}: no {key}"));
        assert!(
            repo.ends_with(&format!("/{bin}")),
            "{values}: {key} {repo} is not the {bin} image"
        );
    }
    assert!(
        read(".dockerignore").lines().any(|l| l.trim() == "target/"),
        ".dockerignore must keep target/ out of the build context"
    );
}

/// `template` runs the binary as the uid of the runtime stage's USER in
/// `images/<dir>/Dockerfile`.
fn assert_runs_as_the_image_user(dir: &str, template: &str) {
    let ins = instructions(&read(&format!("images/{dir}/Dockerfile")));
    let user = last_user(&ins).expect("USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        read(template).contains(&format!("runAsUser: {uid}")),
        "{template}: runAsUser differs from images/{dir}'s USER {user}"
    );
}

#[test]
fn the_operator_chart_runs_as_the_image_user() {
    assert_runs_as_the_image_user("operator", "charts/gpufed/templates/deployment.yaml");
}

#[test]
fn the_provider_chart_runs_the_agent_as_the_image_user() {
    assert_runs_as_the_image_user("agent", "charts/gpufed-provider/templates/agent.yaml");
}

/// Every image under `images/` is checked above, and no entry names a missing one.
#[test]
fn every_image_is_checked() {
    let dirs: BTreeSet<String> = std::fs::read_dir(root().join("images"))
        .expect("images/")
        .map(|e| e.expect("images/ entry"))
        .filter(|e| e.path().join("Dockerfile").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let checked: BTreeSet<String> = IMAGES.iter().map(|i| i.0.to_owned()).collect();
    assert_eq!(dirs, checked, "images/ vs the IMAGES this test checks");
}

#[test]
fn instructions_join_continuations_and_drop_comments() {
    let ins = instructions("# c\nFROM a AS b\nRUN x \\\n    y\n\nUSER 1\n");
    assert_eq!(ins, ["FROM a AS b", "RUN x  y", "USER 1"]);
    assert_eq!(after("cargo build -p foo --bin bar", "--bin"), Some("bar"));
    assert_eq!(last_user(&ins), Some("1"));
}
