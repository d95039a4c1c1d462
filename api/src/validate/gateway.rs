//! Gateway API route rules.

use super::Problems;
use crate::common::check_regex;
use crate::gateway::{GrpcRoute, HttpHeaderMatch, HttpRoute as GwHttpRoute, HttpRouteFilter};

fn header_matches(f: &str, hs: &[HttpHeaderMatch], p: &mut Problems) {
    for (k, h) in hs.iter().enumerate() {
        if h.name.is_empty() {
            p.add(format!("{f}[{k}].name"), "required");
        }
        match h.type_.as_deref().unwrap_or("Exact") {
            "Exact" => {}
            "RegularExpression" => {
                if let Err(e) = check_regex(&h.value) {
                    p.add(format!("{f}[{k}].value"), e);
                }
            }
            other => p.add(
                format!("{f}[{k}].type"),
                format!("unknown match type \"{other}\""),
            ),
        }
    }
}

fn filters(f: &str, fs: &[HttpRouteFilter], p: &mut Problems) {
    const TYPES: &[&str] = &[
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "RequestRedirect",
        "URLRewrite",
        "ExtensionRef",
        "CORS",
    ];
    for (i, flt) in fs.iter().enumerate() {
        if !TYPES.contains(&flt.type_.as_str()) {
            p.add(
                format!("{f}[{i}].type"),
                format!("unknown filter type \"{}\"", flt.type_),
            );
        }
    }
}

pub(super) fn gw_http_route(r: &GwHttpRoute, p: &mut Problems) {
    for (i, rule) in r.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{f}.matches[{j}]");
            if let Some(path) = &m.path {
                match path.type_.as_deref().unwrap_or("PathPrefix") {
                    "Exact" | "PathPrefix" => {}
                    "RegularExpression" => {
                        if let Err(e) = check_regex(path.value.as_deref().unwrap_or("")) {
                            p.add(format!("{mf}.path.value"), e);
                        }
                    }
                    other => p.add(
                        format!("{mf}.path.type"),
                        format!("unknown path match type \"{other}\""),
                    ),
                }
            }
            header_matches(&format!("{mf}.headers"), &m.headers, p);
            header_matches(&format!("{mf}.queryParams"), &m.query_params, p);
        }
        filters(&format!("{f}.filters"), &rule.filters, p);
        if let Some(t) = &rule.timeouts {
            if let (Some(req), Some(be)) = (t.request, t.backend_request) {
                if req.0 != std::time::Duration::ZERO && be > req {
                    p.add(
                        format!("{f}.timeouts.backendRequest"),
                        "must not be greater than timeouts.request",
                    );
                }
            }
        }
    }
}

pub(super) fn gw_grpc_route(r: &GrpcRoute, p: &mut Problems) {
    for (i, rule) in r.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{f}.matches[{j}]");
            if let Some(method) = &m.method {
                if method.type_.as_deref() == Some("RegularExpression") {
                    for (name, v) in [("service", &method.service), ("method", &method.method)] {
                        if let Some(v) = v {
                            if let Err(e) = check_regex(v) {
                                p.add(format!("{mf}.method.{name}"), e);
                            }
                        }
                    }
                }
            }
            header_matches(&format!("{mf}.headers"), &m.headers, p);
        }
        filters(&format!("{f}.filters"), &rule.filters, p);
    }
}
