//! Parsing of the less common kinds and fields.

use std::path::Path;

use meshwork_api::{parse_file, Kind, Spec, Store};

#[test]
fn gateway_api_kinds_parse() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: waypoint\n  namespace: shop\nspec:\n  gatewayClassName: istio-waypoint\n  listeners:\n  - name: mesh\n    port: 15008\n    protocol: HBONE\n---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\nmetadata:\n  name: r\nspec:\n  parentRefs:\n  - kind: Service\n    group: \"\"\n    name: web\n  rules:\n  - matches:\n    - path: {type: RegularExpression, value: \"^/a+$\"}\n    backendRefs:\n    - name: web\n      port: 80\n    retry:\n      codes: [503]\n      attempts: 2\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata:\n  name: g\nspec:\n  parentRefs:\n  - kind: Service\n    name: web\n  rules:\n  - matches:\n    - method: {service: a.B, method: C}\n";
    let parsed = parse_file(Path::new("gw.yaml"), text, "default");
    let errors: Vec<String> = parsed.errors().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let warnings: Vec<String> = parsed.warnings().map(|e| e.to_string()).collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    let objs: Vec<_> = parsed.objects().collect();
    assert_eq!(objs.len(), 3);
    assert_eq!(objs[0].kind, Kind::Gateway);
    assert_eq!(objs[0].namespace, "shop");
    let Spec::HttpRoute(r) = &objs[1].spec else {
        panic!()
    };
    assert!(r.parent_refs[0].is_service());
    assert_eq!(r.rules[0].retry.as_ref().unwrap().codes, [503]);
    assert_eq!(objs[2].kind, Kind::GrpcRoute);
}

#[test]
fn gateway_api_regex_is_checked() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\nspec:\n  rules:\n  - matches:\n    - path: {type: RegularExpression, value: \"(\"}\n";
    let parsed = parse_file(Path::new("r.yaml"), text, "default");
    let e: Vec<_> = parsed.errors().collect();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].field, "spec.rules[0].matches[0].path.value");
    assert!(e[0].message.contains("regex parse error"), "{}", e[0]);
}

#[test]
fn mesh_config_map_is_validated_in_root_namespace() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    extensionProviders:\n    - name: otel\n      opentelemetry:\n        service: c\n        port: many\n";
    let mut store = Store::new();
    store.apply_file(Path::new("cm.yaml"), text, "default");
    let e = store.errors();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        e[0].field,
        "data.mesh.extensionProviders[0].opentelemetry.port"
    );
    assert_eq!(e[0].kind, "ConfigMap");
    assert_eq!(e[0].name, "istio");
    assert!(store.is_empty());
}

#[test]
fn telemetry_and_destination_rule_fields() {
    let text = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: t\nspec:\n  targetRefs:\n  - kind: Gateway\n    group: gateway.networking.k8s.io\n    name: waypoint\n  metrics:\n  - providers: [{name: prometheus}]\n    overrides:\n    - match: {metric: REQUEST_COUNT, mode: SERVER}\n      disabled: false\n      tagOverrides:\n        request_host: {operation: REMOVE}\n        custom: {value: \"request.host\"}\n  accessLogging:\n  - providers: [{name: envoy}]\n    filter: {expression: \"response.code >= 400\"}\n    match: {mode: CLIENT}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: d\nspec:\n  host: web\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpCookie: {name: user, ttl: 0s}\n    tls: {mode: ISTIO_MUTUAL}\n    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer: {simple: LEAST_REQUEST}\n";
    let parsed = parse_file(Path::new("t.yaml"), text, "default");
    let errors: Vec<String> = parsed.errors().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(parsed.objects().count(), 2);
    let bad = text.replace("simple: LEAST_REQUEST", "simple: FASTEST");
    let parsed = parse_file(Path::new("t.yaml"), &bad, "default");
    let e: Vec<_> = parsed.errors().collect();
    assert_eq!(e.len(), 1);
    assert_eq!(
        e[0].field,
        "spec.trafficPolicy.portLevelSettings[0].loadBalancer.simple"
    );
}

#[test]
fn fault_percentages_and_status() {
    let vs = |fault: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: v\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {{host: a}}\n    fault:\n{fault}")
    };
    let field_of = |text: &str| {
        let p = parse_file(Path::new("f.yaml"), text, "default");
        p.errors().map(|e| e.field.clone()).collect::<Vec<_>>()
    };
    assert!(field_of(&vs(
        "      delay: {fixedDelay: 1s, percentage: {value: 50}}\n"
    ))
    .is_empty());
    assert_eq!(
        field_of(&vs(
            "      delay: {fixedDelay: 1s, percentage: {value: 150}}\n"
        )),
        ["spec.http[0].fault.delay.percentage.value"]
    );
    assert_eq!(
        field_of(&vs("      delay: {fixedDelay: 1s, percent: 101}\n")),
        ["spec.http[0].fault.delay.percent"]
    );
    assert_eq!(
        field_of(&vs("      abort: {httpStatus: 99}\n")),
        ["spec.http[0].fault.abort.httpStatus"]
    );
}

#[test]
fn unknown_fields_in_kubernetes_kinds_are_warnings() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  colour: blue\nspec:\n  containers:\n  - name: c\n    image: i\n    bogus: 1\n";
    let parsed = parse_file(Path::new("p.yaml"), text, "default");
    assert_eq!(parsed.errors().count(), 0);
    let mut fields: Vec<String> = parsed.warnings().map(|w| w.field.clone()).collect();
    fields.sort();
    assert_eq!(fields, ["metadata.colour", "spec.containers[0].bogus"]);
}

#[test]
fn errors_name_line_and_document() {
    let text = "# header comment\n\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n\napiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: eighty\n";
    let parsed = parse_file(Path::new("dir/f.yaml"), text, "ns1");
    let e: Vec<_> = parsed.errors().collect();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].document, 2);
    assert_eq!(e[0].line, 9, "first content line of the second document");
    assert_eq!(e[0].field, "spec.ports[0].port");
    assert!(
        e[0].to_string()
            .starts_with("dir/f.yaml:9 (doc 2): Service ns1/s: spec.ports[0].port: "),
        "{}",
        e[0]
    );
}

#[test]
fn delegate_virtual_services_have_no_hosts() {
    let head =
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: d\nspec:\n";
    let ok = format!("{head}  http:\n  - route:\n    - destination: {{host: a}}\n");
    assert_eq!(
        parse_file(Path::new("d.yaml"), &ok, "x").errors().count(),
        0
    );
    let tcp = format!("{head}  tcp:\n  - route:\n    - destination: {{host: a}}\n");
    let p = parse_file(Path::new("d.yaml"), &tcp, "x");
    let fields: Vec<&str> = p.errors().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.hosts"]);
    let typo = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: d\nsepc:\n  hosts: [a]\n";
    let p = parse_file(Path::new("d.yaml"), typo, "x");
    let fields: Vec<&str> = p.errors().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.hosts"]);
    let warnings: Vec<&str> = p.warnings().map(|e| e.field.as_str()).collect();
    assert_eq!(warnings, ["sepc"]);
    let nested = format!("{head}  http:\n  - delegate: {{name: other}}\n");
    let p = parse_file(Path::new("d.yaml"), &nested, "x");
    let fields: Vec<&str> = p.errors().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.http[0].delegate"]);
}
