//! Randomized: for valid policies, evaluating without HTTP attributes gives the same decision
//! as evaluating `l4_view`, and an L4 allow implies an L7 allow for any request (fail closed).

mod common;

use common::*;
use meshwork_authz::{evaluate_pb, l4_view, validate, RequestContext};
use meshwork_model::pb::config as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn pick(rng: &mut StdRng, from: &[&str]) -> Vec<String> {
    if rng.random_bool(0.6) {
        return Vec::new();
    }
    (0..rng.random_range(1..=2))
        .map(|_| from[rng.random_range(0..from.len())].to_string())
        .collect()
}

fn random_rule(rng: &mut StdRng) -> pb::Rule {
    let principals = [
        "cluster.local/ns/a/sa/x",
        "*",
        "cluster.local/ns/b/*",
        "*/sa/x",
    ];
    let nss = ["a", "b", "*"];
    let ips = ["10.0.0.0/8", "10.1.0.5", "192.168.0.0/16"];
    let ports = ["8080", "80"];
    let methods = ["GET", "POST"];
    let paths = ["/api/*", "/x", "/api/{*}"];
    let from = (0..rng.random_range(0..=2))
        .map(|_| pb::Source {
            principals: pick(rng, &principals),
            not_principals: pick(rng, &principals),
            namespaces: pick(rng, &nss),
            not_namespaces: pick(rng, &nss),
            ip_blocks: pick(rng, &ips),
            not_ip_blocks: pick(rng, &ips),
            request_principals: pick(rng, &["iss/sub", "*"]),
            ..Default::default()
        })
        .collect();
    let to = (0..rng.random_range(0..=2))
        .map(|_| pb::Operation {
            ports: pick(rng, &ports),
            not_ports: pick(rng, &ports),
            methods: pick(rng, &methods),
            not_paths: pick(rng, &paths),
            paths: pick(rng, &paths),
            hosts: pick(rng, &["*.local"]),
            ..Default::default()
        })
        .collect();
    let when = (0..rng.random_range(0..=1))
        .map(|_| {
            let key =
                ["source.ip", "request.headers[x]", "destination.port"][rng.random_range(0..3)];
            let values = match key {
                "source.ip" => vec!["10.0.0.0/8".to_string()],
                "destination.port" => vec!["8080".to_string()],
                _ => vec!["y".to_string()],
            };
            pb::Condition {
                key: key.into(),
                values,
                not_values: vec![],
            }
        })
        .collect();
    pb::Rule { from, to, when }
}

fn random_ctx(rng: &mut StdRng) -> RequestContext {
    let principal = [
        Some("cluster.local/ns/a/sa/x"),
        Some("cluster.local/ns/b/sa/y"),
        None,
    ][rng.random_range(0..3)];
    let mut c = peer(principal);
    c.source_ip = Some(
        ["10.1.0.5", "192.168.3.4"][rng.random_range(0..2)]
            .parse()
            .unwrap(),
    );
    c.destination_port = [8080, 80][rng.random_range(0..2)];
    c
}

#[test]
fn l4_view_is_equivalent_at_l4() {
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..2_000 {
        let actions = [
            pb::Action::Allow,
            pb::Action::Deny,
            pb::Action::Audit,
            pb::Action::Custom,
        ];
        let policies: Vec<pb::Authorization> = (0..rng.random_range(1..=3))
            .map(|i| {
                let rules = (0..rng.random_range(0..=2))
                    .map(|_| random_rule(&mut rng))
                    .collect();
                let action = actions[rng.random_range(0..actions.len())];
                policy(&format!("p{i}"), action, rules)
            })
            .collect();
        for p in &policies {
            validate(p).unwrap();
        }
        let l4: Vec<_> = policies.iter().map(l4_view).collect();
        for _ in 0..5 {
            let ctx = random_ctx(&mut rng);
            let a = evaluate_pb(&policies, &ctx);
            let b = evaluate_pb(&l4, &ctx);
            assert_eq!(
                (a.allowed, &a.policy, a.rule.is_some()),
                (b.allowed, &b.policy, b.rule.is_some()),
                "round {round}: {policies:?} {ctx:?}"
            );
            // Fail closed: L4 is never more permissive than L7. If the connection is allowed
            // without HTTP attributes, every HTTP request on it is allowed too.
            if a.allowed {
                for (method, path, hdr) in [
                    ("GET", "/api/v", "y"),
                    ("POST", "/x", "n"),
                    ("PUT", "/api/a/b", "y"),
                ] {
                    let l7 = with_http(ctx.clone(), http(method, path, &[("x", hdr)]));
                    let d = evaluate_pb(&policies, &l7);
                    assert!(
                        d.allowed,
                        "round {round}: L4 allowed, L7 denied: {d} {policies:?} {ctx:?}"
                    );
                }
            }
        }
    }
}
