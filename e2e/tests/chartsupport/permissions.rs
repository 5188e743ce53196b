//! The permissions each chart identity needs, and must not have, as (verb, group,
//! resource, subresource, namespace): asked of the real authorizer by
//! [`super::access::access`].

use super::{AGENT_NS, CHALLENGE_CM, NS, RBAC};

/// (verb, group, resource, subresource, namespace) the operator uses on the hub. `resource`
/// may name one object as `resource/name` (as `kubectl auth can-i` does); Leases are
/// always asked about by their name, gpufed-operator. The operator run below proves the
/// chart is sufficient; this list names each permission so a failure says which one is
/// missing.
pub const HUB_NEEDS: &[(&str, &str, &str, &str, &str)] = &[
    ("get", "gpufed.io", "gpuproviders", "", ""),
    ("list", "gpufed.io", "gpuproviders", "", ""),
    ("watch", "gpufed.io", "gpuproviders", "", ""),
    ("patch", "gpufed.io", "gpuproviders", "status", ""),
    ("get", "gpufed.io", "computejobs", "", "team-a"),
    ("list", "gpufed.io", "computejobs", "", ""),
    ("watch", "gpufed.io", "computejobs", "", ""),
    ("patch", "gpufed.io", "computejobs", "", "team-a"),
    ("patch", "gpufed.io", "computejobs", "status", "team-a"),
    // ComputeServices (operator/src/service): the service and its finalizer and status;
    // its replica ComputeJobs created, retired (patch) and deleted once metered; the
    // finalizers update that lets the replicas, the hub Service and Endpoints carry an
    // owner reference with blockOwnerDeletion; the hub Service (read first) and its
    // Endpoints by server-side apply.
    ("get", "gpufed.io", "computeservices", "", "team-a"),
    ("list", "gpufed.io", "computeservices", "", ""),
    ("watch", "gpufed.io", "computeservices", "", ""),
    ("patch", "gpufed.io", "computeservices", "", "team-a"),
    ("patch", "gpufed.io", "computeservices", "status", "team-a"),
    ("update", "gpufed.io", "computeservices", "finalizers", "team-a"),
    ("create", "gpufed.io", "computejobs", "", "team-a"),
    ("delete", "gpufed.io", "computejobs", "", "team-a"),
    // ComputeQuotas (operator/src/quota): watched, their status written.
    ("list", "gpufed.io", "computequotas", "", ""),
    ("watch", "gpufed.io", "computequotas", "", ""),
    ("patch", "gpufed.io", "computequotas", "status", "team-a"),
    ("get", "", "services", "", "team-a"),
    ("create", "", "services", "", "team-a"),
    ("patch", "", "services", "", "team-a"),
    ("create", "", "endpoints", "", "team-a"),
    ("patch", "", "endpoints", "", "team-a"),
    // A ComputeService's revision history: its ControllerRevisions, watched, created,
    // renumbered (patch) and pruned.
    ("list", "apps", "controllerrevisions", "", ""),
    ("watch", "apps", "controllerrevisions", "", ""),
    ("create", "apps", "controllerrevisions", "", "team-a"),
    ("patch", "apps", "controllerrevisions", "", "team-a"),
    ("delete", "apps", "controllerrevisions", "", "team-a"),
    ("create", "events.k8s.io", "events", "", "team-a"),
    ("list", "gpufed.io", "stakes", "", ""),
    ("patch", "gpufed.io", "stakes", "status", ""),
    ("create", "coordination.k8s.io", "leases", "", NS),
    ("get", "coordination.k8s.io", "leases", "", NS),
    ("update", "coordination.k8s.io", "leases", "", NS),
    ("get", "", "secrets", "", NS),
    ("get", "", "namespaces", "", ""),
    ("list", "", "namespaces", "", ""),
    ("watch", "", "namespaces", "", ""),
    ("get", "", "configmaps", "", NS),
    ("list", "", "configmaps", "", NS),
    ("create", "", "configmaps", "", NS),
    ("update", "", "configmaps", "", NS),
    ("delete", "", "configmaps", "", NS),
    // Pull mode (operator/src/member/pull.rs): the agent namespace, its ServiceAccount, the
    // two RoleBindings (bind of exactly the chart's two ClusterRoles), its ConfigMaps
    // (all three by server-side apply: create narrowed to their names), the Assignments.
    ("create", "", "namespaces", "", ""),
    ("patch", "", "namespaces", "", ""),
    ("get", "", "serviceaccounts/gpufed-agent", "", AGENT_NS),
    ("create", "", "serviceaccounts/gpufed-agent", "", AGENT_NS),
    ("patch", "", "serviceaccounts/gpufed-agent", "", AGENT_NS),
    ("create", RBAC, "rolebindings/gpufed-agent", "", AGENT_NS),
    ("patch", RBAC, "rolebindings/gpufed-agent", "", AGENT_NS),
    ("get", RBAC, "rolebindings/gpufed-agent-bootstrap", "", AGENT_NS),
    (
        "create",
        RBAC,
        "rolebindings/gpufed-agent-bootstrap",
        "",
        AGENT_NS,
    ),
    ("patch", RBAC, "rolebindings/gpufed-agent-bootstrap", "", AGENT_NS),
    ("bind", RBAC, "clusterroles/gpufed-agent", "", AGENT_NS),
    ("bind", RBAC, "clusterroles/gpufed-agent-bootstrap", "", AGENT_NS),
    ("create", "", "configmaps/gpufed-agent-config", "", AGENT_NS),
    ("create", "", "configmaps/gpufed-agent-report", "", AGENT_NS),
    ("create", "", "configmaps/gpufed-challenge", "", AGENT_NS),
    ("patch", "", "configmaps/gpufed-agent-config", "", AGENT_NS),
    ("get", "", "configmaps/gpufed-agent-report", "", AGENT_NS),
    ("patch", "", "configmaps/gpufed-agent-report", "", AGENT_NS),
    // The agents' reports watched in every namespace (by name, metadata only).
    ("list", "", "configmaps/gpufed-agent-report", "", ""),
    ("watch", "", "configmaps/gpufed-agent-report", "", ""),
    ("patch", "", "configmaps/gpufed-challenge", "", AGENT_NS),
    ("get", "gpufed.io", "assignments", "", AGENT_NS),
    ("create", "gpufed.io", "assignments", "", AGENT_NS),
    ("patch", "gpufed.io", "assignments", "", AGENT_NS),
    ("delete", "gpufed.io", "assignments", "", AGENT_NS),
    ("deletecollection", "gpufed.io", "assignments", "", AGENT_NS),
];

