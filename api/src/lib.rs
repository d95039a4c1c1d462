//! Istio / Gateway API / Kubernetes resource types and multi-document YAML parsing.
