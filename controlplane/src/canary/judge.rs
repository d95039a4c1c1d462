//! Judging one metric check: the [`Judge`] interface, Flagger's built-in Istio queries and
//! the placeholders of MetricTemplate queries.
//!
//! Two judges implement it: [`crate::canary::prometheus::PrometheusJudge`] (Prometheus HTTP
//! API, Flagger's queries as Flagger sends them) and
//! [`crate::canary::scrape::ScrapeJudge`] (no Prometheus: the waypoints' own `/metrics`).

use std::time::Duration;

use futures::future::BoxFuture;

use super::spec::{Builtin, Check, CheckSource, Plan};

/// Why a check has no value; each counts as a failed check, as in Flagger.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JudgeError {
    #[error("no values found for metric {metric} (is {target} receiving traffic?)")]
    NoValues { metric: String, target: String },
    #[error("metric {metric}: query template: {message}")]
    Template { metric: String, message: String },
    #[error("metric {metric}: provider {provider} is not evaluated by Meshwork")]
    Provider { metric: String, provider: String },
    #[error("metric {metric}: {address}: {message}")]
    Query {
        metric: String,
        address: String,
        message: String,
    },
    #[error("metric {metric}: {message}")]
    Unsupported { metric: String, message: String },
}

/// One measurement to make: the check, the canary it is for and, for Prometheus, the
/// query with every placeholder filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub metric: String,
    pub namespace: String,
    pub target: String,
    pub interval: Duration,
    pub builtin: Option<Builtin>,
    /// PromQL, templated.
    pub query: String,
    /// The template's Prometheus address; empty: the controller's default.
    pub address: String,
    /// The template's provider type (`prometheus` for built-ins).
    pub provider: String,
    /// The `version` label of the canary's pods (the target's selector), if it has one:
    /// the waypoint-metrics judge counts only `destination_version` = it, so a primary
    /// that runs pods of the target's workload (directory mode, after a promotion) does
    /// not blur the canary's numbers. Prometheus queries are Flagger's, unchanged.
    pub canary_version: Option<String>,
}

/// Measures a check's value (a success rate in percent, a p99 in milliseconds, or what a
/// template's query returns).
pub trait Judge: Send + Sync {
    fn measure<'a>(&'a self, m: &'a Measurement) -> BoxFuture<'a, Result<f64, JudgeError>>;
}

/// Flagger's Istio observer: the percentage of non-5xx responses of the target.
pub const SUCCESS_RATE_QUERY: &str = "sum(rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"{{ namespace }}\",destination_workload=~\"{{ target }}\",response_code!~\"5.*\"}[{{ interval }}])) / sum(rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"{{ namespace }}\",destination_workload=~\"{{ target }}\"}[{{ interval }}])) * 100";

/// Flagger's Istio observer: the target's p99 request duration in milliseconds.
pub const DURATION_QUERY: &str = "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\",destination_workload_namespace=\"{{ namespace }}\",destination_workload=~\"{{ target }}\"}[{{ interval }}])) by (le))";

