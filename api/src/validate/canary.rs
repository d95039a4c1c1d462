//! Flagger `Canary` and `MetricTemplate`: what Flagger's controller would refuse, plus what
//! Meshwork's controller needs to run the analysis.

use super::Problems;
use crate::canary::{
    Canary, CanaryAnalysis, HookType, MetricTemplate, REQUEST_DURATION, REQUEST_SUCCESS_RATE,
};

pub(crate) fn canary(c: &Canary, p: &mut Problems) {
    if c.target_ref.name.is_empty() {
        p.add("spec.targetRef.name", "required");
    }
    if !c.target_ref.kind.is_empty() && c.target_ref.kind != "Deployment" {
        p.warn(
            "spec.targetRef.kind",
            format!(
                "Meshwork's canary controller drives Deployments only, not {}",
                c.target_ref.kind
            ),
        );
    }
    // The controller writes Services `<name>`, `<name>-primary` and `<name>-canary`:
    // each a DNS-1035 label of at most 63 characters.
    let (field, name) = if c.service.name.is_empty() {
        ("spec.targetRef.name", &c.target_ref.name)
    } else {
        ("spec.service.name", &c.service.name)
    };
    if !name.is_empty() {
        if let Err(why) = service_name(name) {
            p.add(field, why);
        }
    }
    if !(1..=65535).contains(&c.service.port) {
        p.add(
            "spec.service.port",
            format!("port {} out of range 1..=65535 (required)", c.service.port),
        );
    }
    if c.analysis.is_some() && c.canary_analysis.is_some() {
        p.warn(
            "spec.canaryAnalysis",
            "ignored: spec.analysis is set (canaryAnalysis is its older name)",
        );
    }
    let field = if c.analysis.is_some() || c.canary_analysis.is_none() {
        "spec.analysis"
    } else {
        "spec.canaryAnalysis"
    };
    if let Some(a) = c.analysis() {
        analysis(field, a, p);
    }
}

/// A name the controller can derive `-primary` / `-canary` Services from.
fn service_name(name: &str) -> Result<(), String> {
    const MAX: usize = 63 - "-primary".len();
    let b = name.as_bytes();
    let ok = b.first().is_some_and(u8::is_ascii_lowercase)
        && b.last()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if !ok {
        return Err(format!(
            "{name:?} is not a DNS-1035 label (lower-case letters, digits and '-', starting with a letter)"
        ));
    }
    if name.len() > MAX {
        return Err(format!(
            "{name:?} is {} characters: at most {MAX}, so that {name}-primary is a valid Service name",
            name.len()
        ));
    }
    Ok(())
}

fn weight(p: &mut Problems, field: String, w: u32) {
    if w > 100 {
        p.add(field, format!("weight {w} must be between 0 and 100"));
    }
}

