use super::*;

fn s(v: &str) -> String {
    v.to_owned()
}

fn ns(name: &str, owner: &str) -> (String, String) {
    (s(name), s(owner))
}

fn pod(ns: &str, name: &str, uid: &str, attempt: &str) -> (String, String, String, String) {
    (s(ns), s(name), s(uid), s(attempt))
}

#[test]
fn only_what_no_assignment_names_is_removed() {
    let assigned = vec![(s("gf-a"), s("u1"), 2)];
    let namespaces = vec![ns("gf-a", "u1"), ns("gf-b", "u2")];
    let pods = vec![
        pod("gf-a", "a-a1-w0", "u1", "1"),
        pod("gf-a", "a-a2-w0", "u1", "2"),
        pod("gf-b", "b-a1-w0", "u2", "1"),
    ];
    let gone = withdrawn(&assigned, &namespaces, &pods);
    assert_eq!(gone.namespaces, vec![s("gf-b")]);
    assert_eq!(
        gone.pods,
        vec![(s("gf-a"), s("a-a1-w0"))],
        "the old attempt goes, the live one stays"
    );
    assert_eq!(
        gone.credentials,
        BTreeMap::from([((s("gf-a"), s("u1")), 1)]),
        "with the old attempt's credentials"
    );
    let gone = withdrawn(&[], &namespaces, &pods);
    assert_eq!(gone.namespaces.len(), 2);
    assert!(gone.pods.is_empty(), "pods go with their namespace");
    let labelled_elsewhere = vec![ns("kube-system", "u3"), ns("gf-b", "u2")];
    let gone = withdrawn(&[], &labelled_elsewhere, &[]);
    assert_eq!(
        gone.namespaces,
        vec![s("gf-b")],
        "only a tenant namespace is ever deleted"
    );
}

#[test]
fn another_jobs_work_in_a_colliding_namespace_is_never_removed() {
    // Jobs u1 and u2 have the same tenant namespace gf-x, u1's: u2's attempt 5 was
    // assigned too (refused by the member's dispatch) and withdrawn, and a pod of it got
    // in before the dispatch checked the namespace's job.
    let assigned = vec![(s("gf-x"), s("u1"), 1)];
    let namespaces = vec![ns("gf-x", "u1")];
    let pods = vec![
        pod("gf-x", "x-a1-w0", "u1", "1"),
        pod("gf-x", "x-a5-w0", "u2", "5"),
    ];
    let gone = withdrawn(&assigned, &namespaces, &pods);
    assert!(gone.namespaces.is_empty(), "u1's namespace stays");
    assert_eq!(gone.pods, vec![(s("gf-x"), s("x-a5-w0"))]);
    assert_eq!(
        gone.credentials,
        BTreeMap::from([((s("gf-x"), s("u2")), 5)]),
        "only u2's credentials are withdrawn, never u1's (attempt 1 <= 5)"
    );
    // The namespace labelled for u2 (its forced apply took it over before the member
    // checked), u1's pods inside and assigned: it stays.
    let gone = withdrawn(&assigned, &[ns("gf-x", "u2")], &pods);
    assert!(gone.namespaces.is_empty(), "it holds u1's live attempt");
    // u1's Assignment withdrawn while u2's of that namespace is still there: u1's
    // namespace goes (u2's dispatch could never fill it, the member refuses that).
    let assigned = vec![(s("gf-x"), s("u2"), 6)];
    let pods = vec![pod("gf-x", "x-a1-w0", "u1", "1")];
    let gone = withdrawn(&assigned, &[ns("gf-x", "u1")], &pods);
    assert_eq!(gone.namespaces, vec![s("gf-x")]);
}

fn copy(uid: Option<&str>, attempt: &str) -> Secret {
    let mut labels = BTreeMap::from([(s(names::LABEL_ATTEMPT), s(attempt))]);
    if let Some(uid) = uid {
        labels.insert(s(names::LABEL_JOB_UID), s(uid));
    }
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(s(MEMBER_SECRET)),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn only_the_withdrawn_jobs_credentials_are_removed() {
    assert!(credentials_withdrawn(&copy(Some("u1"), "2"), "u1", 2));
    assert!(credentials_withdrawn(&copy(Some("u1"), "1"), "u1", 2));
    assert!(
        !credentials_withdrawn(&copy(Some("u1"), "3"), "u1", 2),
        "a later attempt's stay"
    );
    assert!(
        !credentials_withdrawn(&copy(Some("u1"), "1"), "u2", 5),
        "another job's stay"
    );
    assert!(
        !credentials_withdrawn(&copy(None, "1"), "u2", 5),
        "nor unlabelled ones"
    );
    assert!(!credentials_withdrawn(&copy(Some("u1"), "x"), "u1", 5));
}