/// What the hub's identity must NOT be able to do.
pub const HUB_DENIED: &[(&str, &str, &str, &str, &str)] = &[
    // Events are created one by one; Assignments (credential copies) read by name only.
    ("patch", "events.k8s.io", "events", "", "team-a"),
    ("list", "gpufed.io", "assignments", "", AGENT_NS),
    ("watch", "gpufed.io", "assignments", "", AGENT_NS),
    ("get", "", "secrets", "", "kube-system"),
    ("list", "", "secrets", "", NS),
    ("watch", "", "secrets", "", NS),
    // ComputeServices are the users': the operator writes only their status and finalizer.
    ("create", "gpufed.io", "computeservices", "", "team-a"),
    ("update", "gpufed.io", "computeservices", "", "team-a"),
    ("delete", "gpufed.io", "computeservices", "", "team-a"),
    ("update", "gpufed.io", "computejobs", "", "team-a"),
    // A team's quota is set by whoever administers the namespace, never by the operator.
    ("create", "gpufed.io", "computequotas", "", "team-a"),
    ("patch", "gpufed.io", "computequotas", "", "team-a"),
    ("delete", "gpufed.io", "computequotas", "", "team-a"),
    // The hub Service and Endpoints are applied by name, never listed or deleted (owner
    // references remove them with their ComputeService).
    ("list", "", "services", "", ""),
    ("delete", "", "services", "", "team-a"),
    ("get", "", "endpoints", "", "team-a"),
    ("delete", "", "endpoints", "", "team-a"),
    ("create", "discovery.k8s.io", "endpointslices", "", "team-a"),
    // ControllerRevisions hold templates, never anything to rewrite: no update.
    ("update", "apps", "controllerrevisions", "", "team-a"),
    ("create", "apps", "deployments", "", "team-a"),
    ("update", "gpufed.io", "gpuproviders", "", ""),
    ("create", "gpufed.io", "stakes", "", "team-a"),
    ("create", "coordination.k8s.io", "leases", "", "kube-system"),
    ("create", "", "pods", "", NS),
    // ConfigMaps outside NS: only the three pull-mode names, created, read and written
    // by name; no other ConfigMap created anywhere else.
    ("create", "", "configmaps", "", "kube-system"),
    ("create", "", "configmaps", "", AGENT_NS),
    ("create", "", "configmaps/other", "", AGENT_NS),
    ("list", "", "configmaps", "", "kube-system"),
    ("watch", "", "configmaps", "", ""),
    ("watch", "", "configmaps/gpufed-agent-config", "", ""),
    ("get", "", "configmaps/other", "", "kube-system"),
    ("patch", "", "configmaps/other", "", AGENT_NS),
    ("delete", "", "configmaps/gpufed-agent-report", "", AGENT_NS),
    ("delete", "", "namespaces", "", ""),
    // No other ServiceAccount, no tokens: only the agent and its bootstrap group get those.
    ("create", "", "serviceaccounts", "", AGENT_NS),
    ("patch", "", "serviceaccounts/default", "", "kube-system"),
    ("create", "", "serviceaccounts/gpufed-agent", "token", AGENT_NS),
    ("create", "", "serviceaccounts/gpufed", "token", NS),
    // RBAC: the two RoleBindings by name, bind of the two ClusterRoles, nothing else.
    ("create", RBAC, "rolebindings", "", "kube-system"),
    ("create", RBAC, "rolebindings/other", "", AGENT_NS),
    ("delete", RBAC, "rolebindings/gpufed-agent", "", AGENT_NS),
    ("create", RBAC, "roles", "", AGENT_NS),
    ("create", RBAC, "clusterroles", "", ""),
    ("create", RBAC, "clusterrolebindings", "", ""),
    ("bind", RBAC, "clusterroles/cluster-admin", "", AGENT_NS),
    ("bind", RBAC, "clusterroles/gpufed", "", AGENT_NS),
    ("bind", RBAC, "roles/gpufed-agent", "", AGENT_NS),
    ("escalate", RBAC, "clusterroles/gpufed-agent", "", ""),
    ("impersonate", "", "serviceaccounts", "", AGENT_NS),
    ("impersonate", "", "users", "", ""),
    ("patch", "gpufed.io", "assignments", "status", AGENT_NS),
];

