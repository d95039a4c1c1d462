//! Calls out before letting a request through, as an external check or a mirror would: the
//! request's method and path are sent to `cluster` (a service the proxy can reach) and the
//! request waits for the answer. A 2xx lets it through with `x-callout-status` and
//! `x-callout-body` added; anything else is answered 403 here.
//! pluginConfig: `{"cluster": "outbound|80||check.default.svc.cluster.local",
//! "authority": "check.default.svc.cluster.local", "path": "/check", "timeout_ms": 2000}`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::rc::Rc;
use std::time::Duration;

#[derive(Deserialize, Default)]
struct Config {
    cluster: String,
    authority: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: Rc::new(Config::default()) })
    });
}}

struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(c) => {
                self.config = Rc::new(c);
                true
            }
            Err(e) => {
                log::error!("callout: pluginConfig: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Callout {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Callout {
    config: Rc<Config>,
}

impl Context for Callout {
    fn on_http_call_response(&mut self, _token: u32, _nh: usize, body_size: usize, _nt: usize) {
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        if status.starts_with('2') {
            let body = self
                .get_http_call_response_body(0, body_size.min(64))
                .unwrap_or_default();
            let body = String::from_utf8_lossy(&body)
                .trim()
                .replace(['\r', '\n'], " ");
            self.set_http_request_header("x-callout-status", Some(&status));
            self.set_http_request_header("x-callout-body", Some(&body));
            self.resume_http_request();
        } else {
            self.send_http_response(
                403,
                vec![("x-denied-by", "callout")],
                Some(b"denied by callout\n"),
            );
        }
    }
}

impl HttpContext for Callout {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let method = self.get_http_request_header(":method").unwrap_or_default();
        let path = match &self.config.path {
            Some(p) => p.clone(),
            None => self.get_http_request_header(":path").unwrap_or_default(),
        };
        let timeout = Duration::from_millis(self.config.timeout_ms.unwrap_or(5000));
        let headers = vec![
            (":method", method.as_str()),
            (":path", path.as_str()),
            (":authority", self.config.authority.as_str()),
            ("x-callout-from", "meshwork-example"),
        ];
        match self.dispatch_http_call(&self.config.cluster, headers, None, vec![], timeout) {
            Ok(_) => Action::Pause,
            Err(e) => {
                log::warn!("callout: dispatch to {} failed: {e:?}", self.config.cluster);
                self.send_http_response(503, vec![], Some(b"callout unavailable\n"));
                Action::Pause
            }
        }
    }
}
