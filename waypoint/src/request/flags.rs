//! Envoy response flags, as Istio reports them in metrics and access logs.

/// No flag.
pub const NONE: &str = "-";
/// Upstream overflow: a connection-pool limit (circuit breaker) was hit.
pub const UPSTREAM_OVERFLOW: &str = "UO";
/// Upstream request timeout.
pub const UPSTREAM_TIMEOUT: &str = "UT";
/// Upstream connection failure.
pub const UPSTREAM_CONNECT_FAILURE: &str = "UF";
/// Upstream connection termination (reset before a response).
pub const UPSTREAM_RESET: &str = "UC";
/// No healthy upstream host.
pub const NO_HEALTHY_UPSTREAM: &str = "UH";
/// No route configured, or the destination service has no cluster.
pub const NO_ROUTE: &str = "NR";
/// Upstream retry limit exceeded.
pub const RETRY_LIMIT: &str = "URX";
/// Fault injection: delay.
pub const DELAY_INJECTED: &str = "DI";
/// Fault injection: abort.
pub const FAULT_INJECTED: &str = "FI";
/// Unauthorized by an external (CUSTOM) authorization provider.
pub const UNAUTHORIZED_EXTERNAL: &str = "UAEX";
/// Downstream protocol error.
pub const DOWNSTREAM_PROTOCOL_ERROR: &str = "DPE";
/// Stream idle timeout (the downstream sent no request body for the idle timeout).
pub const STREAM_IDLE_TIMEOUT: &str = "SI";

/// Several flags joined with `,` like Envoy prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Flags(Vec<&'static str>);

impl Flags {
    pub fn add(&mut self, flag: &'static str) {
        if !self.0.contains(&flag) {
            self.0.push(flag);
        }
    }

    pub fn contains(&self, flag: &str) -> bool {
        self.0.contains(&flag)
    }

    pub fn render(&self) -> String {
        if self.0.is_empty() {
            NONE.to_string()
        } else {
            self.0.join(",")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render() {
        let mut f = Flags::default();
        assert_eq!(f.render(), "-");
        f.add(DELAY_INJECTED);
        f.add(UPSTREAM_TIMEOUT);
        f.add(DELAY_INJECTED);
        assert_eq!(f.render(), "DI,UT");
        assert!(f.contains("UT"));
    }
}
