//! Multi-document YAML parsing into typed objects, like `kubectl apply -f DIR`.
//!
//! Each YAML document (and each item of a `kind: List`) is parsed on its own, so one bad
//! document never hides the others. Per document the result is either a typed [`Object`]
//! or a list of [`ApiError`]s naming file, document, line, kind, namespace/name and field
//! path. Unknown fields are reported as warnings (with their path) and otherwise ignored.

use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::error::ApiError;
use crate::guard::{ignored_path, nested_deeper_than, MAX_NESTING};
use crate::networking::Raw;
use crate::object::{Kind, Object, ObjectKey, Spec};
use crate::validate::{self, escaped, NameRule};

/// The outcome of parsing one file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFile {
    pub path: PathBuf,
    pub documents: Vec<ParsedDocument>,
}

impl ParsedFile {
    /// Valid objects, in file order.
    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.documents.iter().filter_map(|d| d.result.as_ref().ok())
    }
    /// All errors, in file order.
    pub fn errors(&self) -> impl Iterator<Item = &ApiError> {
        self.documents
            .iter()
            .filter_map(|d| d.result.as_ref().err())
            .flatten()
    }
    /// All warnings, in file order.
    pub fn warnings(&self) -> impl Iterator<Item = &ApiError> {
        self.documents.iter().flat_map(|d| d.warnings.iter())
    }
}

/// One YAML document (or one item of a `List`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedDocument {
    /// 1-based document index in the file.
    pub index: usize,
    /// Item index when the document is a `kind: List`.
    pub item: Option<usize>,
    /// 1-based line of the document's first content line.
    pub line: usize,
    /// Identity of the resource when kind and name could be read, even if it is invalid.
    pub key: Option<ObjectKey>,
    /// The typed object, or at least one error.
    pub result: Result<Object, Vec<ApiError>>,
    pub warnings: Vec<ApiError>,
}

/// Splits `text` at `---` lines; returns (first content line, document text) for
/// documents that contain anything besides blanks and comments.
pub(crate) fn split_documents(text: &str) -> Vec<(usize, usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut first_content: Option<usize> = None;
    let mut index = 0;
    let mut flush = |current: &mut String, first: &mut Option<usize>| {
        index += 1;
        if let Some(line) = first.take() {
            docs.push((index, line, std::mem::take(current)));
        }
        current.clear();
    };
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let is_separator = line.starts_with("---")
            && line[3..]
                .chars()
                .next()
                .is_none_or(|c| c.is_whitespace() || c == '#');
        if is_separator || line.trim_end() == "..." {
            flush(&mut current, &mut first_content);
            continue;
        }
        let trimmed = line.trim();
        if first_content.is_none() {
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('%') {
                continue;
            }
            first_content = Some(lineno);
        }
        current.push_str(line);
        current.push('\n');
    }
    flush(&mut current, &mut first_content);
    docs
}

/// Parses a file that may hold several YAML documents. Namespaced resources without
/// `metadata.namespace` get `default_namespace`.
pub fn parse_file(path: &Path, text: &str, default_namespace: &str) -> ParsedFile {
    let mut documents = Vec::new();
    for (index, line, doc_text) in split_documents(text) {
        parse_document(
            path,
            index,
            line,
            &doc_text,
            default_namespace,
            &mut documents,
        );
    }
    ParsedFile {
        path: path.to_path_buf(),
        documents,
    }
}

/// Parses one YAML document (document `index`, starting at file line `line`) into `out`
/// (several entries for a `List`, none for an empty document).
pub(crate) fn parse_document(
    path: &Path,
    index: usize,
    line: usize,
    doc_text: &str,
    default_namespace: &str,
    out: &mut Vec<ParsedDocument>,
) {
    let ctx = DocCtx {
        file: path,
        index,
        line,
        default_namespace,
    };
    if nested_deeper_than(doc_text, MAX_NESTING) {
        out.push(ctx.invalid_yaml(
            line,
            format!("collections nested deeper than {MAX_NESTING} levels"),
        ));
        return;
    }
    match serde_yaml_ng::from_str::<Value>(doc_text) {
        Ok(Value::Null) => {}
        Ok(value) => parse_value(&ctx, value, None, out),
        Err(e) => {
            let err_line = e.location().map(|l| line + l.line() - 1).unwrap_or(line);
            out.push(ctx.invalid_yaml(err_line, e.to_string()));
        }
    }
}

struct DocCtx<'a> {
    file: &'a Path,
    index: usize,
    line: usize,
    default_namespace: &'a str,
}

#[derive(Default)]
struct Header {
    kind: String,
    api_version: String,
    namespace: String,
    name: String,
}

