//! Route translation beyond the seed: Gateway API routes, fault/mirror/rewrite, removal.

use meshwork_model::pb::config::string_match::Match;

use super::{keys, Harness};

const WEB: &str = "web.production.svc.cluster.local";

#[test]
fn http_route_with_service_parent_maps_onto_http_routes() {
    let mut h = Harness::new();
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: web-split\nspec:\n  parentRefs:\n  - group: \"\"\n    kind: Service\n    name: web\n    port: 80\n  rules:\n  - matches:\n    - path:\n        type: PathPrefix\n        value: /api\n      headers:\n      - name: X-Canary\n        value: \"yes\"\n    filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier:\n        set:\n        - name: x-routed\n          value: canary\n    backendRefs:\n    - name: web-v2\n      port: 80\n    timeouts:\n      request: 2s\n  - backendRefs:\n    - name: web-v1\n      port: 80\n      weight: 9\n    - name: web-v2\n      port: 80\n      weight: 1\n";
    assert_eq!(
        keys(&h.apply("r.yaml", route)),
        [format!("route/production/{WEB}")]
    );
    let r = h.route("production", WEB);
    assert_eq!(r.origins, ["HTTPRoute/production/web-split"]);
    assert_eq!(r.http.len(), 2);
    let first = &r.http[0];
    assert_eq!(
        first.matches[0].uri.as_ref().unwrap().r#match,
        Some(Match::PathPrefix("/api".into()))
    );
    assert_eq!(
        first.matches[0].headers["x-canary"].r#match,
        Some(Match::Exact("yes".into()))
    );
    assert_eq!(first.matches[0].port, 80);
    assert_eq!(first.timeout_ms, 2_000);
    assert_eq!(
        first
            .headers
            .as_ref()
            .unwrap()
            .request
            .as_ref()
            .unwrap()
            .set["x-routed"],
        "canary"
    );
    assert_eq!(
        first.route[0].destination.as_ref().unwrap().host,
        "web-v2.production.svc.cluster.local"
    );
    let weights: Vec<u32> = r.http[1].route.iter().map(|w| w.weight).collect();
    assert_eq!(weights, [9, 1]);
    assert_eq!(
        r.http[1].matches.len(),
        1,
        "catch-all restricted to the parent port"
    );
    assert_eq!(
        keys(&h.apply("r.yaml", "")),
        [format!("-route/production/{WEB}")]
    );
}

#[test]
fn grpc_route_method_matches() {
    let mut h = Harness::new();
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata:\n  name: g\nspec:\n  parentRefs:\n  - kind: Service\n    name: web\n  rules:\n  - matches:\n    - method:\n        service: shop.Cart\n        method: Add\n    backendRefs:\n    - name: cart\n      port: 9000\n";
    h.apply("g.yaml", route);
    let r = h.route("production", WEB);
    assert_eq!(
        r.http[0].matches[0].uri.as_ref().unwrap().r#match,
        Some(Match::Exact("/shop.Cart/Add".into()))
    );
}

#[test]
fn virtual_service_features_and_removal() {
    let mut h = Harness::new();
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web\nspec:\n  hosts: [web, other.example.com]\n  http:\n  - name: faulty\n    match:\n    - uri:\n        prefix: /slow\n      ignoreUriCase: true\n      withoutHeaders:\n        X-Skip: {}\n    fault:\n      delay:\n        fixedDelay: 1.5s\n        percent: 20\n      abort:\n        grpcStatus: UNAVAILABLE\n        percentage:\n          value: 5\n    mirror:\n      host: shadow\n    mirrorPercentage:\n      value: 12.5\n    rewrite:\n      uriRegexRewrite:\n        match: ^/slow/(.*)$\n        rewrite: /\\1\n    route:\n    - destination:\n        host: web\n        port:\n          number: 8080\n  - directResponse:\n      status: 503\n      body:\n        bytes: aGVsbG8=\n  tcp:\n  - match:\n    - port: 9000\n    route:\n    - destination:\n        host: db.data.svc.cluster.local\n";
    let changed = keys(&h.apply("vs.yaml", vs));
    assert_eq!(
        changed,
        [
            "route/production/other.example.com".to_string(),
            format!("route/production/{WEB}")
        ]
    );
    let r = h.route("production", WEB);
    let f = &r.http[0];
    assert_eq!(f.name, "faulty");
    let m = &f.matches[0];
    assert!(m.ignore_uri_case);
    assert!(m.without_headers["x-skip"].present);
    let fault = f.fault.as_ref().unwrap();
    assert_eq!(fault.delay.as_ref().unwrap().fixed_delay_ms, 1_500);
    assert_eq!(fault.delay.as_ref().unwrap().percentage, 20.0);
    assert_eq!(fault.abort.as_ref().unwrap().grpc_status, 14);
    assert_eq!(fault.abort.as_ref().unwrap().percentage, 5.0);
    assert_eq!(
        f.mirror.as_ref().unwrap().host,
        "shadow.production.svc.cluster.local"
    );
    assert_eq!(f.mirror_percentage, 12.5);
    assert_eq!(f.rewrite.as_ref().unwrap().uri_regex, "^/slow/(.*)$");
    assert_eq!(f.route[0].destination.as_ref().unwrap().port, 8080);
    assert_eq!(r.http[1].direct_response.as_ref().unwrap().body, b"hello");
    assert_eq!(r.tcp[0].port, 9000);
    assert_eq!(
        r.tcp[0].route[0].destination.as_ref().unwrap().host,
        "db.data.svc.cluster.local"
    );
    // Dropping a host removes only that route.
    let fewer = vs.replace("hosts: [web, other.example.com]", "hosts: [web]");
    assert_eq!(
        keys(&h.apply("vs.yaml", &fewer)),
        ["-route/production/other.example.com"]
    );
    assert!(h.apply("vs.yaml", &fewer).is_empty());
}

