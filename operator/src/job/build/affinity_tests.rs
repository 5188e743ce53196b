use serde_json::{Value, json};

use super::*;

fn pod(affinity: Value) -> PodSpec {
    serde_json::from_value(json!({"containers": [{"name": "main", "image": "x"}], "affinity": affinity}))
        .expect("pod spec")
}

fn required(terms: Value) -> PodSpec {
    pod(
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}),
    )
}

#[test]
fn node_affinity_terms_reach_the_engine_as_written() {
    let t = required(json!([
        {"matchExpressions": [{"key": "net", "operator": "In", "values": ["infiniband", "roce"]},
                              {"key": "gen", "operator": "Gt", "values": ["3"]}]},
        {"matchExpressions": [{"key": "spot", "operator": "DoesNotExist"}]}
    ]));
    let terms = node_terms(&t).expect("valid");
    assert_eq!(
        pl::describe_affinity(&terms),
        "net in (infiniband,roce),gen>3 or !spot"
    );
    assert_eq!(
        node_terms(&pod(json!({}))),
        Ok(Vec::new()),
        "no affinity: any node"
    );
    // Preferred terms only weigh where the scheduler may choose: the pin leaves it none.
    let preferred = pod(
        json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "net", "operator": "Exists"}]}}]}}),
    );
    assert_eq!(node_terms(&preferred), Ok(Vec::new()));
}

#[test]
fn a_node_affinity_placement_cannot_honour_is_an_error_naming_the_field() {
    let at = "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms";
    let cases = [
        (json!([]), format!("{at}: at least one term is required")),
        (
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]),
            format!("{at}[0].matchFields: not supported: gpufed chooses the node"),
        ),
        (
            json!([{}]),
            format!("{at}[0].matchExpressions: a term without requirements"),
        ),
        (
            json!([{"matchExpressions": [{"key": "a", "operator": "Exists"}]},
                   {"matchExpressions": [{"key": "a", "operator": "Exists"},
                                         {"key": "gen", "operator": "Gt", "values": ["four"]}]}]),
            format!("{at}[1].matchExpressions[1].values: Gt needs an integer, got \"four\""),
        ),
        (
            json!([{"matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["1", "2"]}]}]),
            format!("{at}[0].matchExpressions[0].values: Lt needs exactly one value"),
        ),
        (
            json!([{"matchExpressions": [{"key": "net", "operator": "In"}]}]),
            format!("{at}[0].matchExpressions[0].values: In needs at least one value"),
        ),
        (
            json!([{"matchExpressions": [{"key": "net", "operator": "Exists", "values": ["x"]}]}]),
            format!("{at}[0].matchExpressions[0].values: Exists takes no values"),
        ),
        (
            json!([{"matchExpressions": [{"key": "net", "operator": "Within", "values": ["x"]}]}]),
            format!("{at}[0].matchExpressions[0].operator: \"Within\" is not one of"),
        ),
        (
            json!([{"matchExpressions": [{"key": "", "operator": "Exists"}]}]),
            format!("{at}[0].matchExpressions[0].key: must be a label key"),
        ),
    ];
    for (terms, want) in cases {
        let err = node_terms(&required(terms.clone())).expect_err("refused");
        assert!(err.starts_with(&want), "{terms}: {err}");
    }
}

#[test]
fn the_pin_joins_every_term_and_keeps_the_rest_of_the_affinity() {
    let mut t = required(json!([
        {"matchExpressions": [{"key": "net", "operator": "In", "values": ["infiniband"]}]},
        {"matchExpressions": [{"key": "net", "operator": "In", "values": ["roce"]}]}
    ]));
    let anti = json!([{"labelSelector": {}, "topologyKey": HOSTNAME}]);
    t.affinity.as_mut().expect("affinity").pod_anti_affinity = Some(
        serde_json::from_value(json!({"requiredDuringSchedulingIgnoredDuringExecution": anti}))
            .expect("anti"),
    );
    pin(&mut t, "n7");
    let affinity = serde_json::to_value(t.affinity.expect("affinity")).expect("json");
    let pinned = json!({"key": HOSTNAME, "operator": "In", "values": ["n7"]});
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([
            {"matchExpressions": [{"key": "net", "operator": "In", "values": ["infiniband"]}, pinned]},
            {"matchExpressions": [{"key": "net", "operator": "In", "values": ["roce"]}, pinned]}
        ])
    );
    assert_eq!(
        affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        anti
    );
    // Without affinity: the pin alone.
    let mut plain = pod(json!(null));
    pin(&mut plain, "n1");
    let affinity = serde_json::to_value(plain.affinity.expect("affinity")).expect("json");
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([{"matchExpressions": [{"key": HOSTNAME, "operator": "In", "values": ["n1"]}]}])
    );
}

fn worker(rank: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_owned(), "trainer".to_owned()),
        ("gpufed.io/rank".to_owned(), rank.to_string()),
    ])
}

fn apart(term: Value) -> PodSpec {
    pod(json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}))
}