impl DocCtx<'_> {
    fn error_at(&self, line: usize, h: &Header, field: &str, message: String) -> ApiError {
        ApiError {
            file: self.file.to_path_buf(),
            document: self.index,
            line,
            kind: h.kind.clone(),
            namespace: h.namespace.clone(),
            name: h.name.clone(),
            field: field.to_string(),
            message,
        }
    }
    fn error(&self, h: &Header, field: &str, message: String) -> ApiError {
        self.error_at(self.line, h, field, message)
    }
    /// The whole document refused as invalid YAML (error at file line `line`); nothing of
    /// it, not even its kind or name, could be read.
    fn invalid_yaml(&self, line: usize, detail: String) -> ParsedDocument {
        ParsedDocument {
            index: self.index,
            item: None,
            line: self.line,
            key: None,
            result: Err(vec![self.error_at(
                line,
                &Header::default(),
                "",
                format!("invalid YAML: {detail}"),
            )]),
            warnings: Vec::new(),
        }
    }
}

fn str_at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    let mut v = value;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

fn parse_value(ctx: &DocCtx<'_>, value: Value, item: Option<usize>, out: &mut Vec<ParsedDocument>) {
    let prefix = item.map(|i| format!("items[{i}].")).unwrap_or_default();
    // Kind and apiVersion end up in messages as written: escaped, so a control or bidi
    // character in them cannot reach a log line (valid ones are unchanged).
    let mut header = Header {
        kind: escaped(str_at(&value, &["kind"]).unwrap_or_default()),
        api_version: escaped(str_at(&value, &["apiVersion"]).unwrap_or_default()),
        namespace: str_at(&value, &["metadata", "namespace"])
            .unwrap_or(ctx.default_namespace)
            .to_string(),
        name: str_at(&value, &["metadata", "name"])
            .unwrap_or_default()
            .to_string(),
    };
    let mut doc = ParsedDocument {
        index: ctx.index,
        item,
        line: ctx.line,
        key: None,
        result: Err(Vec::new()),
        warnings: Vec::new(),
    };
    if !value.is_mapping() {
        doc.result = Err(vec![ctx.error(
            &header,
            prefix.trim_end_matches('.'),
            "document is not a mapping (expected apiVersion, kind, metadata, spec)".into(),
        )]);
        out.push(doc);
        return;
    }
    if header.kind == "List" && item.is_none() {
        match value.get("items").map(|v| v.as_sequence()) {
            Some(Some(items)) => {
                for (i, it) in items.iter().enumerate() {
                    parse_value(ctx, it.clone(), Some(i), out);
                }
            }
            None => {}
            Some(None) => {
                doc.result = Err(vec![ctx.error(
                    &header,
                    "items",
                    "a List's items must be a sequence".into(),
                )]);
                out.push(doc);
            }
        }
        return;
    }
    let fail = |doc: &mut ParsedDocument, header: &Header, field: &str, msg: String| {
        doc.result = Err(vec![ctx.error(header, &format!("{prefix}{field}"), msg)]);
    };
    if header.kind.is_empty() {
        fail(&mut doc, &header, "kind", "missing kind".into());
        out.push(doc);
        return;
    }
    let Some(kind) = Kind::from_kind_str(&header.kind) else {
        let supported: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        let msg = format!(
            "unknown kind \"{}\" (apiVersion \"{}\"); supported kinds: {}",
            header.kind,
            header.api_version,
            supported.join(", ")
        );
        fail(&mut doc, &header, "kind", msg);
        out.push(doc);
        return;
    };
    if kind.is_cluster_scoped() {
        header.namespace.clear();
    }
    if !kind.api_versions().contains(&header.api_version.as_str()) {
        let msg = format!(
            "unsupported apiVersion \"{}\" for {} (accepted: {})",
            header.api_version,
            kind,
            kind.api_versions().join(", ")
        );
        fail(&mut doc, &header, "apiVersion", msg);
        out.push(doc);
        return;
    }
    if header.name.is_empty() {
        fail(&mut doc, &header, "metadata.name", "required".into());
        out.push(doc);
        return;
    }
    if let Err(msg) = NameRule::for_name(kind).check(&header.name) {
        header.name = escaped(&header.name);
        fail(&mut doc, &header, "metadata.name", msg);
        out.push(doc);
        return;
    }
    if !kind.is_cluster_scoped() {
        if let Err(msg) = NameRule::Dns1123Label.check(&header.namespace) {
            header.namespace = escaped(&header.namespace);
            fail(&mut doc, &header, "metadata.namespace", msg);
            out.push(doc);
            return;
        }
    }
    doc.key = Some(ObjectKey::new(
        kind,
        header.namespace.clone(),
        header.name.clone(),
    ));

    let mut ignored = Vec::new();
    let typed = build_object(kind, value, &header, &mut ignored);
    doc.warnings = ignored
        .into_iter()
        .map(|f| {
            ctx.error(
                &header,
                &format!("{prefix}{f}"),
                "unknown field (ignored)".into(),
            )
        })
        .collect();
    match typed {
        Err((field, msg)) => fail(&mut doc, &header, &field, msg),
        Ok(obj) => {
            let report = validate::check(&obj);
            doc.warnings.extend(
                report
                    .warnings
                    .into_iter()
                    .map(|p| ctx.error(&header, &format!("{prefix}{}", p.field), p.message)),
            );
            let problems = report.errors;
            if problems.is_empty() {
                doc.result = Ok(obj);
            } else {
                doc.result = Err(problems
                    .into_iter()
                    .map(|p| ctx.error(&header, &format!("{prefix}{}", p.field), p.message))
                    .collect());
            }
        }
    }
    out.push(doc);
}

