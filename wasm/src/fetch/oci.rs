//! Pulling a Wasm module from an OCI registry (the distribution API), as Istio's image
//! fetcher (`pkg/wasm/imagefetcher.go`) does:
//!
//! 1. `GET /v2/<repo>/manifests/<tag|digest>`; a `401` with `WWW-Authenticate: Bearer
//!    realm=..,service=..,scope=..` sends us to the token endpoint (with the pull
//!    credentials, when the plugin has some) and the call is repeated with the token; a
//!    `Basic` challenge is answered with the pull credentials directly.
//! 2. The module is taken from the manifest's layers, in Istio's order: a Docker image (last
//!    layer `tar+gzip` holding `plugin.wasm`), an OCI image (same, OCI media type), or the
//!    Wasm artifact "compat" variant (two layers, one of media type
//!    `application/vnd.module.wasm.content.layer.v1+wasm`: the raw module).
//! 3. Every blob is checked against the digest its descriptor names; a reference by digest
//!    (`@sha256:..`) is checked against the manifest's own digest.
//!
//! Registries on loopback, `localhost` or private (RFC 1918) addresses are spoken to in
//! plain HTTP, as go-containerregistry does; others over HTTPS. A token realm on a
//! private/loopback address is refused unless it is the registry's own host (Istio refuses
//! such realms: a registry must not make the proxy call into its network).

use std::io::Read;
use std::net::IpAddr;

use http::header::{HeaderName, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{StatusCode, Uri};
use serde::Deserialize;

use super::http::{Client, Response};
use super::sha256_hex;

pub const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The file Istio takes from an image's last layer.
pub const PLUGIN_FILE: &str = "plugin.wasm";

/// `registry/repository[:tag|@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    /// A tag, or `sha256:<hex>`.
    pub reference: String,
}

impl Reference {
    /// Reads an image reference as go-containerregistry does: no registry means Docker
    /// Hub (`library/` for one-part names), no tag means `latest`.
    pub fn parse(s: &str) -> Result<Reference, String> {
        let s = s.strip_prefix("oci://").unwrap_or(s);
        if s.is_empty() {
            return Err("empty image reference".into());
        }
        let (name, reference) = if let Some((n, d)) = s.split_once('@') {
            if !d.starts_with("sha256:")
                || d.len() != 71
                || !d[7..]
                    .bytes()
                    .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            {
                return Err(format!("bad digest {d:?}"));
            }
            (n, d.to_string())
        } else {
            match s.rsplit_once(':') {
                Some((n, t)) if !t.contains('/') => (n, t.to_string()),
                _ => (s, "latest".to_string()),
            }
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ if !name.contains('/') => ("index.docker.io".to_string(), format!("library/{name}")),
            _ => ("index.docker.io".to_string(), name.to_string()),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !repo_ok {
            return Err(format!("bad repository name {repository:?}"));
        }
        let registry = if registry == "docker.io" {
            "index.docker.io".to_string()
        } else {
            registry
        };
        Ok(Reference {
            registry,
            repository,
            reference,
        })
    }

    pub fn is_digest(&self) -> bool {
        self.reference.starts_with("sha256:")
    }

    /// `http` for loopback, `localhost` and private registries, else `https`.
    pub fn scheme(&self) -> &'static str {
        let host = host_of(&self.registry);
        let plain = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| is_private(&ip));
        if plain {
            "http"
        } else {
            "https"
        }
    }

    fn url(&self, path: &str) -> Result<Uri, String> {
        format!(
            "{}://{}/v2/{}/{path}",
            self.scheme(),
            self.registry,
            self.repository
        )
        .parse()
        .map_err(|e| format!("registry url: {e}"))
    }
}

fn host_of(authority: &str) -> &str {
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority)
}

fn is_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// What a pull produced: the module and the digest of the manifest it came from.
#[derive(Debug)]
pub struct Pulled {
    pub module: Vec<u8>,
    /// Lower-case hex, without `sha256:` (Istio compares a WasmPlugin's `sha256` to this).
    pub manifest_digest: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// A registry session: the reference, the credentials, and the token once obtained.
struct Session<'a> {
    client: &'a Client,
    reference: &'a Reference,
    pull_auth: Option<&'a str>,
    authorization: Option<String>,
}

