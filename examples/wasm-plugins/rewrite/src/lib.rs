//! Rewrites the request before it goes upstream and marks the response.
//! pluginConfig: `{"set": {"x-added": "1"}, "remove": ["x-drop"],
//! "prefix": {"from": "/old/", "to": "/new/"}, "response_header": ["x-rewritten", "yes"]}`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Deserialize, Default)]
struct Prefix {
    from: String,
    to: String,
}

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    prefix: Option<Prefix>,
    #[serde(default)]
    response_header: Option<(String, String)>,
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
        if bytes.is_empty() {
            return true;
        }
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(c) => {
                self.config = Rc::new(c);
                true
            }
            Err(e) => {
                log::error!("rewrite: pluginConfig: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Rewrite {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Rewrite {
    config: Rc<Config>,
}

impl Context for Rewrite {}

impl HttpContext for Rewrite {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        for (k, v) in &self.config.set {
            self.set_http_request_header(k, Some(v));
        }
        for (k, v) in &self.config.add {
            self.add_http_request_header(k, v);
        }
        for k in &self.config.remove {
            self.set_http_request_header(k, None);
        }
        if let Some(p) = &self.config.prefix {
            if let Some(path) = self.get_http_request_header(":path") {
                if let Some(rest) = path.strip_prefix(&p.from) {
                    let new = format!("{}{}", p.to, rest);
                    self.set_http_request_header(":path", Some(&new));
                }
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if let Some((k, v)) = &self.config.response_header {
            self.set_http_response_header(k, Some(v));
        }
        Action::Continue
    }
}
