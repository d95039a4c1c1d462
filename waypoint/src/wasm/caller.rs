//! `dispatch_http_call` from plugins to mesh services, through the waypoint's clusters
//! (pools, load balancing, the mesh connector) as its own traffic goes.
//!
//! The upstream a plugin names is read as Envoy's cluster name
//! `outbound|<port>|<subset>|<host>` (what Istio plugins pass), or as `<host>:<port>` /
//! `<host>` (port 80); the host is a service hostname of the current config.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use meshwork_model::client::ConfigHandle;
use meshwork_model::pb::config as pb;
use meshwork_wasm::host::{CallRequest, CallResponse, HttpCaller};

use crate::upstream::cluster::Clusters;
use crate::upstream::forward;

/// Largest answer body handed back to a plugin.
const MAX_CALL_BODY: usize = 1 << 20;

/// Sends plugins' calls to mesh services.
pub struct MeshCaller {
    pub clusters: Arc<Clusters>,
    pub config: ConfigHandle,
}

/// (destination, port) of a plugin's upstream name.
pub fn parse_upstream(name: &str) -> Option<(pb::Destination, u16)> {
    if let Some(rest) = name.strip_prefix("outbound|") {
        let mut it = rest.splitn(3, '|');
        let port: u16 = it.next()?.parse().ok()?;
        let subset = it.next()?.to_string();
        let host = it.next()?.to_string();
        return (!host.is_empty()).then_some((
            pb::Destination {
                host,
                subset,
                port: 0,
            },
            port,
        ));
    }
    let (host, port) = match name.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (name, 80),
    };
    (!host.is_empty()).then(|| {
        (
            pb::Destination {
                host: host.to_string(),
                subset: String::new(),
                port: 0,
            },
            port,
        )
    })
}

/// The call as an HTTP request's head.
fn head_of(req: &CallRequest) -> Result<http::request::Parts, String> {
    let mut b = Request::builder();
    let (mut method, mut path, mut authority) = (Method::GET, "/".to_string(), None);
    for (k, v) in &req.headers {
        match k.as_str() {
            ":method" => method = Method::from_bytes(v.as_bytes()).map_err(|e| e.to_string())?,
            ":path" => path = v.clone(),
            ":authority" => authority = Some(v.clone()),
            k if k.starts_with(':') => {}
            k => {
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
                let value = HeaderValue::from_str(v).map_err(|e| e.to_string())?;
                b = b.header(name, value);
            }
        }
    }
    if let Some(a) = authority {
        b = b.header(http::header::HOST, a);
    }
    let (parts, ()) = b
        .method(method)
        .uri(path)
        .body(())
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(parts)
}

impl HttpCaller for MeshCaller {
    /// A service of the current config (Envoy: a cluster it has).
    fn knows(&self, upstream: &str) -> bool {
        parse_upstream(upstream).is_some_and(|(dest, _)| {
            self.config
                .snapshot()
                .service_by_host(&dest.host, "")
                .is_some()
        })
    }

    fn call(
        &self,
        req: CallRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CallResponse, String>> + Send + 'static>> {
        let clusters = self.clusters.clone();
        let snap = self.config.snapshot();
        Box::pin(async move {
            let (dest, port) = parse_upstream(&req.upstream)
                .ok_or_else(|| format!("upstream {:?}: not a cluster name", req.upstream))?;
            let parts = head_of(&req)?;
            let resp = forward::call(
                &clusters,
                &snap,
                &dest,
                port,
                &parts,
                Bytes::from(req.body),
                MAX_CALL_BODY,
            )
            .await?;
            let mut headers = vec![(":status".to_string(), resp.status().as_str().to_string())];
            for (k, v) in resp.headers() {
                headers.push((
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                ));
            }
            Ok(CallResponse {
                headers,
                body: resp.into_body().to_vec(),
                trailers: Vec::new(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names() {
        let (d, p) = parse_upstream("outbound|8080|v1|check.prod.svc.cluster.local").unwrap();
        assert_eq!(
            (d.host.as_str(), d.subset.as_str(), p),
            ("check.prod.svc.cluster.local", "v1", 8080)
        );
        let (d, p) = parse_upstream("check.prod.svc.cluster.local:81").unwrap();
        assert_eq!((d.host.as_str(), p), ("check.prod.svc.cluster.local", 81));
        assert_eq!(parse_upstream("check").unwrap().1, 80);
        assert!(parse_upstream("outbound|x||h").is_none());
        assert!(parse_upstream("outbound|80||").is_none());
        assert!(parse_upstream("").is_none());
    }

    #[test]
    fn call_head() {
        let req = CallRequest {
            upstream: "x".into(),
            headers: vec![
                (":method".into(), "POST".into()),
                (":path".into(), "/check?a=1".into()),
                (":authority".into(), "check.prod".into()),
                ("x-a".into(), "1".into()),
            ],
            body: vec![],
            trailers: vec![],
            timeout: std::time::Duration::ZERO,
        };
        let p = head_of(&req).unwrap();
        assert_eq!(p.method, Method::POST);
        assert_eq!(p.uri, "/check?a=1");
        assert_eq!(p.headers["host"], "check.prod");
        assert_eq!(p.headers["x-a"], "1");
    }
}
