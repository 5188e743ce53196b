//! The alerting rules evaluated, not only parsed: a small PromQL evaluator for the
//! subset the rules use, over samples a test states or the operator's own exposition, so
//! a rule that cannot fire when it should (or fires when it should not) fails here.
//!
//! Instant evaluation only: `increase(x[w])` and `rate(x[w])` read the samples given
//! for `x` as already being the increase (or rate) over the window.

use std::collections::BTreeMap;

use promql_parser::parser::{self, BinaryExpr, Expr, LabelModifier};

use super::rules;

type Labels = BTreeMap<String, String>;
type Vector = Vec<(Labels, f64)>;

#[derive(Debug)]
enum Val {
    Scalar(f64),
    Vector(Vector),
}

/// Samples by metric name.
#[derive(Default)]
struct World(BTreeMap<String, Vector>);

impl World {
    /// Adds `name{labels} value`.
    fn set(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let l = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.0.entry(name.to_owned()).or_default().push((l, value));
        self
    }

    /// Every sample of a text exposition, each with `instance` added (one target).
    fn from_exposition(text: &str, instance: &str) -> Self {
        let mut w = World::default();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            let mut l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            l.push(("instance", instance));
            w.set(name, &l, value.parse().expect("a number"));
        }
        w
    }
}

/// `a="x",b="y"` (no escaped quotes in this operator's label values).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split("\",")
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once("=\"").expect("k=\"v\"");
            (k.to_owned(), v.trim_end_matches('"').to_owned())
        })
        .collect()
}

/// `l` with only the labels `by`/`on` names, or without those `without`/`ignoring` names.
fn restrict(l: &Labels, m: &LabelModifier) -> Labels {
    let (names, include) = match m {
        LabelModifier::Include(n) => (n, true),
        LabelModifier::Exclude(n) => (n, false),
    };
    l.iter()
        .filter(|(k, _)| names.labels.contains(k) == include)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn vector(v: Val) -> Vector {
    match v {
        Val::Vector(v) => v,
        Val::Scalar(s) => panic!("a vector expected, got the scalar {s}"),
    }
}

fn eval(e: &Expr, w: &World) -> Val {
    match e {
        Expr::NumberLiteral(n) => Val::Scalar(n.val),
        Expr::Paren(p) => eval(&p.expr, w),
        Expr::VectorSelector(vs) => {
            let name = vs.name.as_deref().expect("named selector");
            let all = w.0.get(name).cloned().unwrap_or_default();
            Val::Vector(
                all.into_iter()
                    .filter(|(l, _)| {
                        vs.matchers.matchers.iter().all(|m| {
                            m.name == "__name__" || m.is_match(l.get(&m.name).map_or("", String::as_str))
                        })
                    })
                    .collect(),
            )
        }
        Expr::MatrixSelector(ms) => eval(&Expr::VectorSelector(ms.vs.clone()), w),
        Expr::Call(c) => {
            let arg = |i: usize| eval(&c.args.args[i], w);
            match c.func.name {
                // One instant here: a range function reads the sample it is given.
                "increase" | "rate" | "max_over_time" => arg(0),
                "absent" => Val::Vector(if vector(arg(0)).is_empty() {
                    vec![(Labels::new(), 1.0)]
                } else {
                    Vec::new()
                }),
                "clamp_min" => {
                    let Val::Scalar(min) = arg(1) else {
                        panic!("clamp_min bound")
                    };
                    Val::Vector(vector(arg(0)).into_iter().map(|(l, v)| (l, v.max(min))).collect())
                }
                "histogram_quantile" => {
                    let Val::Scalar(q) = arg(0) else {
                        panic!("quantile")
                    };
                    Val::Vector(histogram_quantile(q, vector(arg(1))))
                }
                f => panic!("{f} is not evaluated here"),
            }
        }
        Expr::Aggregate(a) => {
            // No `by`/`without`: one group of no labels.
            let keep = |l: &Labels| a.modifier.as_ref().map_or_else(Labels::new, |m| restrict(l, m));
            let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
            for (l, v) in vector(eval(&a.expr, w)) {
                groups.entry(keep(&l)).or_default().push(v);
            }
            let op = a.op.to_string();
            Val::Vector(
                groups
                    .into_iter()
                    .map(|(l, vs)| {
                        let v = match op.as_str() {
                            "sum" => vs.iter().sum(),
                            "max" => vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                            "min" => vs.iter().copied().fold(f64::INFINITY, f64::min),
                            o => panic!("aggregation {o} is not evaluated here"),
                        };
                        (l, v)
                    })
                    .collect(),
            )
        }
        Expr::Binary(b) => binary(b, eval(&b.lhs, w), eval(&b.rhs, w)),
        other => panic!("{other} is not evaluated here"),
    }
}

/// `a OP b` on numbers: arithmetic, or a comparison as 1/0 (`None`: `op` is neither).
fn apply(op: &str, a: f64, b: f64) -> Option<f64> {
    let t = |c: bool| if c { 1.0 } else { 0.0 };
    Some(match op {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        "/" => a / b,
        "==" => t(a == b),
        "!=" => t(a != b),
        ">" => t(a > b),
        "<" => t(a < b),
        ">=" => t(a >= b),
        "<=" => t(a <= b),
        _ => return None,
    })
}

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

fn binary(b: &BinaryExpr, lhs: Val, rhs: Val) -> Val {
    let op = b.op.to_string().to_lowercase();
    let as_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
    // A comparison filters: a sample stays, with its value, where the comparison holds.
    let one = |l: Labels, x: f64, a: f64, c: f64| -> Option<(Labels, f64)> {
        let r = apply(&op, a, c).expect("an arithmetic or comparison operator");
        match (is_comparison(&op), as_bool) {
            (true, false) => (r == 1.0).then_some((l, x)),
            _ => Some((l, r)),
        }
    };
    match (lhs, rhs) {
        (Val::Scalar(a), Val::Scalar(c)) => Val::Scalar(apply(&op, a, c).expect("operator")),
        (Val::Vector(v), Val::Scalar(c)) => {
            Val::Vector(v.into_iter().filter_map(|(l, a)| one(l, a, a, c)).collect())
        }
        (Val::Scalar(a), Val::Vector(v)) => {
            Val::Vector(v.into_iter().filter_map(|(l, c)| one(l, c, a, c)).collect())
        }
        (Val::Vector(lv), Val::Vector(rv)) => {
            let key = |l: &Labels| matching.as_ref().map_or_else(|| l.clone(), |m| restrict(l, m));
            let right: BTreeMap<Labels, f64> = rv.iter().map(|(l, v)| (key(l), *v)).collect();
            let out = lv.into_iter().filter_map(|(l, a)| {
                let k = key(&l);
                match op.as_str() {
                    "and" => right.contains_key(&k).then_some((l, a)),
                    "unless" => (!right.contains_key(&k)).then_some((l, a)),
                    // One-to-one: the result carries the matching labels.
                    _ => one(k.clone(), a, a, *right.get(&k)?),
                }
            });
            Val::Vector(out.collect())
        }
    }
}

/// Prometheus' `histogram_quantile`: linear within the bucket the rank falls in, and
/// the top finite bound when it falls in `+Inf` (so never more than that bound).
fn histogram_quantile(q: f64, buckets: Vector) -> Vector {
    let mut by_series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for (mut l, count) in buckets {
        let le = l.remove("le").expect("a bucket has le");
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("le")
        };
        by_series.entry(l).or_default().push((bound, count));
    }
    by_series
        .into_iter()
        .filter_map(|(l, mut bs)| {
            bs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let total = bs.last()?.1;
            if total == 0.0 {
                return None;
            }
            let rank = q * total;
            let i = bs.iter().position(|(_, c)| *c >= rank)?;
            if bs[i].0.is_infinite() {
                return Some((l, bs[i.checked_sub(1)?].0));
            }
            let (start, below) = if i == 0 { (0.0, 0.0) } else { bs[i - 1] };
            let (end, count) = bs[i];
            Some((l, start + (end - start) * (rank - below) / (count - below)))
        })
        .collect()
}

