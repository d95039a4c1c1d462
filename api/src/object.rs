//! Typed resources: kinds, keys and the `Object` envelope shared by every kind.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{canary, extensions, gateway, networking, security, telemetry};

/// Every kind Meshwork accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    PeerAuthentication,
    AuthorizationPolicy,
    Telemetry,
    WasmPlugin,
    Gateway,
    HttpRoute,
    GrpcRoute,
    Namespace,
    Pod,
    Service,
    ServiceAccount,
    ConfigMap,
    EndpointSlice,
    /// Accepted so that application manifests apply unchanged; not translated (pods are).
    Deployment,
    StatefulSet,
    DaemonSet,
    /// Flagger's canary (`flagger.app/v1beta1`), run by the built-in canary controller.
    Canary,
    MetricTemplate,
}

impl Kind {
    pub const ALL: [Kind; 20] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::Telemetry,
        Kind::WasmPlugin,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::ServiceAccount,
        Kind::ConfigMap,
        Kind::EndpointSlice,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Canary,
        Kind::MetricTemplate,
    ];

    /// The `kind:` string.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::Telemetry => "Telemetry",
            Kind::WasmPlugin => "WasmPlugin",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::ConfigMap => "ConfigMap",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::Canary => "Canary",
            Kind::MetricTemplate => "MetricTemplate",
        }
    }

    /// Accepted `apiVersion`s.
    pub fn api_versions(&self) -> &'static [&'static str] {
        match self {
            Kind::VirtualService | Kind::DestinationRule => &[
                "networking.istio.io/v1alpha3",
                "networking.istio.io/v1beta1",
                "networking.istio.io/v1",
            ],
            Kind::PeerAuthentication | Kind::AuthorizationPolicy => {
                &["security.istio.io/v1beta1", "security.istio.io/v1"]
            }
            Kind::Telemetry => &["telemetry.istio.io/v1alpha1", "telemetry.istio.io/v1"],
            Kind::WasmPlugin => &["extensions.istio.io/v1alpha1"],
            Kind::Gateway | Kind::HttpRoute | Kind::GrpcRoute => &[
                "gateway.networking.k8s.io/v1",
                "gateway.networking.k8s.io/v1beta1",
            ],
            Kind::Namespace
            | Kind::Pod
            | Kind::Service
            | Kind::ServiceAccount
            | Kind::ConfigMap => &["v1"],
            Kind::EndpointSlice => &["discovery.k8s.io/v1"],
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet => &["apps/v1"],
            Kind::Canary | Kind::MetricTemplate => &["flagger.app/v1beta1"],
        }
    }

    /// Looks a kind up by its `kind:` string.
    pub fn from_kind_str(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// Cluster-scoped kinds have an empty namespace in their key.
    pub fn is_cluster_scoped(&self) -> bool {
        matches!(self, Kind::Namespace)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of a resource: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    /// `Kind/ns/name`, or `Kind/name` for cluster-scoped kinds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The typed body of a resource. Istio and Gateway API kinds hold their `spec`; Kubernetes
/// kinds hold the whole k8s-openapi object (metadata, spec, status, data).
// Objects live behind `Arc` in the store, so variant size differences do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    VirtualService(networking::VirtualService),
    DestinationRule(networking::DestinationRule),
    PeerAuthentication(security::PeerAuthentication),
    AuthorizationPolicy(security::AuthorizationPolicy),
    Telemetry(telemetry::Telemetry),
    WasmPlugin(extensions::WasmPlugin),
    Gateway(gateway::Gateway),
    HttpRoute(gateway::HttpRoute),
    GrpcRoute(gateway::GrpcRoute),
    Namespace(Box<Namespace>),
    Pod(Box<Pod>),
    Service(Box<Service>),
    ServiceAccount(Box<ServiceAccount>),
    ConfigMap(Box<ConfigMap>),
    EndpointSlice(Box<EndpointSlice>),
    Deployment(Box<Deployment>),
    StatefulSet(Box<StatefulSet>),
    DaemonSet(Box<DaemonSet>),
    Canary(Box<canary::Canary>),
    MetricTemplate(canary::MetricTemplate),
}

/// A valid, typed resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub kind: Kind,
    pub api_version: String,
    /// Defaulted from the file's default namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub creation_timestamp: Option<Time>,
    pub uid: Option<String>,
    pub spec: Spec,
}

impl Object {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.kind, self.namespace.clone(), self.name.clone())
    }

    /// `<ns>/<name>` (or `<name>` for cluster-scoped kinds).
    pub fn ns_name(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}