/// A Prometheus range: whole seconds as `Ns`, else milliseconds.
pub fn prom_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Fills `{{ namespace }}`, `{{ target }}`, `{{ service }}`, `{{ ingress }}`,
/// `{{ interval }}` and `{{ variables.NAME }}` (spaces inside the braces optional). An
/// unknown placeholder or an unclosed `{{` is an error naming it.
pub fn render(
    query: &str,
    plan: &Plan,
    interval: Duration,
    variables: &std::collections::BTreeMap<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ at byte {}", query.len() - rest.len() + start))?;
        let name = after[..end].trim();
        let value = match name {
            "namespace" => plan.namespace.clone(),
            "target" => plan.target.clone(),
            "service" => plan.service.clone(),
            "ingress" => String::new(),
            "interval" => prom_duration(interval),
            v => match v.strip_prefix("variables.") {
                Some(var) => variables
                    .get(var)
                    .cloned()
                    .ok_or_else(|| format!("{{{{ {v} }}}}: no templateVariables.{var}"))?,
                None => return Err(format!("unknown placeholder {{{{ {v} }}}}")),
            },
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The measurement of `check` for `plan`.
pub fn measurement(plan: &Plan, check: &Check) -> Result<Measurement, JudgeError> {
    let (builtin, template, address, provider) = match &check.source {
        CheckSource::Builtin(b) => {
            let q = match b {
                Builtin::SuccessRate => SUCCESS_RATE_QUERY,
                Builtin::Duration => DURATION_QUERY,
            };
            (Some(*b), q, "", "prometheus")
        }
        CheckSource::Query {
            provider,
            address,
            query,
            ..
        } => (None, query.as_str(), address.as_str(), provider.as_str()),
    };
    let query = render(template, plan, check.interval, &check.variables).map_err(|message| {
        JudgeError::Template {
            metric: check.name.clone(),
            message,
        }
    })?;
    Ok(Measurement {
        metric: check.name.clone(),
        namespace: plan.namespace.clone(),
        target: plan.target.clone(),
        interval: check.interval,
        builtin,
        query,
        address: address.to_string(),
        provider: provider.to_string(),
        canary_version: plan.canary_selector.get("version").cloned(),
    })
}

/// One check's outcome, as logged and shown in the status.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub metric: String,
    pub value: Option<f64>,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs every check of the plan; all results, in order.
pub async fn judge_all(judge: &dyn Judge, plan: &Plan) -> Vec<CheckResult> {
    let mut out = Vec::with_capacity(plan.checks.len());
    for check in &plan.checks {
        let result = match measurement(plan, check) {
            Ok(m) => judge.measure(&m).await,
            Err(e) => Err(e),
        };
        out.push(match result {
            Ok(v) => CheckResult {
                metric: check.name.clone(),
                value: Some(v),
                passed: check.passes(v),
                error: None,
            },
            Err(e) => CheckResult {
                metric: check.name.clone(),
                value: None,
                passed: false,
                error: Some(e.to_string()),
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::spec::tests::{inputs, DEPLOYMENTS};

    fn plan() -> Plan {
        let yaml = format!(
            "{DEPLOYMENTS}---\napiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: web, namespace: shop}}\nspec:\n  targetRef: {{kind: Deployment, name: web}}\n  service: {{port: 80}}\n  analysis:\n    stepWeight: 50\n    metrics:\n    - name: request-success-rate\n      thresholdRange: {{min: 99}}\n      interval: 30s\n    - name: nf\n      templateRef: {{name: nf}}\n      templateVariables: {{code: \"404\"}}\n      thresholdRange: {{max: 5}}\n---\napiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata: {{name: nf, namespace: shop}}\nspec:\n  provider: {{type: prometheus, address: \"http://prom:9090\"}}\n  query: 'sum(x{{ns=\"{{{{ namespace }}}}\",w=\"{{{{target}}}}\",code=\"{{{{ variables.code }}}}\"}}[{{{{ interval }}}}])'\n"
        );
        let i = inputs(&yaml);
        i.plan(&i.canaries[0]).unwrap()
    }

    #[test]
    fn builtin_queries_are_flaggers_with_placeholders_filled() {
        let p = plan();
        let m = measurement(&p, &p.checks[0]).unwrap();
        assert_eq!(
            m.query,
            "sum(rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"shop\",destination_workload=~\"web\",response_code!~\"5.*\"}[30s])) / sum(rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"shop\",destination_workload=~\"web\"}[30s])) * 100"
        );
        let m = measurement(&p, &p.checks[1]).unwrap();
        assert_eq!(m.query, "sum(x{ns=\"shop\",w=\"web\",code=\"404\"}[60s])");
        assert_eq!(m.address, "http://prom:9090");
    }

    #[test]
    fn bad_placeholders_are_named() {
        let p = plan();
        let none = Default::default();
        assert_eq!(
            render("{{ pod }}", &p, Duration::from_secs(1), &none).unwrap_err(),
            "unknown placeholder {{ pod }}"
        );
        assert!(render("a {{ target", &p, Duration::from_secs(1), &none)
            .unwrap_err()
            .starts_with("unclosed"));
        assert_eq!(
            render("{{ variables.x }}", &p, Duration::from_secs(1), &none).unwrap_err(),
            "{{ variables.x }}: no templateVariables.x"
        );
        assert_eq!(prom_duration(Duration::from_millis(1500)), "1500ms");
    }
}
