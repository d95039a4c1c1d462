//! The seed manifests parse into typed objects with no errors.

use std::path::{Path, PathBuf};

use meshwork_api::{Kind, Spec, Store};

fn seed_dir() -> PathBuf {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/seed"));
    assert!(
        dir.is_dir(),
        "seed manifests not found at {} (examples/seed/ in the repository)",
        dir.display()
    );
    dir.to_path_buf()
}

#[test]
fn seed_manifests_parse_cleanly() {
    let dir = seed_dir();
    let mut store = Store::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        store.apply_file(f, &text, "production");
    }
    let errors = store.errors();
    assert!(errors.is_empty(), "{errors:#?}");
    // The Deployment template carries no unknown fields either.
    let warnings: Vec<String> = store.warnings().iter().map(|w| w.to_string()).collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    let kinds: Vec<(Kind, String)> = store
        .objects()
        .map(|(k, _)| (k.kind, format!("{}/{}", k.namespace, k.name)))
        .collect();
    for expected in [
        (Kind::Deployment, "production/order-service"),
        (Kind::Service, "production/order-service"),
        (Kind::VirtualService, "production/order-service-vs"),
        (Kind::DestinationRule, "production/order-service-dr"),
        (Kind::DestinationRule, "production/payment-service-dr"),
        (Kind::VirtualService, "production/payment-service-vs"),
        (Kind::Telemetry, "istio-system/default-tracing"),
        (Kind::ConfigMap, "istio-system/istio-otel"),
        (Kind::PeerAuthentication, "istio-system/default"),
        (Kind::PeerAuthentication, "production/payment-service-mtls"),
        (
            Kind::AuthorizationPolicy,
            "production/payment-service-policy",
        ),
        (Kind::AuthorizationPolicy, "production/deny-all-default"),
    ] {
        assert!(
            kinds.contains(&(expected.0, expected.1.to_string())),
            "missing {expected:?} in {kinds:?}"
        );
    }
    let vs = store
        .objects()
        .find(|(k, _)| k.name == "order-service-vs")
        .unwrap()
        .1;
    let Spec::VirtualService(vs) = &vs.object.spec else {
        panic!("not a VirtualService")
    };
    assert_eq!(vs.http.len(), 3);
    assert_eq!(vs.http[2].timeout.unwrap().as_millis(), 10_000);
    assert_eq!(
        vs.http[1].matches[0].headers["x-user-id"]
            .regex
            .as_ref()
            .unwrap()
            .as_str(),
        "^[0-9]*[02468]$"
    );
}