/// What a pull-mode agent's hub identity may do, in its own namespace only.
pub const AGENT_HUB_NEEDS: &[(&str, &str, &str, &str, &str)] = &[
    ("list", "gpufed.io", "assignments", "", AGENT_NS),
    ("patch", "gpufed.io", "assignments", "status", AGENT_NS),
    ("get", "", "configmaps/gpufed-agent-config", "", AGENT_NS),
    ("get", "", "configmaps/gpufed-challenge", "", AGENT_NS),
    ("watch", "", "configmaps/gpufed-challenge", "", AGENT_NS),
    ("patch", "", "configmaps/gpufed-agent-report", "", AGENT_NS),
    ("create", "", "serviceaccounts/gpufed-agent", "token", AGENT_NS),
];

pub const AGENT_HUB_DENIED: &[(&str, &str, &str, &str, &str)] = &[
    ("list", "gpufed.io", "assignments", "", "gpufed-agent-other"),
    ("create", "gpufed.io", "assignments", "", AGENT_NS),
    ("patch", "gpufed.io", "assignments", "", AGENT_NS),
    ("patch", "", "configmaps/gpufed-agent-config", "", AGENT_NS),
    ("patch", "", "configmaps/gpufed-challenge", "", AGENT_NS),
    ("list", "", "configmaps", "", AGENT_NS),
    ("watch", "", "configmaps/gpufed-agent-config", "", AGENT_NS),
    ("get", "", "secrets", "", AGENT_NS),
    ("create", "", "serviceaccounts/default", "token", AGENT_NS),
    (
        "create",
        "",
        "serviceaccounts/gpufed-agent",
        "token",
        "gpufed-agent-other",
    ),
    ("list", "gpufed.io", "computejobs", "", ""),
    ("get", "gpufed.io", "gpuproviders", "", ""),
];

/// What the operator does on a member (operator/src/job/dispatch.rs, observe.rs,
/// provider/observe.rs), serving replicas' Services included.
pub const MEMBER_NEEDS: &[(&str, &str, &str, &str, &str)] = &[
    ("create", "", "namespaces", "", ""),
    ("patch", "", "namespaces", "", ""),
    ("delete", "", "namespaces", "", ""),
    ("create", "networking.k8s.io", "networkpolicies", "", "gpufed-t"),
    ("patch", "networking.k8s.io", "networkpolicies", "", "gpufed-t"),
    ("create", "", "resourcequotas", "", "gpufed-t"),
    ("patch", "", "resourcequotas", "", "gpufed-t"),
    ("delete", "", "resourcequotas", "", "gpufed-t"),
    ("create", "", "services", "", "gpufed-t"),
    ("patch", "", "services", "", "gpufed-t"),
    // A serving replica's Service `serve`, read back for its node port / load balancer.
    ("get", "", "services", "", "gpufed-t"),
    ("get", "", "pods", "", "gpufed-t"),
    ("list", "", "pods", "", ""),
    ("watch", "", "pods", "", ""),
    ("create", "", "pods", "", "gpufed-t"),
    ("patch", "", "pods", "", "gpufed-t"),
    ("deletecollection", "", "pods", "", "gpufed-t"),
    // A fenced pod stuck terminating on a lost node, by name and uid (job/dispatch.rs).
    ("delete", "", "pods", "", "gpufed-t"),
    // A job's checkpoint credentials: the tenant namespace's copy, by name only.
    ("get", "", "secrets/gpufed-checkpoint", "", "gpufed-t"),
    ("create", "", "secrets/gpufed-checkpoint", "", "gpufed-t"),
    ("patch", "", "secrets/gpufed-checkpoint", "", "gpufed-t"),
    ("delete", "", "secrets/gpufed-checkpoint", "", "gpufed-t"),
    ("get", "", "nodes", "", ""),
    ("list", "", "nodes", "", ""),
    ("watch", "", "nodes", "", ""),
    // GPU verification: challenges read back and written by server-side apply, whose
    // first apply creates the ConfigMap: authorized as patch and as create of that name
    // (proven by a real apply below).
    ("get", "", CHALLENGE_CM, "", NS),
    ("patch", "", CHALLENGE_CM, "", NS),
    ("create", "", CHALLENGE_CM, "", NS),
];