/// The alert `name`'s expression evaluated over `w`: the series it would fire for.
fn fires(name: &str, w: &World) -> Vector {
    let (_, rule) = rules()
        .into_iter()
        .find(|(_, r)| r.alert == name)
        .unwrap_or_else(|| panic!("no alert {name}"));
    vector(eval(&parser::parse(&rule.expr).expect("parses"), w))
}

#[test]
fn the_evaluator_agrees_with_prometheus_on_the_basics() {
    let mut w = World::default();
    w.set("up", &[("instance", "a")], 1.0)
        .set("up", &[("instance", "b")], 0.0);
    w.set("x", &[("instance", "a")], 5.0)
        .set("x", &[("instance", "b")], 7.0);
    let q = |s: &str| vector(eval(&parser::parse(s).expect(s), &w));
    assert_eq!(q("max(x and on (instance) up == 1)"), vec![(Labels::new(), 5.0)]);
    assert_eq!(q("sum(x) > 100"), Vec::new());
    assert_eq!(q("sum(x) / clamp_min(sum(up), 1)"), vec![(Labels::new(), 12.0)]);
    assert_eq!(q("absent(nothing)"), vec![(Labels::new(), 1.0)]);
    let mut h = World::default();
    for (le, c) in [("1", 0.0), ("2", 50.0), ("4", 100.0), ("+Inf", 100.0)] {
        h.set("d_bucket", &[("le", le)], c);
    }
    h.set("e_bucket", &[("le", "1")], 0.0)
        .set("e_bucket", &[("le", "+Inf")], 9.0);
    let p = |q: &str| vector(eval(&parser::parse(q).expect(q), &h))[0].1;
    assert!((p("histogram_quantile(0.5, d_bucket)") - 2.0).abs() < 1e-9);
    assert!((p("histogram_quantile(0.75, d_bucket)") - 3.0).abs() < 1e-9);
    assert!(
        (p("histogram_quantile(0.99, e_bucket)") - 1.0).abs() < 1e-9,
        "capped"
    );
}

