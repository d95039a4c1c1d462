//! Telemetry rules.

use super::{syntax, Problems};
use crate::telemetry::{ProviderRef, Telemetry};

/// Istio's schema: a provider reference needs a name.
fn providers(f: &str, list: &[ProviderRef], p: &mut Problems) {
    for (k, pr) in list.iter().enumerate() {
        if pr.name.is_empty() {
            p.add(format!("{f}.providers[{k}].name"), "must not be empty");
        }
    }
}

pub(super) fn telemetry(t: &Telemetry, p: &mut Problems) {
    syntax::policy_attachment(
        p,
        t.selector.as_ref(),
        t.target_ref.as_ref(),
        &t.target_refs,
    );
    if t.tracing.len() > 1 {
        p.warn(
            "spec.tracing",
            "multiple tracing is not currently supported",
        );
    }
    const MODES: &[&str] = &["CLIENT_AND_SERVER", "CLIENT", "SERVER"];
    for (i, tr) in t.tracing.iter().enumerate() {
        let f = format!("spec.tracing[{i}]");
        providers(&f, &tr.providers, p);
        if tr.providers.len() > 1 {
            p.warn(
                format!("{f}.providers"),
                "multiple providers is not currently supported",
            );
        }
        if let Some(v) = tr.random_sampling_percentage {
            p.percent(format!("{f}.randomSamplingPercentage"), v);
        }
        if let Some(m) = &tr.match_ {
            if !MODES.contains(&m.mode.as_str()) {
                p.add(
                    format!("{f}.match.mode"),
                    format!("unknown mode \"{}\"", m.mode),
                );
            }
        }
        for (name, tag) in &tr.custom_tags {
            let n = usize::from(tag.literal.is_some())
                + usize::from(tag.environment.is_some())
                + usize::from(tag.header.is_some());
            if n != 1 {
                p.add(
                    format!("{f}.customTags.{name}"),
                    "exactly one of literal, environment or header is required",
                );
            }
            if name.is_empty() {
                p.add(format!("{f}.customTags"), "tag name may not be empty");
            }
            if tag.literal.as_ref().is_some_and(|l| l.value.is_empty()) {
                p.add(
                    format!("{f}.customTags.{name}.literal.value"),
                    "literal tag value may not be empty",
                );
            }
            if tag.header.as_ref().is_some_and(|h| h.name.is_empty()) {
                p.add(format!("{f}.customTags.{name}.header.name"), "required");
            }
            if tag.environment.as_ref().is_some_and(|h| h.name.is_empty()) {
                p.add(
                    format!("{f}.customTags.{name}.environment.name"),
                    "required",
                );
            }
        }
    }
    const METRICS: &[&str] = &[
        "ALL_METRICS",
        "REQUEST_COUNT",
        "REQUEST_DURATION",
        "REQUEST_SIZE",
        "RESPONSE_SIZE",
        "TCP_OPENED_CONNECTIONS",
        "TCP_CLOSED_CONNECTIONS",
        "TCP_SENT_BYTES",
        "TCP_RECEIVED_BYTES",
        "GRPC_REQUEST_MESSAGES",
        "GRPC_RESPONSE_MESSAGES",
    ];
    for (i, m) in t.metrics.iter().enumerate() {
        providers(&format!("spec.metrics[{i}]"), &m.providers, p);
        for (j, o) in m.overrides.iter().enumerate() {
            let f = format!("spec.metrics[{i}].overrides[{j}]");
            if let Some(sel) = &o.match_ {
                if sel.custom_metric.as_deref() == Some("") {
                    p.add(format!("{f}.match.customMetric"), "must not be empty");
                }
                if let Some(metric) = &sel.metric {
                    if !METRICS.contains(&metric.as_str()) {
                        p.add(
                            format!("{f}.match.metric"),
                            format!("unknown metric \"{metric}\""),
                        );
                    }
                }
                if let Some(mode) = &sel.mode {
                    if !MODES.contains(&mode.as_str()) {
                        p.add(
                            format!("{f}.match.mode"),
                            format!("unknown mode \"{mode}\""),
                        );
                    }
                }
            }
            for (tag, ov) in &o.tag_overrides {
                if tag.is_empty() {
                    p.warn(
                        format!("{f}.tagOverrides"),
                        "tagOverrides.name may not be empty",
                    );
                }
                match ov.operation.as_deref().unwrap_or("UPSERT") {
                    "UPSERT" => {
                        if ov.value.as_deref().is_none_or(str::is_empty) {
                            p.add(
                                format!("{f}.tagOverrides.{tag}.value"),
                                "required for operation UPSERT",
                            );
                        }
                    }
                    "REMOVE" => {
                        if ov.value.is_some() {
                            p.add(
                                format!("{f}.tagOverrides.{tag}.value"),
                                "must not be set when operation is REMOVE",
                            );
                        }
                    }
                    other => p.add(
                        format!("{f}.tagOverrides.{tag}.operation"),
                        format!("unknown operation \"{other}\" (UPSERT or REMOVE)"),
                    ),
                }
            }
        }
    }
    for (i, a) in t.access_logging.iter().enumerate() {
        providers(&format!("spec.accessLogging[{i}]"), &a.providers, p);
        if let Some(m) = &a.match_ {
            if !MODES.contains(&m.mode.as_str()) {
                p.add(
                    format!("spec.accessLogging[{i}].match.mode"),
                    format!("unknown mode \"{}\"", m.mode),
                );
            }
        }
    }
}