pub const MEMBER_DENIED: &[(&str, &str, &str, &str, &str)] = &[
    ("get", "", "secrets", "", "kube-system"),
    ("get", "", "secrets/other", "", "gpufed-t"),
    ("create", "", "secrets", "", "gpufed-t"),
    ("patch", "", "secrets/other", "", "gpufed-t"),
    ("list", "", "secrets", "", ""),
    ("list", "", "secrets", "", NS),
    // Challenges go through a ConfigMap so that the hub never writes Nodes.
    ("patch", "", "nodes", "", ""),
    ("get", "", "configmaps/other", "", NS),
    ("patch", "", "configmaps/other", "", NS),
    ("list", "", "configmaps", "", NS),
    // A plain create (POST, no name) of any ConfigMap.
    ("create", "", "configmaps", "", NS),
    ("create", "", "configmaps/other", "", NS),
    ("delete", "", CHALLENGE_CM, "", NS),
    ("get", "", CHALLENGE_CM, "", "kube-system"),
    ("patch", "", CHALLENGE_CM, "", "kube-system"),
    (
        "create",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "",
        "",
    ),
];

/// What the pull-mode agent does in its member (agent/src/sync.rs, identity.rs): all the
/// operator does on a push-mode member (it applies Assignments with the operator's code),
/// removes withdrawn work, keeps its identity Secret (server-side apply: patch, and
/// create of that name).
pub const AGENT_MEMBER_EXTRA_NEEDS: &[(&str, &str, &str, &str, &str)] = &[
    ("list", "", "namespaces", "", ""),
    ("delete", "", "pods", "", "gpufed-t"),
    ("get", "", "secrets/gpufed-agent-identity", "", NS),
    ("create", "", "secrets/gpufed-agent-identity", "", NS),
    ("patch", "", "secrets/gpufed-agent-identity", "", NS),
];

pub const AGENT_MEMBER_DENIED: &[(&str, &str, &str, &str, &str)] = &[
    ("list", "", "secrets", "", NS),
    ("watch", "", "secrets", "", NS),
    ("get", "", "secrets/other", "", NS),
    // A plain create (POST, no name) of any Secret.
    ("create", "", "secrets", "", NS),
    ("delete", "", "secrets/gpufed-agent-identity", "", NS),
    ("get", "", "secrets/gpufed-agent-identity", "", "kube-system"),
    ("create", "", "secrets/gpufed-agent-identity", "", "kube-system"),
    ("get", "", "secrets", "", "kube-system"),
    ("patch", "", "nodes", "", ""),
    ("get", "", "configmaps/other", "", NS),
    ("create", "", "configmaps", "", NS),
];

/// What the device plugin does (device-plugin/src/node.rs, challenge.rs): labels and the
/// signed report on its Node, the hub's challenge read from the release namespace.
pub const DEVICE_PLUGIN_NEEDS: &[(&str, &str, &str, &str, &str)] = &[
    ("get", "", "nodes", "", ""),
    ("patch", "", "nodes", "", ""),
    ("get", "", CHALLENGE_CM, "", NS),
];

pub const DEVICE_PLUGIN_DENIED: &[(&str, &str, &str, &str, &str)] = &[
    ("patch", "", CHALLENGE_CM, "", NS),
    ("get", "", "configmaps/other", "", NS),
    ("list", "", "configmaps", "", NS),
    ("get", "", CHALLENGE_CM, "", "kube-system"),
    ("get", "", "secrets", "", NS),
    ("list", "", "pods", "", ""),
];
