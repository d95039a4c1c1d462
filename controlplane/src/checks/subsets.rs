//! A VirtualService route to a subset that no DestinationRule defines: the proxy has no
//! endpoints for it and every request on that route fails with 503.

use meshwork_api::networking::{Destination, VirtualService};
use meshwork_api::Object;

/// The DestinationRule that applies to a destination host, as the caller resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFor {
    /// `ns/name` of the DestinationRule.
    pub name: String,
    /// The subsets it defines.
    pub subsets: Vec<String>,
}

/// One route to an undefined subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndefinedSubset {
    /// Field path in the VirtualService, e.g. `spec.http[0].route[1]`.
    pub field: String,
    pub host: String,
    pub subset: String,
    /// The DestinationRule for the host, if there is one (it lacks the subset).
    pub rule: Option<String>,
    /// The VirtualService's namespace.
    pub namespace: String,
}

impl UndefinedSubset {
    pub fn message(&self) -> String {
        match &self.rule {
            None => format!(
                "routes to subset \"{}\" of host {}, but no DestinationRule for that host is visible from namespace {}; requests on this route fail with 503",
                self.subset, self.host, self.namespace
            ),
            Some(dr) => format!(
                "routes to subset \"{}\" of host {}, but DestinationRule {dr} defines no such subset; requests on this route fail with 503",
                self.subset, self.host
            ),
        }
    }

    pub fn fix(&self) -> String {
        match &self.rule {
            None => format!(
                "add a DestinationRule with host: {} and a subset named \"{}\" (in namespace {} or the service's namespace)",
                self.host, self.subset, self.namespace
            ),
            Some(dr) => format!(
                "add subset \"{}\" to DestinationRule {dr} or route to one of its subsets",
                self.subset
            ),
        }
    }
}

/// Every destination a VirtualService routes to, with its field path.
pub fn destinations(vs: &VirtualService) -> Vec<(String, &Destination)> {
    let mut out = Vec::new();
    for (i, r) in vs.http.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            out.push((format!("spec.http[{i}].route[{j}]"), &d.destination));
        }
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            out.push((format!("spec.tcp[{i}].route[{j}]"), &d.destination));
        }
    }
    for (i, r) in vs.tls.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            out.push((format!("spec.tls[{i}].route[{j}]"), &d.destination));
        }
    }
    out
}

/// Routes of `vs` (an object of kind VirtualService) to subsets the DestinationRule found by
/// `rule_for(host, vs namespace)` does not define.
pub fn undefined_subsets(
    vs: &Object,
    rule_for: impl Fn(&str, &str) -> Option<RuleFor>,
) -> Vec<UndefinedSubset> {
    let meshwork_api::Spec::VirtualService(spec) = &vs.spec else {
        return Vec::new();
    };
    let ns = vs.namespace.as_str();
    destinations(spec)
        .into_iter()
        .filter(|(_, d)| !d.subset.is_empty())
        .filter_map(|(field, d)| {
            let rule = rule_for(&d.host, ns);
            if rule.as_ref().is_some_and(|r| r.subsets.contains(&d.subset)) {
                return None;
            }
            Some(UndefinedSubset {
                field,
                host: d.host.clone(),
                subset: d.subset.clone(),
                rule: rule.map(|r| r.name),
                namespace: ns.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(yaml: &str) -> Object {
        let f = meshwork_api::parse_file("vs.yaml".as_ref(), yaml, "shop");
        f.documents.into_iter().next().unwrap().result.unwrap()
    }

    #[test]
    fn reports_missing_rule_and_missing_subset_only() {
        let v = vs(r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
  http:
    - route:
        - destination: {host: reviews, subset: v1}
        - destination: {host: reviews, subset: v9}
        - destination: {host: ratings, subset: v1}
        - destination: {host: details}
"#);
        let got = undefined_subsets(&v, |host, ns| {
            assert_eq!(ns, "shop");
            (host == "reviews").then(|| RuleFor {
                name: "shop/reviews".into(),
                subsets: vec!["v1".into()],
            })
        });
        let fields: Vec<_> = got.iter().map(|u| u.field.as_str()).collect();
        assert_eq!(fields, ["spec.http[0].route[1]", "spec.http[0].route[2]"]);
        assert!(got[0]
            .message()
            .contains("DestinationRule shop/reviews defines no such subset"));
        assert!(got[1]
            .message()
            .contains("no DestinationRule for that host"));
        assert!(got[1].fix().contains("subset named \"v1\""));
    }
}
