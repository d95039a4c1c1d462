//! Choosing among weighted destinations, and subset membership by labels.

use std::collections::BTreeMap;

use meshwork_model::pb::config as pb;
use rand::Rng;

/// Picks a destination by weight. A single destination, or all-zero weights, pick the first
/// one with the largest weight.
pub fn pick_weighted<'a, R: Rng + ?Sized>(
    dests: &'a [pb::WeightedDestination],
    rng: &mut R,
) -> Option<&'a pb::WeightedDestination> {
    meshwork_model::rules::weights::pick(dests, |total| rng.random_range(0..total))
}

/// Whether a workload's labels select it into a subset.
pub fn subset_matches(
    subset: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    subset.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn wd(subset: &str, weight: u32) -> pb::WeightedDestination {
        pb::WeightedDestination {
            destination: Some(pb::Destination {
                host: "h".into(),
                subset: subset.into(),
                port: 0,
            }),
            weight,
            headers: None,
        }
    }

    #[test]
    fn weights_split() {
        let dests = [wd("v1", 90), wd("v2", 10)];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let v2 = (0..10_000)
            .filter(|_| {
                pick_weighted(&dests, &mut rng)
                    .and_then(|d| d.destination.as_ref())
                    .is_some_and(|d| d.subset == "v2")
            })
            .count();
        assert!((800..1200).contains(&v2), "{v2}");
    }

    #[test]
    fn degenerate_weights() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert!(pick_weighted(&[], &mut rng).is_none());
        let one = [wd("a", 0)];
        assert_eq!(pick_weighted(&one, &mut rng).unwrap().weight, 0);
        let zero_and_full = [wd("a", 0), wd("b", 100)];
        for _ in 0..100 {
            let d = pick_weighted(&zero_and_full, &mut rng).unwrap();
            assert_eq!(d.destination.as_ref().unwrap().subset, "b");
        }
    }

    #[test]
    fn subsets() {
        let labels: BTreeMap<_, _> = [("version".to_string(), "v1".to_string())].into();
        let v1: BTreeMap<_, _> = [("version".to_string(), "v1".to_string())].into();
        let v2: BTreeMap<_, _> = [("version".to_string(), "v2".to_string())].into();
        assert!(subset_matches(&v1, &labels));
        assert!(!subset_matches(&v2, &labels));
        assert!(subset_matches(&BTreeMap::new(), &labels));
    }
}