impl Session<'_> {
    async fn get(&mut self, url: &Uri, accept: &str) -> Result<Response, String> {
        let headers = |auth: &Option<String>| {
            let mut h: Vec<(HeaderName, String)> = vec![(ACCEPT, accept.to_string())];
            if let Some(a) = auth {
                h.push((AUTHORIZATION, a.clone()));
            }
            h
        };
        let resp = self.client.get(url, &headers(&self.authorization)).await?;
        if resp.status != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.authorization = Some(self.authenticate(&challenge).await?);
        let resp = self.client.get(url, &headers(&self.authorization)).await?;
        if resp.status == StatusCode::UNAUTHORIZED {
            return Err(format!(
                "registry {} refused the credentials (401)",
                self.reference.registry
            ));
        }
        Ok(resp)
    }

    /// The `Authorization` value that answers `challenge`.
    async fn authenticate(&self, challenge: &str) -> Result<String, String> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return self
                .pull_auth
                .map(str::to_string)
                .ok_or_else(|| "registry asks for credentials and the plugin has none".into());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(format!("unsupported registry challenge {scheme:?}"));
        }
        if let Some(a) = self.pull_auth.filter(|a| a.starts_with("Bearer ")) {
            return Ok(a.to_string());
        }
        let params = challenge_params(params);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or("Bearer challenge without a realm")?;
        let realm_uri: Uri = realm
            .parse()
            .map_err(|e| format!("token realm {realm:?}: {e}"))?;
        match realm_uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(format!("token realm {realm:?}: scheme not allowed")),
        }
        let realm_host = realm_uri.host().unwrap_or_default();
        let realm_host = realm_host.trim_start_matches('[').trim_end_matches(']');
        if realm_host.parse::<IpAddr>().is_ok_and(|ip| is_private(&ip))
            && realm_host != host_of(&self.reference.registry)
        {
            return Err(format!(
                "token realm {realm:?} is a private address other than the registry's"
            ));
        }
        let mut query = Vec::new();
        for key in ["service", "scope"] {
            if let Some((_, v)) = params.iter().find(|(k, _)| k == key) {
                query.push(format!("{key}={}", encode(v)));
            }
        }
        if !params.iter().any(|(k, _)| k == "scope") {
            query.push(format!(
                "scope={}",
                encode(&format!("repository:{}:pull", self.reference.repository))
            ));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url: Uri = format!("{realm}{sep}{}", query.join("&"))
            .parse()
            .map_err(|e| format!("token url: {e}"))?;
        let mut headers = Vec::new();
        if let Some(a) = self.pull_auth.filter(|a| a.starts_with("Basic ")) {
            headers.push((AUTHORIZATION, a.to_string()));
        }
        let resp = self.client.get(&url, &headers).await?;
        if !resp.status.is_success() {
            return Err(format!("token endpoint {realm} answered {}", resp.status));
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&resp.body)
            .map_err(|e| format!("token endpoint {realm}: {e}"))?;
        let token = t
            .token
            .or(t.access_token)
            .ok_or_else(|| format!("token endpoint {realm}: no token"))?;
        Ok(format!("Bearer {token}"))
    }

    async fn blob(&mut self, digest: &str) -> Result<Vec<u8>, String> {
        let url = self.reference.url(&format!("blobs/{digest}"))?;
        let resp = self.get(&url, "*/*").await?;
        if !resp.status.is_success() {
            return Err(format!("blob {digest}: {}", resp.status));
        }
        let actual = format!("sha256:{}", sha256_hex(&resp.body));
        if actual != digest {
            return Err(format!("blob {digest}: content has digest {actual}"));
        }
        Ok(resp.body.to_vec())
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `k="v",k2=v2` parameters of a challenge.
fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let (v, after) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or_default())
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push((k.trim().to_ascii_lowercase(), v.to_string()));
        rest = after.trim_start_matches([',', ' ']);
    }
    out
}

