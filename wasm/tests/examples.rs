//! The example plugins (built from examples/wasm-plugins with the public proxy-wasm SDK)
//! run through the host: local replies, rewrites, call-outs, traps and limits.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshwork_wasm::examples;
use meshwork_wasm::host::{
    CallRequest, CallResponse, HeaderMap, Host, HostContext, HttpCaller, InstanceError, Limits,
    Plugin, PluginError, PluginSpec, Verdict,
};

fn spec(name: &str, config: &str) -> PluginSpec {
    PluginSpec {
        name: format!("test/{name}"),
        root_id: name.into(),
        vm_id: name.into(),
        plugin_config: config.as_bytes().to_vec(),
        workers: 2,
        ..Default::default()
    }
}

fn load(name: &str, config: &str, cx: HostContext) -> Result<Plugin, PluginError> {
    load_with(spec(name, config), name, cx)
}

fn load_with(spec: PluginSpec, file: &str, cx: HostContext) -> Result<Plugin, PluginError> {
    let bytes = std::fs::read(examples::plugin(file)).unwrap();
    Plugin::load(&Host::shared().unwrap(), spec, &bytes, cx)
}

fn req(path: &str, extra: &[(&str, &str)]) -> HeaderMap {
    let mut m: HeaderMap = vec![
        (":authority".into(), "echo.shop".into()),
        (":path".into(), path.into()),
        (":method".into(), "GET".into()),
        (":scheme".into(), "http".into()),
    ];
    for (k, v) in extra {
        m.push((k.to_string(), v.to_string()));
    }
    m
}

fn get<'a>(m: &'a HeaderMap, k: &str) -> Option<&'a str> {
    m.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn auth_header_answers_401_unless_the_header_matches() {
    let cx = HostContext::default();
    let metrics = cx.metrics.clone();
    let p = load(
        "auth_header",
        r#"{"header":"x-api-key","values":["s3cret"]}"#,
        cx,
    )
    .unwrap();

    let mut s = p.stream(Default::default()).unwrap();
    match s.request_headers(req("/", &[]), true).await.unwrap() {
        Verdict::Respond(l) => {
            assert_eq!(l.status, 401);
            assert_eq!(l.body, b"unauthorized\n");
            assert!(l
                .headers
                .contains(&("www-authenticate".into(), "ApiKey".into())));
        }
        v => panic!("{v:?}"),
    }
    drop(s);
    let mut s = p.stream(Default::default()).unwrap();
    let wrong = req("/", &[("x-api-key", "nope")]);
    assert!(matches!(
        s.request_headers(wrong, true).await.unwrap(),
        Verdict::Respond(_)
    ));
    let mut s = p.stream(Default::default()).unwrap();
    let right = req("/", &[("x-api-key", "s3cret")]);
    let Verdict::Continue(m) = s.request_headers(right.clone(), true).await.unwrap() else {
        panic!("denied")
    };
    assert_eq!(m, right);
    s.finish();

    // The plugin's counter, one series over both instances.
    let text = metrics.render();
    assert!(text.contains("wasm_auth_header_denied_total 2\n"), "{text}");
}

#[tokio::test]
async fn a_plugin_refusing_its_config_fails_to_load() {
    let err = load("auth_header", r#"{"values":[]}"#, HostContext::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("test/auth_header"), "{text}");
    assert!(text.contains("proxy_on_configure"), "{text}");
}

#[tokio::test]
async fn rewrite_changes_headers_path_and_response() {
    let conf = r#"{"set":{"x-added":"1"},"add":{"x-multi":"b"},"remove":["x-drop"],
        "prefix":{"from":"/old/","to":"/new/"},"response_header":["x-rewritten","yes"]}"#;
    let p = load("rewrite", conf, HostContext::default()).unwrap();
    let mut s = p.stream(Default::default()).unwrap();
    let input = req(
        "/old/a?q=1",
        &[("x-drop", "1"), ("x-multi", "a"), ("x-added", "0")],
    );
    let Verdict::Continue(m) = s.request_headers(input, true).await.unwrap() else {
        panic!()
    };
    assert_eq!(get(&m, ":path"), Some("/new/a?q=1"));
    assert_eq!(get(&m, "x-added"), Some("1"));
    assert_eq!(get(&m, "x-drop"), None);
    let multi: Vec<&str> = m
        .iter()
        .filter(|(k, _)| k == "x-multi")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(multi, ["a", "b"]);
    let resp: HeaderMap = vec![(":status".into(), "200".into())];
    let Verdict::Continue(r) = s.response_headers(resp, false).await.unwrap() else {
        panic!()
    };
    assert_eq!(get(&r, "x-rewritten"), Some("yes"));
    let Verdict::Continue(b) = s.response_body(b"body".to_vec(), true).await.unwrap() else {
        panic!()
    };
    assert_eq!(b, b"body");
}

/// Answers every call with `status` and records the requests.
struct Recorder {
    status: Option<u16>,
    seen: Mutex<Vec<CallRequest>>,
    delay: Duration,
}

impl HttpCaller for Recorder {
    fn call(
        &self,
        req: CallRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CallResponse, String>> + Send + 'static>> {
        self.seen.lock().unwrap().push(req);
        let (status, delay) = (self.status, self.delay);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            match status {
                Some(s) => Ok(CallResponse {
                    headers: vec![(":status".into(), s.to_string())],
                    body: b"allowed by check\n".to_vec(),
                    trailers: vec![],
                }),
                None => Err("connection refused".into()),
            }
        })
    }
}

