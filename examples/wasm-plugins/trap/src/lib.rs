//! Misbehaves on request: header `x-trap: panic` traps (unreachable), `x-trap: loop` spins
//! forever (the host's CPU budget must stop it), `x-trap: grow` allocates until memory runs
//! out (the host's memory limit must stop it). Other requests pass with `x-trap-count` set to
//! how many requests this instance has seen, so a test can tell a fresh instance.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::Cell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { seen: Rc::new(Cell::new(0)) })
    });
}}

struct Root {
    seen: Rc<Cell<u64>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Trap {
            seen: self.seen.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Trap {
    seen: Rc<Cell<u64>>,
}

impl Context for Trap {}

#[inline(never)]
fn spin(mut x: u64) -> u64 {
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        if std::hint::black_box(x) == 0 && std::hint::black_box(false) {
            return x;
        }
    }
}

impl HttpContext for Trap {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        self.seen.set(self.seen.get() + 1);
        match self.get_http_request_header("x-trap").as_deref() {
            Some("panic") => panic!("trap plugin: asked to panic"),
            Some("loop") => {
                let x = spin(self.seen.get());
                self.set_http_request_header("x-never", Some(&x.to_string()));
            }
            Some("grow") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            _ => {
                let n = self.seen.get().to_string();
                self.set_http_request_header("x-trap-count", Some(&n));
            }
        }
        Action::Continue
    }
}
