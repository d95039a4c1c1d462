//! One JSON line per request.

use meshwork_runtime::sync::LockExt;
use std::sync::{Arc, Mutex};

use meshwork_runtime::log::LineSink;

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Entry {
    pub start_time: String,
    pub method: String,
    /// The path and query after normalisation: the one authorized, routed and forwarded
    /// (before a route's rewrite), as Istio's `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`.
    pub path: String,
    /// The path and query as received, only when normalisation changed it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub original_path: String,
    pub protocol: String,
    pub response_code: u16,
    pub response_flags: String,
    pub response_code_details: String,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_host: String,
    pub upstream_cluster: String,
    pub route_name: String,
    pub authority: String,
    pub downstream_remote_address: String,
    pub source_principal: String,
    pub request_id: String,
    pub user_agent: String,
    pub attempts: u32,
    pub authz_policy: String,
}

/// Where access log lines go.
#[derive(Clone)]
pub enum AccessLog {
    Off,
    /// Queued to a writer thread (stdout in the binary): a slow reader never holds up a
    /// request.
    Sink(LineSink),
    /// Collected in memory (tests, admin).
    Memory(Arc<Mutex<Vec<String>>>),
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccessLog::Off => "Off",
            AccessLog::Sink(_) => "Sink",
            AccessLog::Memory(_) => "Memory",
        })
    }
}

impl AccessLog {
    pub fn enabled(&self) -> bool {
        !matches!(self, AccessLog::Off)
    }

    pub fn write(&self, e: &Entry) {
        if !self.enabled() {
            return;
        }
        let line = match serde_json::to_string(e) {
            Ok(l) => l,
            Err(_) => return,
        };
        match self {
            AccessLog::Off => {}
            AccessLog::Sink(s) => s.line(line),
            AccessLog::Memory(v) => v.lock_or_recover().push(line),
        }
    }
}

/// A log timestamp: seconds since the epoch with milliseconds.
pub fn humantime(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines() {
        let mem = Arc::new(Mutex::new(Vec::new()));
        let log = AccessLog::Memory(mem.clone());
        log.write(&Entry {
            method: "GET".into(),
            response_code: 200,
            response_flags: "-".into(),
            ..Default::default()
        });
        let lines = mem.lock().unwrap();
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["method"], "GET");
        assert_eq!(v["response_code"], 200);
    }
}