fn callout(status: Option<u16>) -> (Plugin, Arc<Recorder>) {
    let rec = Arc::new(Recorder {
        status,
        seen: Mutex::default(),
        delay: Duration::from_millis(20),
    });
    let cx = HostContext {
        caller: rec.clone(),
        ..Default::default()
    };
    let conf = r#"{"cluster":"outbound|80||check.shop.svc.cluster.local",
        "authority":"check.shop.svc.cluster.local","path":"/check","timeout_ms":1000}"#;
    (load("callout", conf, cx).unwrap(), rec)
}

#[tokio::test]
async fn callout_pauses_until_the_call_is_answered() {
    let (p, rec) = callout(Some(200));
    let mut s = p.stream(Default::default()).unwrap();
    let Verdict::Continue(m) = s.request_headers(req("/orders", &[]), true).await.unwrap() else {
        panic!("denied")
    };
    assert_eq!(get(&m, "x-callout-status"), Some("200"));
    assert_eq!(get(&m, "x-callout-body"), Some("allowed by check"));
    let seen = rec.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].upstream,
        "outbound|80||check.shop.svc.cluster.local"
    );
    assert_eq!(get(&seen[0].headers, ":path"), Some("/check"));
    assert_eq!(get(&seen[0].headers, ":method"), Some("GET"));
    assert_eq!(seen[0].timeout, Duration::from_secs(1));
}

#[tokio::test]
async fn callout_denies_on_a_bad_or_failed_answer() {
    for status in [Some(500), None] {
        let (p, _) = callout(status);
        let mut s = p.stream(Default::default()).unwrap();
        match s.request_headers(req("/", &[]), true).await.unwrap() {
            Verdict::Respond(l) => {
                assert_eq!(l.status, 403, "{status:?}");
                assert_eq!(l.body, b"denied by callout\n");
            }
            v => panic!("{status:?}: {v:?}"),
        }
    }
}

/// Knows no upstream: every call is refused when it is made.
struct KnowsNothing;

impl HttpCaller for KnowsNothing {
    fn knows(&self, _: &str) -> bool {
        false
    }

    fn call(
        &self,
        _: CallRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CallResponse, String>> + Send + 'static>> {
        panic!("a call to an unknown upstream must not be sent")
    }
}

#[tokio::test]
async fn a_call_to_an_unknown_upstream_is_refused_at_once() {
    let cx = HostContext {
        caller: Arc::new(KnowsNothing),
        ..Default::default()
    };
    let conf = r#"{"cluster":"outbound|80||nowhere.shop.svc.cluster.local","authority":"x"}"#;
    let p = load("callout", conf, cx).unwrap();
    let mut s = p.stream(Default::default()).unwrap();
    // The plugin sees dispatch_http_call fail (Envoy: no such cluster) and answers 503.
    match s.request_headers(req("/", &[]), true).await.unwrap() {
        Verdict::Respond(l) => {
            assert_eq!(l.status, 503);
            assert_eq!(l.body, b"callout unavailable\n");
        }
        v => panic!("{v:?}"),
    }
}

fn trap_plugin(limits: Limits) -> Plugin {
    let mut sp = spec("trap", "");
    sp.workers = 1;
    sp.limits = limits;
    load_with(sp, "trap", HostContext::default()).unwrap()
}

async fn count(p: &Plugin) -> String {
    let mut s = p.stream(Default::default()).unwrap();
    let Verdict::Continue(m) = s.request_headers(req("/", &[]), true).await.unwrap() else {
        panic!()
    };
    get(&m, "x-trap-count").unwrap().to_string()
}

#[tokio::test]
async fn a_trap_fails_its_stream_and_the_instance_is_replaced() {
    let p = trap_plugin(Limits::default());
    assert_eq!(count(&p).await, "1");
    assert_eq!(count(&p).await, "2");
    // A stream started before the trap, on the same instance.
    let mut before = p.stream(Default::default()).unwrap();

    let mut s = p.stream(Default::default()).unwrap();
    let err = s
        .request_headers(req("/", &[("x-trap", "panic")]), true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            InstanceError::Trap {
                callback: "proxy_on_request_headers",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert_eq!(p.replaced(), 1);

    // The older stream's context died with the instance: it fails too, and says why.
    let e = before
        .request_headers(req("/", &[]), true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("replaced"), "{e}");
    // A fresh instance: its count starts again.
    assert_eq!(count(&p).await, "1");
}

#[tokio::test]
async fn a_spinning_plugin_is_stopped_by_its_cpu_budget() {
    let budget = Duration::from_millis(50);
    let p = trap_plugin(Limits {
        callback_budget: budget,
        ..Limits::default()
    });
    let mut s = p.stream(Default::default()).unwrap();
    let t = Instant::now();
    let err = s
        .request_headers(req("/", &[("x-trap", "loop")]), true)
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert!(err.to_string().contains("CPU budget"), "{err}");
    assert!(took >= budget && took < budget * 10, "{took:?}");
    assert_eq!(count(&p).await, "1");
}

#[tokio::test]
async fn a_plugin_cannot_grow_past_its_memory_limit() {
    let p = trap_plugin(Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    });
    let mut s = p.stream(Default::default()).unwrap();
    let err = s
        .request_headers(req("/", &[("x-trap", "grow")]), true)
        .await
        .unwrap_err();
    assert!(matches!(err, InstanceError::Trap { .. }), "{err}");
    assert_eq!(p.replaced(), 1);
    assert_eq!(count(&p).await, "1");
}

#[tokio::test]
async fn modules_without_a_proxy_wasm_abi_are_refused() {
    // The smallest valid module: no exports at all.
    let empty = b"\0asm\x01\0\0\0";
    let err = Plugin::load(
        &Host::shared().unwrap(),
        spec("empty", ""),
        empty,
        HostContext::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("proxy_abi_version_0_2_1"), "{err}");
    let err = Plugin::load(
        &Host::shared().unwrap(),
        spec("junk", ""),
        b"not wasm",
        HostContext::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("test/junk"), "{err}");
}