#[test]
fn destinations_without_weights_split_evenly() {
    let mut h = Harness::new();
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web\nspec:\n  hosts: [web]\n  http:\n  - route:\n    - destination: {host: a}\n    - destination: {host: b}\n    - destination: {host: c}\n";
    h.apply("vs.yaml", vs);
    let w: Vec<u32> = h.route("production", WEB).http[0]
        .route
        .iter()
        .map(|d| d.weight)
        .collect();
    assert_eq!(w, [34, 33, 33]);
}

#[test]
fn delegate_virtual_service_is_inlined_and_tracked() {
    let mut h = Harness::new();
    let root = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: root\nspec:\n  hosts: [web]\n  http:\n  - match:\n    - uri: {prefix: /api}\n    delegate:\n      name: api\n      namespace: team\n  - route:\n    - destination: {host: web}\n";
    h.apply("root.yaml", root);
    let r = h.route("production", WEB);
    assert_eq!(r.http.len(), 1, "missing delegate drops its route");
    let delegate = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: api\n  namespace: team\nspec:\n  http:\n  - match:\n    - headers:\n        x-v: {exact: \"2\"}\n    route:\n    - destination: {host: api-v2}\n  - route:\n    - destination: {host: api-v1}\n";
    assert_eq!(
        keys(&h.apply("delegate.yaml", delegate)),
        [format!("route/production/{WEB}")]
    );
    let r = h.route("production", WEB);
    assert_eq!(
        r.origins,
        ["VirtualService/production/root", "VirtualService/team/api"]
    );
    assert_eq!(r.http.len(), 3);
    let first = &r.http[0];
    assert_eq!(
        first.matches[0].uri.as_ref().unwrap().r#match,
        Some(Match::Prefix("/api".into()))
    );
    assert_eq!(
        first.matches[0].headers["x-v"].r#match,
        Some(Match::Exact("2".into()))
    );
    assert_eq!(
        first.route[0].destination.as_ref().unwrap().host,
        "api-v2.team.svc.cluster.local"
    );
    assert_eq!(
        r.http[1].matches[0].uri.as_ref().unwrap().r#match,
        Some(Match::Prefix("/api".into()))
    );
    assert_eq!(r.http[1].origin, "VirtualService/team/api");
    assert_eq!(
        keys(&h.apply("delegate.yaml", "")),
        [format!("route/production/{WEB}")]
    );
    assert_eq!(h.route("production", WEB).http.len(), 1);
}

const WAYPOINT_ROUTES: &str = "gateway~waypoint";

#[test]
fn http_route_bound_to_the_waypoint_gateway() {
    let mut h = Harness::new();
    // No kind/group: a Gateway. Two hostnames (one wildcard), one match: two matches.
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: to-v2\nspec:\n  parentRefs:\n  - name: waypoint\n  hostnames: [web.production.svc.cluster.local, \"*.example.com\"]\n  rules:\n  - matches:\n    - path:\n        type: PathPrefix\n        value: /beta\n    backendRefs:\n    - name: web-v2\n      port: 80\n";
    assert_eq!(
        keys(&h.apply("r.yaml", route)),
        [format!("route/production/{WAYPOINT_ROUTES}")]
    );
    let r = h.route("production", WAYPOINT_ROUTES);
    assert_eq!(r.hostname, WAYPOINT_ROUTES);
    assert_eq!(r.origins, ["HTTPRoute/production/to-v2"]);
    let m = &r.http[0].matches;
    assert_eq!(m.len(), 2);
    assert!(m
        .iter()
        .all(|m| m.uri.as_ref().unwrap().r#match == Some(Match::PathPrefix("/beta".into()))));
    assert_eq!(
        m[0].authority.as_ref().unwrap().r#match,
        Some(Match::Regex(
            "(?i:web\\.production\\.svc\\.cluster\\.local)(?::[0-9]+)?".into()
        ))
    );
    assert_eq!(
        m[1].authority.as_ref().unwrap().r#match,
        Some(Match::Regex(
            "(?i:[^:]+\\.example\\.com)(?::[0-9]+)?".into()
        ))
    );
    assert_eq!(
        m[0].port, 0,
        "the Gateway parent's port is not a service port"
    );
    assert_eq!(
        r.http[0].route[0].destination.as_ref().unwrap().host,
        "web-v2.production.svc.cluster.local"
    );
    assert_eq!(
        keys(&h.apply("r.yaml", "")),
        [format!("-route/production/{WAYPOINT_ROUTES}")]
    );
}

#[test]
fn gateway_and_service_parents_together() {
    let mut h = Harness::new();
    // Bound to a Service (GAMMA: hostnames ignored) and to the namespace's waypoint Gateway.
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: both\nspec:\n  parentRefs:\n  - kind: Service\n    group: \"\"\n    name: web\n  - group: gateway.networking.k8s.io\n    kind: Gateway\n    name: waypoint\n    namespace: production\n    sectionName: mesh\n  hostnames: [web]\n  rules:\n  - backendRefs:\n    - name: web\n      port: 80\n";
    let mut changed = keys(&h.apply("r.yaml", route));
    changed.sort();
    assert_eq!(
        changed,
        [
            format!("route/production/{WAYPOINT_ROUTES}"),
            format!("route/production/{WEB}"),
        ]
    );
    let on_service = h.route("production", WEB);
    assert!(
        on_service.http[0].matches.is_empty(),
        "GAMMA ignores hostnames"
    );
    let on_gateway = h.route("production", WAYPOINT_ROUTES);
    assert_eq!(on_gateway.http[0].matches.len(), 1);
    assert_eq!(
        on_gateway.http[0].matches[0]
            .authority
            .as_ref()
            .unwrap()
            .r#match,
        Some(Match::Regex("(?i:web)(?::[0-9]+)?".into()))
    );
    // No hostnames: the rules apply to every host through the waypoint. Other parent kinds
    // contribute nothing.
    let grpc = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata:\n  name: g\nspec:\n  parentRefs:\n  - name: waypoint\n  - kind: ServiceEntry\n    group: networking.istio.io\n    name: ext\n  rules:\n  - matches:\n    - method:\n        service: shop.Cart\n    backendRefs:\n    - name: cart\n      port: 9000\n";
    assert_eq!(
        keys(&h.apply("g.yaml", grpc)),
        [format!("route/production/{WAYPOINT_ROUTES}")]
    );
    let routes = h.route("production", WAYPOINT_ROUTES);
    let g = routes
        .http
        .iter()
        .find(|r| r.origin.starts_with("GRPCRoute/"))
        .unwrap();
    assert_eq!(g.matches.len(), 1);
    assert!(g.matches[0].authority.is_none());
    assert_eq!(
        g.matches[0].uri.as_ref().unwrap().r#match,
        Some(Match::Prefix("/shop.Cart/".into()))
    );
}

#[test]
fn gateway_parent_in_another_namespace_is_not_attached() {
    let mut h = Harness::new();
    // `allowedRoutes` is not read, so its default (`Same`) holds: a route in `production`
    // does not become the routing of the waypoint of `mesh`.
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: hijack\nspec:\n  parentRefs:\n  - kind: Gateway\n    name: waypoint\n    namespace: mesh\n  - kind: Gateway\n    name: waypoint\n  rules:\n  - backendRefs:\n    - name: web\n      port: 80\n";
    assert_eq!(
        keys(&h.apply("r.yaml", route)),
        [format!("route/production/{WAYPOINT_ROUTES}")]
    );
}