/// The leader's queue and quota gauges, a standby's stale ones, and no placement in 30 min.
fn queue(depth: f64, held_by_quota: f64) -> World {
    let mut w = World::default();
    for (i, leader, d, q) in [("a", 1.0, depth, held_by_quota), ("b", 0.0, 9.0, 0.0)] {
        w.set("gpufed_leader", &[("instance", i)], leader);
        w.set("gpufed_queue_depth_jobs", &[("instance", i)], d);
        w.set("gpufed_held_by_quota_jobs", &[("instance", i)], q);
        w.set("gpufed_placements_total", &[("instance", i)], 0.0);
    }
    w
}

#[test]
fn a_queue_held_only_by_quotas_is_not_stalled() {
    // Every queued job is over its namespace's quota: an expected wait, no alert.
    assert_eq!(fires("GpufedQueueStalled", &queue(3.0, 3.0)), Vec::new());
    // Two of them are not: nothing places them, the alert fires and counts them.
    assert_eq!(
        fires("GpufedQueueStalled", &queue(3.0, 1.0)),
        vec![(Labels::new(), 2.0)]
    );
    // A placement in the window: not stalled.
    let mut moving = queue(3.0, 0.0);
    moving.set("gpufed_placements_total", &[("instance", "a")], 1.0);
    assert_eq!(fires("GpufedQueueStalled", &moving), Vec::new());
}

#[test]
fn round_trip_alert_fires_for_bands_with_long_limits() {
    // A band allowing 120 s (a long kernel plus slack): round trips of 100 s are past
    // 80% of it. The quantile must be able to say so — a top bucket of 51.2 s could not.
    let m = super::super::Metrics::new();
    let model = super::super::ModelLabel {
        model: "NVIDIA H100 80GB HBM3".into(),
    };
    m.challenge_round_trip_limit_seconds
        .get_or_create(&model)
        .set(120.0);
    for _ in 0..100 {
        m.challenge_round_trip_seconds
            .get_or_create(&model)
            .observe(100.0);
    }
    let w = World::from_exposition(&m.encode(), "a");
    let fired = fires("GpufedChallengeRoundTripNearLimit", &w);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert!(fired[0].1 > 96.0, "{fired:?}");
    // Round trips of 10 s are far from it.
    let calm = super::super::Metrics::new();
    calm.challenge_round_trip_limit_seconds
        .get_or_create(&model)
        .set(120.0);
    calm.challenge_round_trip_seconds
        .get_or_create(&model)
        .observe(10.0);
    assert_eq!(
        fires(
            "GpufedChallengeRoundTripNearLimit",
            &World::from_exposition(&calm.encode(), "a")
        ),
        Vec::new()
    );
}

#[test]
fn round_lag_alert_fires_for_long_graces() {
    // A 60 s grace, round challenges issued 55 s into the round: past 80% of the grace.
    let m = super::super::Metrics::new();
    m.challenge_round_grace_seconds.set(60.0);
    for _ in 0..100 {
        m.challenge_round_lag_seconds.observe(55.0);
    }
    let fired = fires(
        "GpufedChallengeRoundLagNearGrace",
        &World::from_exposition(&m.encode(), "a"),
    );
    assert_eq!(fired.len(), 1, "{fired:?}");
    let calm = super::super::Metrics::new();
    calm.challenge_round_grace_seconds.set(60.0);
    calm.challenge_round_lag_seconds.observe(2.0);
    assert_eq!(
        fires(
            "GpufedChallengeRoundLagNearGrace",
            &World::from_exposition(&calm.encode(), "a")
        ),
        Vec::new()
    );
}

#[test]
fn every_histogram_an_alert_reads_reaches_ten_minutes() {
    // `histogram_quantile` says at most the top finite bucket: each histogram an alert
    // takes a quantile of must reach past 80% of the longest limit the docs let an
    // operator configure for it (10 minutes).
    let m = super::super::Metrics::new();
    let model = super::super::ModelLabel { model: "m".into() };
    m.challenge_round_trip_seconds.get_or_create(&model).observe(1.0);
    m.challenge_round_lag_seconds.observe(1.0);
    let text = m.encode();
    for hist in [
        "gpufed_challenge_round_trip_seconds",
        "gpufed_challenge_round_lag_seconds",
    ] {
        let top = text
            .lines()
            .filter(|l| l.starts_with(&format!("{hist}_bucket")) && !l.contains("+Inf"))
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse::<f64>().ok())
            .fold(0.0, f64::max);
        assert!(top > 0.8 * 600.0, "{hist} tops out at {top} s");
    }
}