/// Deserializes `value` as `T`, recording ignored (unknown) field paths and returning the
/// failing field path with the message on error.
fn typed<T: DeserializeOwned>(
    value: Value,
    ignored: &mut Vec<String>,
) -> Result<T, (String, String)> {
    let mut cb = |p: serde_ignored::Path<'_>| ignored.push(ignored_path(&p));
    let de = serde_ignored::Deserializer::new(value, &mut cb);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

/// Envelope for Istio and Gateway API kinds.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<T> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: T,
    #[allow(dead_code)]
    #[serde(default)]
    status: Option<Raw>,
}

fn envelope<T: DeserializeOwned + Default>(
    value: Value,
    ignored: &mut Vec<String>,
    wrap: fn(T) -> Spec,
) -> Result<(ObjectMeta, Spec), (String, String)> {
    let env: Envelope<T> = typed(value, ignored)?;
    Ok((env.metadata, wrap(env.spec)))
}

fn k8s<T: DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>>(
    value: Value,
    ignored: &mut Vec<String>,
    wrap: fn(Box<T>) -> Spec,
) -> Result<(ObjectMeta, Spec), (String, String)> {
    let obj: T = typed(value, ignored)?;
    Ok((obj.metadata().clone(), wrap(Box::new(obj))))
}

fn build_object(
    kind: Kind,
    value: Value,
    header: &Header,
    ignored: &mut Vec<String>,
) -> Result<Object, (String, String)> {
    let (meta, spec) = match kind {
        Kind::VirtualService => envelope(value, ignored, Spec::VirtualService)?,
        Kind::DestinationRule => envelope(value, ignored, Spec::DestinationRule)?,
        Kind::PeerAuthentication => envelope(value, ignored, Spec::PeerAuthentication)?,
        Kind::AuthorizationPolicy => envelope(value, ignored, Spec::AuthorizationPolicy)?,
        Kind::Telemetry => envelope(value, ignored, Spec::Telemetry)?,
        Kind::WasmPlugin => envelope(value, ignored, Spec::WasmPlugin)?,
        Kind::Gateway => envelope(value, ignored, Spec::Gateway)?,
        Kind::HttpRoute => envelope(value, ignored, Spec::HttpRoute)?,
        Kind::GrpcRoute => envelope(value, ignored, Spec::GrpcRoute)?,
        Kind::Namespace => k8s(value, ignored, Spec::Namespace)?,
        Kind::Pod => k8s(value, ignored, Spec::Pod)?,
        Kind::Service => k8s(value, ignored, Spec::Service)?,
        Kind::ServiceAccount => k8s(value, ignored, Spec::ServiceAccount)?,
        Kind::ConfigMap => k8s(value, ignored, Spec::ConfigMap)?,
        Kind::EndpointSlice => k8s(value, ignored, Spec::EndpointSlice)?,
        Kind::Deployment => k8s(value, ignored, Spec::Deployment)?,
        Kind::StatefulSet => k8s(value, ignored, Spec::StatefulSet)?,
        Kind::DaemonSet => k8s(value, ignored, Spec::DaemonSet)?,
        Kind::Canary => envelope(value, ignored, |c| Spec::Canary(Box::new(c)))?,
        Kind::MetricTemplate => envelope(value, ignored, Spec::MetricTemplate)?,
    };
    Ok(Object {
        kind,
        api_version: header.api_version.clone(),
        namespace: header.namespace.clone(),
        name: header.name.clone(),
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
        creation_timestamp: meta.creation_timestamp,
        uid: meta.uid,
        spec,
    })
}