fn analysis(f: &str, a: &CanaryAnalysis, p: &mut Problems) {
    if let Some(i) = &a.interval {
        if i.as_std() < std::time::Duration::from_secs(1) {
            p.add(format!("{f}.interval"), "must be at least 1s");
        }
    }
    if a.threshold == Some(0) {
        p.add(format!("{f}.threshold"), "must be at least 1");
    }
    if let Some(w) = a.step_weight {
        weight(p, format!("{f}.stepWeight"), w);
    }
    if let Some(w) = a.max_weight {
        weight(p, format!("{f}.maxWeight"), w);
    }
    if let Some(w) = a.step_weight_promotion {
        weight(p, format!("{f}.stepWeightPromotion"), w);
    }
    let mut last = 0;
    for (i, &w) in a.step_weights.iter().enumerate() {
        let field = format!("{f}.stepWeights[{i}]");
        if w > 100 {
            weight(p, field, w);
        } else if w <= last {
            p.add(field, format!("weights must increase: {w} after {last}"));
        } else {
            last = w;
        }
    }
    let shifting = a.step_weight.is_some() || !a.step_weights.is_empty();
    if a.iterations.is_none() && !shifting {
        p.warn(
            f,
            "neither stepWeight, stepWeights nor iterations: the canary is promoted without analysis",
        );
    }
    if a.iterations.is_some() && shifting {
        p.warn(
            format!("{f}.iterations"),
            "with stepWeight(s) set, iterations is ignored (traffic shifting, as Flagger)",
        );
    }
    if a.iterations.is_some() && !shifting && a.match_.is_empty() {
        p.warn(
            format!("{f}.match"),
            "iterations without match: no request is routed to the canary during the analysis",
        );
    }
    for (i, m) in a.metrics.iter().enumerate() {
        let mf = format!("{f}.metrics[{i}]");
        if m.name.is_empty() {
            p.add(format!("{mf}.name"), "required");
        }
        let builtin = m.name == REQUEST_SUCCESS_RATE || m.name == REQUEST_DURATION;
        if m.template_ref.is_none() && !builtin {
            if m.query.is_empty() {
                p.add(
                    format!("{mf}.templateRef"),
                    format!(
                        "required: \"{}\" is not a built-in metric ({REQUEST_SUCCESS_RATE}, {REQUEST_DURATION})",
                        super::escaped(&m.name)
                    ),
                );
            } else {
                p.warn(
                    format!("{mf}.query"),
                    "inline queries are deprecated in Flagger; use a MetricTemplate",
                );
            }
        }
        if let Some(t) = &m.template_ref {
            if t.name.is_empty() {
                p.add(format!("{mf}.templateRef.name"), "required");
            }
        }
        match (&m.threshold_range, m.threshold) {
            (Some(r), _) => {
                if r.min.is_none() && r.max.is_none() {
                    p.add(format!("{mf}.thresholdRange"), "min or max required");
                }
                if let (Some(lo), Some(hi)) = (r.min, r.max) {
                    if lo > hi {
                        p.add(
                            format!("{mf}.thresholdRange"),
                            format!("min {lo} is above max {hi}"),
                        );
                    }
                }
            }
            (None, Some(_)) => {}
            (None, None) => p.warn(
                format!("{mf}.thresholdRange"),
                "no min or max: this check never fails",
            ),
        }
        if let Some(i) = &m.interval {
            if i.as_std() < std::time::Duration::from_secs(1) {
                p.add(format!("{mf}.interval"), "must be at least 1s");
            }
        }
    }
    for (i, h) in a.webhooks.iter().enumerate() {
        let hf = format!("{f}.webhooks[{i}]");
        if h.name.is_empty() {
            p.add(format!("{hf}.name"), "required");
        }
        if h.url.is_empty() {
            p.add(format!("{hf}.url"), "required");
        } else if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
            p.add(
                format!("{hf}.url"),
                format!("\"{}\" is not an http(s) URL", super::escaped(&h.url)),
            );
        }
        if matches!(
            h.hook_type(),
            HookType::Event | HookType::ConfirmTrafficIncrease
        ) {
            p.warn(
                format!("{hf}.type"),
                format!(
                    "{}: accepted; see docs/canary.md for when Meshwork calls it",
                    h.hook_type().as_str()
                ),
            );
        }
    }
}

pub(crate) fn metric_template(t: &MetricTemplate, p: &mut Problems) {
    if t.provider.type_.is_empty() {
        p.add("spec.provider.type", "required");
    } else if t.provider.type_ != "prometheus" {
        p.warn(
            "spec.provider.type",
            format!(
                "Meshwork's canary controller evaluates prometheus only, not \"{}\" (checks using this template fail)",
                super::escaped(&t.provider.type_)
            ),
        );
    }
    if t.provider.type_ == "prometheus" && t.provider.address.is_empty() {
        p.add(
            "spec.provider.address",
            "required for the prometheus provider",
        );
    }
    if t.query.trim().is_empty() {
        p.add("spec.query", "required");
    }
}

#[cfg(test)]
mod name_tests {
    use super::service_name;

    #[test]
    fn service_names_leave_room_for_the_primary_suffix() {
        assert!(service_name("podinfo").is_ok());
        assert!(service_name(&"a".repeat(55)).is_ok());
        let long = service_name(&"a".repeat(56)).unwrap_err();
        assert!(long.contains("at most 55"), "{long}");
        for bad in ["Podinfo", "1st", "web-", "a/b", "a..b", "a_b"] {
            assert!(service_name(bad).is_err(), "{bad}");
        }
    }
}