#[test]
fn a_required_anti_affinity_among_the_workers_on_the_hostname_keeps_one_per_node() {
    let own = |selector: Value| json!({"labelSelector": selector, "topologyKey": HOSTNAME});
    let cases = [
        // Every worker selected, on the hostname: one per node.
        (own(json!({"matchLabels": {"app": "trainer"}})), 1),
        (
            own(json!({"matchExpressions": [{"key": "gpufed.io/rank", "operator": "Exists"}]})),
            1,
        ),
        (own(json!({})), 1),
        // Only some workers selected (rank 0): the others may share its node.
        (own(json!({"matchLabels": {"gpufed.io/rank": "0"}})), 0),
        // Other pods: the hub does not see them.
        (own(json!({"matchLabels": {"app": "database"}})), 0),
        (
            json!({"labelSelector": {"matchLabels": {"app": "trainer"}}, "topologyKey": HOSTNAME,
                   "namespaces": ["other"]}),
            0,
        ),
        (
            json!({"labelSelector": {"matchLabels": {"app": "trainer"}}, "topologyKey": HOSTNAME,
                   "namespaceSelector": {"matchLabels": {"team": "x"}}}),
            0,
        ),
        // Every namespace includes the job's own.
        (
            json!({"labelSelector": {"matchLabels": {"app": "trainer"}}, "topologyKey": HOSTNAME,
                   "namespaceSelector": {}}),
            1,
        ),
        // Another topology: not modelled.
        (
            json!({"labelSelector": {"matchLabels": {"app": "trainer"}},
                   "topologyKey": "topology.kubernetes.io/zone"}),
            0,
        ),
        // No selector selects no pod.
        (json!({"topologyKey": HOSTNAME}), 0),
    ];
    for (term, want) in cases {
        assert_eq!(workers_per_node(&apart(term.clone()), 3, worker), want, "{term}");
    }
    let t = apart(own(json!({"matchLabels": {"app": "trainer"}})));
    assert_eq!(workers_per_node(&t, 1, worker), 0, "a single worker needs no cap");
    // A preferred anti-affinity is a preference: no cap.
    let preferred = pod(
        json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "podAffinityTerm": {"labelSelector": {}, "topologyKey": HOSTNAME}}]}}),
    );
    assert_eq!(workers_per_node(&preferred, 3, worker), 0);
}

#[test]
fn a_topology_spread_that_must_hold_needs_nodes_with_its_key() {
    let spread = |key: &str, when: &str| {
        json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": when,
                                              "labelSelector": {"matchLabels": {"app": "trainer"}}})
    };
    let mut t = required(json!([
        {"matchExpressions": [{"key": "net", "operator": "In", "values": ["infiniband"]}]},
        {"matchExpressions": [{"key": "net", "operator": "In", "values": ["roce"]}]}
    ]));
    t.topology_spread_constraints = Some(
        serde_json::from_value(json!([
            spread("topology.kubernetes.io/zone", "DoNotSchedule"),
            // A preference, the hostname (on every node), a key the hub may not see: nothing.
            spread("topology.kubernetes.io/region", "ScheduleAnyway"),
            spread(HOSTNAME, "DoNotSchedule"),
            spread("example.com/rack", "DoNotSchedule")
        ]))
        .expect("constraints"),
    );
    assert_eq!(
        pl::describe_affinity(&placement_terms(&t)),
        "net in (infiniband),topology.kubernetes.io/zone or net in (roce),topology.kubernetes.io/zone"
    );
    // Without node affinity: the key alone.
    t.affinity = None;
    assert_eq!(
        pl::describe_affinity(&placement_terms(&t)),
        "topology.kubernetes.io/zone"
    );
    t.topology_spread_constraints = None;
    assert!(placement_terms(&t).is_empty());
}

#[test]
fn a_required_pod_affinity_among_its_workers_keeps_them_on_one_node() {
    let worker = |rank: u32| {
        BTreeMap::from([
            ("app".to_owned(), "trainer".to_owned()),
            ("gpufed.io/rank".to_owned(), rank.to_string()),
        ])
    };
    let together = |term: serde_json::Value| {
        pod(json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}))
    };
    let own = |selector: serde_json::Value| json!({"labelSelector": selector, "topologyKey": HOSTNAME});
    let cases = [
        (own(json!({"matchLabels": {"app": "trainer"}})), true),
        // Rank 0 alone selected: the others must join its node, so all share it.
        (own(json!({"matchLabels": {"gpufed.io/rank": "0"}})), true),
        // No worker selected: other pods, which the hub does not see.
        (own(json!({"matchLabels": {"app": "database"}})), false),
        (
            json!({"labelSelector": {"matchLabels": {"app": "trainer"}}, "topologyKey": HOSTNAME,
                   "namespaces": ["other"]}),
            false,
        ),
        (
            json!({"labelSelector": {"matchLabels": {"app": "trainer"}},
                   "topologyKey": "topology.kubernetes.io/zone"}),
            false,
        ),
        (json!({"topologyKey": HOSTNAME}), false),
    ];
    for (term, want) in cases {
        assert_eq!(
            workers_together(&together(term.clone()), 3, worker),
            want,
            "{term}"
        );
    }
    let t = together(own(json!({"matchLabels": {"app": "trainer"}})));
    assert!(!workers_together(&t, 1, worker), "one worker is always together");
    // Kept apart as well: contradictory, not placed as one.
    let both = pod(json!({
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [own(json!({}))]},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [own(json!({}))]}}));
    assert_eq!(workers_per_node(&both, 3, worker), 1);
    assert!(!workers_together(&both, 3, worker));
}