const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Pulls the module `reference` names.
pub async fn pull(
    client: &Client,
    reference: &Reference,
    pull_auth: Option<&str>,
) -> Result<Pulled, String> {
    let mut s = Session {
        client,
        reference,
        pull_auth,
        authorization: None,
    };
    let mut target = reference.reference.clone();
    // An index (multi-platform image): its first manifest.
    for _ in 0..2 {
        let url = reference.url(&format!("manifests/{target}"))?;
        let resp = s.get(&url, ACCEPT_MANIFESTS).await?;
        if !resp.status.is_success() {
            return Err(format!(
                "manifest {}/{}:{target}: {}",
                reference.registry, reference.repository, resp.status
            ));
        }
        let digest = sha256_hex(&resp.body);
        if target.starts_with("sha256:") && target[7..] != digest {
            return Err(format!(
                "manifest {target}: content has digest sha256:{digest}"
            ));
        }
        let m: Manifest =
            serde_json::from_slice(&resp.body).map_err(|e| format!("manifest: {e}"))?;
        let content_type = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let media_type = if m.media_type.is_empty() {
            content_type.to_string()
        } else {
            m.media_type.clone()
        };
        if media_type == OCI_INDEX || media_type == DOCKER_LIST || !m.manifests.is_empty() {
            let first = m.manifests.first().ok_or("image index without manifests")?;
            target = first.digest.clone();
            continue;
        }
        let module = extract(&mut s, &media_type, &m.layers).await?;
        return Ok(Pulled {
            module,
            manifest_digest: digest,
        });
    }
    Err("image index nested in an image index".into())
}

async fn extract(
    s: &mut Session<'_>,
    media_type: &str,
    layers: &[Descriptor],
) -> Result<Vec<u8>, String> {
    let last = layers.last().ok_or("image without layers")?;
    if media_type == DOCKER_MANIFEST {
        if last.media_type != DOCKER_LAYER {
            return Err(format!(
                "Docker image: last layer is {} (expect {DOCKER_LAYER})",
                last.media_type
            ));
        }
        return plugin_from_tar_gz(&s.blob(&last.digest).await?);
    }
    if last.media_type == OCI_LAYER {
        return plugin_from_tar_gz(&s.blob(&last.digest).await?);
    }
    if layers.len() != 2 {
        return Err(format!(
            "not a Wasm image: last layer is {}, and {} layers (the compat variant has 2)",
            last.media_type,
            layers.len()
        ));
    }
    let wasm = layers
        .iter()
        .find(|l| l.media_type == WASM_LAYER)
        .ok_or_else(|| format!("could not find the layer of type {WASM_LAYER}"))?;
    s.blob(&wasm.digest).await
}

/// `plugin.wasm` from a gzip-compressed tar layer.
pub fn plugin_from_tar_gz(layer: &[u8]) -> Result<Vec<u8>, String> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(layer)
        .take(super::MAX_MODULE_BYTES as u64 * 2)
        .read_to_end(&mut tar)
        .map_err(|e| format!("layer is not tar.gz: {e}"))?;
    let mut off = 0;
    while off + 512 <= tar.len() {
        let h = &tar[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = |a: usize, b: usize| {
            let f = &h[a..b];
            let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let mut name = field(0, 100);
        let prefix = field(345, 500);
        if &h[257..262] == b"ustar" && !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        let size = usize::from_str_radix(field(124, 136).trim(), 8)
            .map_err(|_| format!("tar entry {name}: bad size"))?;
        let data = off + 512;
        let end = data.checked_add(size).filter(|&e| e <= tar.len());
        let Some(end) = end else {
            return Err(format!("tar entry {name}: truncated"));
        };
        let regular = matches!(h[156], 0 | b'0');
        if regular && name.trim_start_matches("./") == PLUGIN_FILE {
            return Ok(tar[data..end].to_vec());
        }
        off = data + size.div_ceil(512) * 512;
    }
    Err(format!("no {PLUGIN_FILE} in the layer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_read_as_go_containerregistry_does() {
        let r = Reference::parse("oci://ghcr.io/org/plugin:v1").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("ghcr.io", "org/plugin", "v1")
        );
        let r = Reference::parse("127.0.0.1:5000/p").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.reference.as_str()),
            ("127.0.0.1:5000", "latest")
        );
        assert_eq!(r.scheme(), "http");
        let r = Reference::parse("plugin").unwrap();
        assert_eq!(r.registry, "index.docker.io");
        assert_eq!(r.repository, "library/plugin");
        assert_eq!(r.scheme(), "https");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost:5000/a/b@{d}")).unwrap();
        assert!(r.is_digest());
        assert_eq!(r.scheme(), "http");
        assert!(Reference::parse("reg.io/UPPER:v1").is_err());
        assert!(Reference::parse("reg.io/a@sha256:xyz").is_err());
    }

    #[test]
    fn challenge_parameters() {
        let p = challenge_params(
            r#"realm="https://auth.io/token",service="registry.io",scope="repository:a/b:pull""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.io/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.io".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
    }
}
