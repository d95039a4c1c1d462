//! `meshwork_log_lines_dropped_total`: log lines the process dropped because its log reader
//! fell too far behind (see `meshwork_runtime::log`), read at each scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

#[derive(Debug)]
struct LogDrops;

impl Collector for LogDrops {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = ConstCounter::new(meshwork_runtime::log::dropped_lines());
        let m = encoder.encode_descriptor(
            "meshwork_log_lines_dropped",
            "Log lines dropped because the reader of stdout/stderr fell behind",
            None,
            c.metric_type(),
        )?;
        c.encode(m)
    }
}

/// Adds `meshwork_log_lines_dropped_total` to `registry`.
pub fn register_log_drops(registry: &mut Registry) {
    registry.register_collector(Box::new(LogDrops));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_as_a_counter() {
        let mut r = Registry::default();
        register_log_drops(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("# TYPE meshwork_log_lines_dropped counter"),
            "{text}"
        );
        assert!(
            text.contains("\nmeshwork_log_lines_dropped_total 0\n"),
            "{text}"
        );
    }
}
