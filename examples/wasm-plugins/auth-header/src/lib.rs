//! Answers 401 unless the request carries the configured header with one of the configured
//! values. pluginConfig: `{"header": "x-api-key", "values": ["secret"]}`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use serde::Deserialize;
use std::rc::Rc;

#[derive(Deserialize, Default)]
struct Config {
    header: String,
    #[serde(default)]
    values: Vec<String>,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: Rc::new(Config::default()), denied: 0 })
    });
}}

struct Root {
    config: Rc<Config>,
    denied: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            log::error!("auth-header: no pluginConfig");
            return false;
        };
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(c) if !c.header.is_empty() => {
                self.config = Rc::new(c);
                self.denied = proxy_wasm::hostcalls::define_metric(
                    MetricType::Counter,
                    "wasm_auth_header_denied_total",
                )
                .unwrap_or(0);
                true
            }
            Ok(_) => {
                log::error!("auth-header: pluginConfig.header is empty");
                false
            }
            Err(e) => {
                log::error!("auth-header: pluginConfig: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Check {
            config: self.config.clone(),
            denied: self.denied,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Check {
    config: Rc<Config>,
    denied: u32,
}

impl Context for Check {}

impl HttpContext for Check {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let got = self.get_http_request_header(&self.config.header);
        if got.is_some_and(|v| self.config.values.iter().any(|ok| *ok == v)) {
            return Action::Continue;
        }
        let _ = proxy_wasm::hostcalls::increment_metric(self.denied, 1);
        log::info!(
            "auth-header: denied, header {} missing or wrong",
            self.config.header
        );
        self.send_http_response(
            401,
            vec![
                ("www-authenticate", "ApiKey"),
                ("x-denied-by", "auth-header"),
            ],
            Some(b"unauthorized\n"),
        );
        Action::Pause
    }
}
