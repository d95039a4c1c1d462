//! Writes the waypoint's benchmark config (protobuf ConfigUpdate): service
//! `bench.bench.svc.cluster.local` with two endpoints, `version: v1` at 127.0.0.1:<port> and
//! `version: v2` at 127.0.0.2:<port>; routes in the seed's shape: `x-canary: true` → v2, and
//! a default route splitting 90/10 between the v1 and v2 subsets with a 10 s timeout and
//! 3 retries.
//! With a third argument, a WasmPlugin `bench/plugin` attached to the `bench/waypoint`
//! Gateway: its `url`, and as a fourth its pluginConfig (JSON).
//! Usage: bench_config <backend-port> <out-file> [wasm-url [plugin-config-json]]

use meshwork_model::keys::{make_resource, Kind};
use meshwork_model::pb::config::{self as pb, resource};
use prost::Message;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u32 = args.next().unwrap_or_else(|| "18080".into()).parse()?;
    let out = args.next().unwrap_or_else(|| "bench-config.pb".into());
    let wasm_url = args.next();
    let plugin_config = args.next().unwrap_or_default();
    let host = "bench.bench.svc.cluster.local";
    let svc = pb::Service {
        name: "bench".into(),
        namespace: "bench".into(),
        hostname: host.into(),
        aliases: vec!["bench".into()],
        vips: vec!["240.240.9.9".into()],
        ports: vec![pb::ServicePort {
            port: 80,
            target_port: port,
            name: "http".into(),
            protocol: "HTTP".into(),
            target_port_name: String::new(),
        }],
        ..Default::default()
    };
    let workload = |name: &str, ip: &str, version: &str| pb::Workload {
        name: name.into(),
        namespace: "bench".into(),
        service_account: "bench".into(),
        trust_domain: "cluster.local".into(),
        addresses: vec![ip.into()],
        labels: [
            ("app".to_string(), "bench".to_string()),
            ("version".to_string(), version.to_string()),
        ]
        .into(),
        healthy: true,
        services: vec![pb::ServicePorts {
            service: format!("bench/{host}"),
            ports: [(80u32, port)].into(),
        }],
        ..Default::default()
    };
    let dest = |subset: &str, weight: u32| pb::WeightedDestination {
        destination: Some(pb::Destination {
            host: host.into(),
            subset: subset.into(),
            port: 0,
        }),
        weight,
        headers: None,
    };
    let route = pb::RouteConfig {
        hostname: host.into(),
        namespace: "bench".into(),
        http: vec![
            pb::HttpRoute {
                matches: vec![pb::RouteMatch {
                    headers: [(
                        "x-canary".to_string(),
                        pb::StringMatch {
                            r#match: Some(pb::string_match::Match::Exact("true".into())),
                            present: false,
                        },
                    )]
                    .into(),
                    ..Default::default()
                }],
                route: vec![dest("v2", 100)],
                ..Default::default()
            },
            pb::HttpRoute {
                route: vec![dest("v1", 90), dest("v2", 10)],
                timeout_ms: 10_000,
                has_timeout: true,
                retries: Some(pb::Retry {
                    attempts: 3,
                    per_try_timeout_ms: 3000,
                    retry_on: vec!["5xx".into(), "reset".into(), "connect-failure".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        subsets: ["v1", "v2"]
            .into_iter()
            .map(|v| pb::Subset {
                name: v.into(),
                labels: [("version".to_string(), v.to_string())].into(),
                traffic_policy: None,
            })
            .collect(),
        ..Default::default()
    };
    let mut update = pb::ConfigUpdate {
        version: 1,
        initial: true,
        resources: vec![
            make_resource(
                Kind::Service.key("bench", host),
                resource::Kind::Service(svc),
            ),
            make_resource(
                Kind::Workload.key("bench", "bench-v1"),
                resource::Kind::Workload(workload("bench-v1", "127.0.0.1", "v1")),
            ),
            make_resource(
                Kind::Workload.key("bench", "bench-v2"),
                resource::Kind::Workload(workload("bench-v2", "127.0.0.2", "v2")),
            ),
            make_resource(Kind::Route.key("bench", host), resource::Kind::Route(route)),
        ],
        ..Default::default()
    };
    if let Some(url) = wasm_url {
        let plugin = pb::WasmPlugin {
            name: "plugin".into(),
            namespace: "bench".into(),
            scope: pb::PolicyScope::TargetRef as i32,
            target_refs: vec![pb::TargetRef {
                group: "gateway.networking.k8s.io".into(),
                kind: "Gateway".into(),
                name: "waypoint".into(),
                namespace: "bench".into(),
            }],
            url,
            plugin_config_json: plugin_config,
            ..Default::default()
        };
        update.resources.push(make_resource(
            Kind::WasmPlugin.key("bench", "plugin"),
            resource::Kind::WasmPlugin(plugin),
        ));
    }
    std::fs::write(&out, update.encode_to_vec())?;
    eprintln!("wrote {out}");
    Ok(())
}
