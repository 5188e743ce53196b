//! The RBAC audit of rendered charts: least privilege in every Role and ClusterRole, and
//! the hub chart's pull-mode ClusterRoles as `gpufed_api::pull::cluster_roles()` has them.

use serde_json::Value;

use super::{AGENT_IDENTITY_SECRET, AGENT_ROLES, RBAC, kind, of_kind, strings};

/// The member copy of a job's checkpoint credentials (operator/src/job/build/credentials.rs).
const CHECKPOINT_SECRET: &str = gpufed_operator::job::build::credentials::MEMBER_SECRET;

/// No wildcard anywhere in the rules; no escalate or impersonate; `bind` only of the two
/// pull-mode ClusterRoles, by name; no access to RBAC objects but the two pull-mode
/// RoleBindings, by name (get/create/patch); no Secret access outside a namespaced Role,
/// and there either `get` or, by name, the agent's identity Secret (get/create/patch) —
/// but for the checkpoint credentials copy `gpufed-checkpoint`, by name, anywhere
/// (get/create/patch/delete).
pub fn assert_least_privilege(docs: &[Value]) {
    for doc in docs.iter().filter(|d| matches!(kind(d), "ClusterRole" | "Role")) {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        for rule in doc["rules"].as_array().expect("rules") {
            for field in ["apiGroups", "resources", "verbs"] {
                let values = rule[field].as_array().expect(field);
                assert!(!values.is_empty(), "{name}: empty {field}");
                assert!(
                    values
                        .iter()
                        .all(|v| v.as_str().is_some_and(|s| !s.contains('*'))),
                    "{name}: wildcard in {field}: {rule}"
                );
            }
            let verbs = strings(&rule["verbs"]);
            let resources = strings(&rule["resources"]);
            let mut names = strings(&rule["resourceNames"]);
            names.sort_unstable();
            let only = |allowed: &[&str]| verbs.iter().all(|v| allowed.contains(v));
            for v in ["escalate", "impersonate"] {
                assert!(
                    !verbs.contains(&v),
                    "{name}: verb {v} grants privilege escalation: {rule}"
                );
            }
            if verbs.contains(&"bind") {
                assert!(
                    kind(doc) == "ClusterRole"
                        && strings(&rule["apiGroups"]) == [RBAC]
                        && resources == ["clusterroles"]
                        && verbs == ["bind"]
                        && names == AGENT_ROLES,
                    "{name}: bind only of the ClusterRoles {AGENT_ROLES:?}, by name: {rule}"
                );
            }
            for r in &resources {
                match *r {
                    "clusterroles" => assert!(
                        verbs == ["bind"],
                        "{name}: no access to ClusterRoles but bind: {rule}"
                    ),
                    "rolebindings" => assert!(
                        only(&["get", "create", "patch"]) && names == AGENT_ROLES,
                        "{name}: RoleBindings only {AGENT_ROLES:?}, by name, get/create/patch: {rule}"
                    ),
                    "roles" | "clusterrolebindings" => {
                        panic!("{name}: no access to {r} (a way to grant oneself more): {rule}")
                    }
                    _ => {}
                }
            }
            // The one cluster-wide exception: a job's checkpoint credentials copy, by name
            // (tenant namespaces come and go with jobs, so no Role could hold it).
            let checkpoint = names == [CHECKPOINT_SECRET] && only(&["get", "create", "patch", "delete"]);
            if resources.contains(&"secrets") && !checkpoint {
                assert_eq!(kind(doc), "Role", "{name}: Secrets only in a namespaced Role");
                let get_only = verbs == ["get"];
                let identity = names == [AGENT_IDENTITY_SECRET] && only(&["get", "create", "patch"]);
                assert!(
                    get_only || identity,
                    "{name}: Secrets get only, or the agent's identity Secret by name: {rule}"
                );
            }
        }
    }
}

/// The hub chart's ClusterRoles: the operator's and exactly the two pull-mode ones, whose
/// rules are `gpufed_api::pull::cluster_roles()` (what the operator and the agent expect).
pub fn check_agent_cluster_roles(docs: &[Value]) {
    let mut found: Vec<&str> = of_kind(docs, "ClusterRole")
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    found.sort_unstable();
    assert_eq!(found, ["gpufed", "gpufed-agent", "gpufed-agent-bootstrap"]);
    let want = gpufed_api::pull::cluster_roles();
    assert_eq!(want.len(), AGENT_ROLES.len());
    for role in &want {
        let name = role["metadata"]["name"].as_str().expect("name");
        assert!(AGENT_ROLES.contains(&name), "{name}");
        let rendered = of_kind(docs, "ClusterRole")
            .into_iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("the hub chart ships ClusterRole {name}"));
        assert_eq!(
            rendered["rules"], role["rules"],
            "ClusterRole {name}: the chart's rules differ from gpufed_api::pull::cluster_roles()"
        );
        for (k, v) in role["metadata"]["labels"].as_object().expect("labels") {
            assert_eq!(
                &rendered["metadata"]["labels"][k], v,
                "ClusterRole {name}: label {k}"
            );
        }
    }
}
