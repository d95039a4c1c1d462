//! The node-agent protocol between the CNI plugin (client, run by the container runtime on
//! the host) and the ztunnel (server, one per node); `docs/inpod.md`, "The node-agent
//! protocol".
//!
//! A Unix stream socket, one request per connection. The request is one JSON object and a
//! `\n`, written in a single `sendmsg` that carries, for `add`, the pod's network namespace
//! as an `SCM_RIGHTS` file descriptor. The reply is one JSON line. Both sides are strict: a
//! request is at most [`MAX_MESSAGE`] bytes, unknown fields are refused, errors name the
//! field, an `add` without its descriptor is refused.
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshwork_runtime::netns::NetNs;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};

/// Where the ztunnel serves the protocol and the plugin looks for it (a hostPath shared by
/// the DaemonSet and the host).
pub const DEFAULT_SOCKET: &str = "/var/run/meshwork/cni.sock";
/// Largest request or reply, newline included.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// How long the server waits for a whole request after accepting a connection.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server waits for its reply to be taken.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The pod a request is about (the runtime's `K8S_POD_NAMESPACE`, `K8S_POD_NAME`,
/// `K8S_POD_UID`; `uid` is empty when the runtime does not pass it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// `add`: a pod sandbox's network is up (the CNI ADD of the plugins before ours succeeded);
/// enrol it. Carries the namespace's descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddRequest {
    pub container_id: String,
    /// `CNI_NETNS` as the runtime named it (informational: the descriptor is authoritative).
    pub netns: String,
    pub ifname: String,
    pub pod: PodRef,
    /// The addresses the network plugin gave the pod, CIDR notation (`10.244.1.5/24`).
    pub ips: Vec<String>,
}

/// `del`: the sandbox is being torn down (best effort: the runtime may never send it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelRequest {
    pub container_id: String,
    pub pod: PodRef,
}

/// One request, tagged by `op`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum AgentRequest {
    Add(AddRequest),
    Del(DelRequest),
}

impl AgentRequest {
    pub fn op(&self) -> &'static str {
        match self {
            AgentRequest::Add(_) => "add",
            AgentRequest::Del(_) => "del",
        }
    }

    pub fn pod(&self) -> &PodRef {
        match self {
            AgentRequest::Add(a) => &a.pod,
            AgentRequest::Del(d) => &d.pod,
        }
    }

    /// Parses one request line strictly: unknown fields, missing fields, wrong types and
    /// malformed addresses are errors naming the field.
    pub fn parse(line: &[u8]) -> Result<AgentRequest, AgentError> {
        let bad = |s: String| AgentError::BadRequest(s);
        let v: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let serde_json::Value::Object(mut obj) = v else {
            return Err(bad("not a JSON object".into()));
        };
        let op = obj.remove("op").ok_or_else(|| bad("op: missing".into()))?;
        let rest = serde_json::Value::Object(obj);
        let req = match op.as_str() {
            Some("add") => AgentRequest::Add(from_value(rest)?),
            Some("del") => AgentRequest::Del(from_value(rest)?),
            Some(other) => return Err(bad(format!("op: unknown {other:?}, expected add or del"))),
            None => return Err(bad(format!("op: {op} is not a string"))),
        };
        req.validate()?;
        Ok(req)
    }

    fn validate(&self) -> Result<(), AgentError> {
        let bad = |s: String| Err(AgentError::BadRequest(s));
        let pod = self.pod();
        if pod.namespace.is_empty() {
            return bad("pod.namespace: empty".into());
        }
        if pod.name.is_empty() {
            return bad("pod.name: empty".into());
        }
        let container_id = match self {
            AgentRequest::Add(a) => &a.container_id,
            AgentRequest::Del(d) => &d.container_id,
        };
        if container_id.is_empty() {
            return bad("containerId: empty".into());
        }
        if let AgentRequest::Add(a) = self {
            for (i, ip) in a.ips.iter().enumerate() {
                if parse_cidr(ip).is_none() {
                    return bad(format!("ips[{i}]: {ip:?} is not an address/prefix"));
                }
            }
        }
        Ok(())
    }
}

/// Deserializes with the failing field's path in the error (`pod.uid: missing field`).
fn from_value<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, AgentError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        AgentError::BadRequest(if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        })
    })
}

/// `a.b.c.d/len` or `v6/len` → (address, prefix length), the length checked.
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

/// The ztunnel's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ReplyWire", into = "ReplyWire")]
pub enum AgentReply {
    /// `add`: the pod's listeners and capture are in place.
    Enrolled,
    /// `add`: the pod is not in the mesh (not ambient, or a waypoint, …): nothing was done.
    NotCaptured,
    /// `del`: whatever the ztunnel kept for the pod is gone (also when it knew nothing).
    Removed,
    /// The request failed; the text says why.
    Error(String),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReplyWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<ReplyResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum ReplyResult {
    Enrolled,
    NotCaptured,
    Removed,
}

impl TryFrom<ReplyWire> for AgentReply {
    type Error = String;
    fn try_from(w: ReplyWire) -> Result<Self, String> {
        match (w.result, w.error) {
            (Some(ReplyResult::Enrolled), None) => Ok(AgentReply::Enrolled),
            (Some(ReplyResult::NotCaptured), None) => Ok(AgentReply::NotCaptured),
            (Some(ReplyResult::Removed), None) => Ok(AgentReply::Removed),
            (None, Some(e)) => Ok(AgentReply::Error(e)),
            (Some(_), Some(_)) => Err("both \"result\" and \"error\"".into()),
            (None, None) => Err("neither \"result\" nor \"error\"".into()),
        }
    }
}

impl From<AgentReply> for ReplyWire {
    fn from(r: AgentReply) -> Self {
        let result = |r| ReplyWire {
            result: Some(r),
            error: None,
        };
        match r {
            AgentReply::Enrolled => result(ReplyResult::Enrolled),
            AgentReply::NotCaptured => result(ReplyResult::NotCaptured),
            AgentReply::Removed => result(ReplyResult::Removed),
            AgentReply::Error(e) => ReplyWire {
                result: None,
                error: Some(e),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("node agent socket {socket}: cannot connect: {source}")]
    Connect { socket: PathBuf, source: io::Error },
    #[error("node agent socket {socket}: {what} timed out after {timeout:?}")]
    Timeout {
        socket: PathBuf,
        what: &'static str,
        timeout: Duration,
    },
    #[error("node agent socket {socket}: {what}: {source}")]
    Io {
        socket: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("node agent socket {socket}: closed without a reply")]
    NoReply { socket: PathBuf },
    #[error("node agent socket {socket}: bad reply: {reason}")]
    BadReply { socket: PathBuf, reason: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("an add request needs the pod's network namespace descriptor (SCM_RIGHTS)")]
    MissingNetns,
    #[error("the descriptor sent is not a usable network namespace: {0}")]
    BadNetns(String),
    #[error("binding node agent socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("node agent socket {path} exists and is not a socket; not removing it")]
    NotASocket { path: PathBuf },
    #[error("peer uid {uid} is not the agent's ({own}); refused")]
    Peer { uid: u32, own: u32 },
}

impl AgentError {
    /// Whether the agent could not be reached at all (no socket, nothing listening).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, AgentError::Connect { .. })
    }
}

fn encode_line<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).expect("protocol types always serialize");
    out.push(b'\n');
    out
}

/// Client side (the plugin): sends `request` with `netns` (required for `add`) and waits
/// for the reply. `timeout` bounds the whole exchange: connecting, sending and the
/// ztunnel's work until it answers.
pub fn send(
    socket_path: &Path,
    request: &AgentRequest,
    netns_fd: Option<BorrowedFd<'_>>,
    timeout: Duration,
) -> Result<AgentReply, AgentError> {
    if matches!(request, AgentRequest::Add(_)) && netns_fd.is_none() {
        return Err(AgentError::MissingNetns);
    }
    let line = encode_line(request);
    if line.len() > MAX_MESSAGE {
        return Err(AgentError::BadRequest(format!(
            "request of {} bytes exceeds {MAX_MESSAGE}",
            line.len()
        )));
    }
    let socket = socket_path.to_path_buf();
    let deadline = Instant::now() + timeout;
    let left = |what: &'static str| {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(AgentError::Timeout {
                socket: socket.clone(),
                what,
                timeout,
            })
        } else {
            Ok(d)
        }
    };
    let io_err = |what: &'static str, source: io::Error| {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            AgentError::Timeout {
                socket: socket.clone(),
                what,
                timeout,
            }
        } else {
            AgentError::Io {
                socket: socket.clone(),
                what,
                source,
            }
        }
    };

    let addr = socket2::SockAddr::unix(socket_path).map_err(|source| AgentError::Connect {
        socket: socket.clone(),
        source,
    })?;
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .map_err(|e| io_err("socket", e))?;
    sock.connect_timeout(&addr, left("connect")?)
        .map_err(|source| match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => AgentError::Timeout {
                socket: socket.clone(),
                what: "connect",
                timeout,
            },
            _ => AgentError::Connect {
                socket: socket.clone(),
                source,
            },
        })?;
    let mut stream: StdUnixStream = StdUnixStream::from(OwnedFd::from(sock));

    // The descriptor travels with the first bytes, in the same sendmsg.
    stream
        .set_write_timeout(Some(left("send")?))
        .map_err(|e| io_err("send", e))?;
    let fds: Vec<BorrowedFd<'_>> = netns_fd.into_iter().collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    let sent = sendmsg(
        &stream,
        &[IoSlice::new(&line)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(|e| io_err("send", e.into()))?;
    if sent < line.len() {
        stream
            .write_all(&line[sent..])
            .map_err(|e| io_err("send", e))?;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);

    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        stream
            .set_read_timeout(Some(left("waiting for the reply")?))
            .map_err(|e| io_err("waiting for the reply", e))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("waiting for the reply", e)),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_MESSAGE {
            return Err(AgentError::BadReply {
                socket,
                reason: format!("longer than {MAX_MESSAGE} bytes"),
            });
        }
        if buf.contains(&b'\n') {
            break;
        }
    }
    if buf.is_empty() {
        return Err(AgentError::NoReply { socket });
    }
    let end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    serde_json::from_slice(&buf[..end]).map_err(|e| AgentError::BadReply {
        socket,
        reason: format!("{e}: {:?}", String::from_utf8_lossy(&buf[..end])),
    })
}

/// Server side (the ztunnel): the listening socket.
#[derive(Debug)]
pub struct AgentServer {
    listener: UnixListener,
    path: PathBuf,
    read_timeout: Duration,
}

impl AgentServer {
    /// Listens on `path` (inside a tokio runtime): creates the parent directory, replaces a
    /// stale socket (never another kind of file), and makes the socket mode 0600 before it
    /// appears under its name (bound under a temporary name, then renamed), so there is no
    /// moment where anyone but root could connect.
    pub fn bind(path: impl AsRef<Path>) -> Result<AgentServer, AgentError> {
        let path = path.as_ref().to_path_buf();
        let bind_err = |source| AgentError::Bind {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(AgentError::NotASocket { path });
            }
            _ => {}
        }
        let name = path
            .file_name()
            .ok_or_else(|| bind_err(io::Error::other("no file name")))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
        let finish = || -> io::Result<()> {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = finish() {
            let _ = std::fs::remove_file(&tmp);
            return Err(bind_err(e));
        }
        Ok(AgentServer {
            listener,
            path,
            read_timeout: DEFAULT_READ_TIMEOUT,
        })
    }

    /// How long a connection may take to deliver its request (default 5 s).
    pub fn with_read_timeout(mut self, timeout: Duration) -> AgentServer {
        self.read_timeout = timeout;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the next connection without reading it: serve several at once by spawning
    /// [`Connection::read_request`] per connection.
    pub async fn accept(&self) -> io::Result<Connection> {
        let (stream, _) = self.listener.accept().await?;
        Ok(Connection {
            stream,
            socket: self.path.clone(),
            read_timeout: self.read_timeout,
        })
    }

    /// Accepts the next connection and reads its request (one connection at a time: a slow
    /// client holds the loop for up to the read timeout). An `Err` concerns that connection
    /// only (it was already answered with `{"error":…}` where possible): log it and call
    /// `next` again.
    pub async fn next(&self) -> Result<Incoming, AgentError> {
        let conn = self.accept().await.map_err(|source| AgentError::Io {
            socket: self.path.clone(),
            what: "accept",
            source,
        })?;
        conn.read_request().await
    }
}

/// An accepted connection whose request has not been read yet.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    socket: PathBuf,
    read_timeout: Duration,
}

impl Connection {
    /// Reads and checks the one request of this connection (bounded in size and time). A
    /// refused request is answered with `{"error":…}` before the error is returned.
    pub async fn read_request(mut self) -> Result<Incoming, AgentError> {
        let read = tokio::time::timeout(self.read_timeout, self.read_inner()).await;
        let result = match read {
            Ok(r) => r,
            Err(_) => Err(AgentError::Timeout {
                socket: self.socket.clone(),
                what: "reading the request",
                timeout: self.read_timeout,
            }),
        };
        match result {
            Ok((request, netns)) => Ok(Incoming {
                request,
                netns,
                conn: self,
            }),
            Err(e) => {
                if !matches!(e, AgentError::NoReply { .. }) {
                    let line = encode_line(&AgentReply::Error(e.to_string()));
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(&line)).await;
                }
                Err(e)
            }
        }
    }

    async fn read_inner(&mut self) -> Result<(AgentRequest, Option<NetNs>), AgentError> {
        let socket = self.socket.clone();
        let io_err = |what, source| AgentError::Io {
            socket: socket.clone(),
            what,
            source,
        };
        // Only the agent's own user (root) may talk to it, whatever the socket's mode.
        let cred = self
            .stream
            .peer_cred()
            .map_err(|e| io_err("peer credentials", e))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let own = unsafe { libc::geteuid() };
        if cred.uid() != own {
            return Err(AgentError::Peer {
                uid: cred.uid(),
                own,
            });
        }
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        let mut fds: Vec<OwnedFd> = Vec::new();
        let mut chunk = vec![0u8; 8192];
        let end = loop {
            let stream = &self.stream;
            let (n, truncated) = stream
                .async_io(Interest::READABLE, || {
                    // Room for more than one descriptor so that extra ones are seen (and
                    // refused) rather than silently truncated.
                    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
                    let mut control = RecvAncillaryBuffer::new(&mut space);
                    let r = recvmsg(
                        stream.as_fd(),
                        &mut [IoSliceMut::new(&mut chunk)],
                        &mut control,
                        RecvFlags::CMSG_CLOEXEC,
                    )
                    .map_err(io::Error::from)?;
                    for msg in control.drain() {
                        if let RecvAncillaryMessage::ScmRights(received) = msg {
                            fds.extend(received);
                        }
                    }
                    Ok((r.bytes, r.flags.contains(ReturnFlags::CTRUNC)))
                })
                .await
                .map_err(|e| io_err("reading the request", e))?;
            if truncated {
                return Err(AgentError::BadRequest(
                    "too many descriptors (ancillary data truncated)".into(),
                ));
            }
            if n == 0 {
                if buf.is_empty() && fds.is_empty() {
                    return Err(AgentError::NoReply { socket });
                }
                return Err(AgentError::BadRequest(
                    "connection closed before the request's newline".into(),
                ));
            }
            let start = buf.len();
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf[start..].iter().position(|b| *b == b'\n') {
                break start + i;
            }
            if buf.len() >= MAX_MESSAGE {
                return Err(AgentError::BadRequest(format!(
                    "request longer than {MAX_MESSAGE} bytes"
                )));
            }
        };
        if end + 1 > MAX_MESSAGE {
            return Err(AgentError::BadRequest(format!(
                "request longer than {MAX_MESSAGE} bytes"
            )));
        }
        if buf.len() > end + 1 {
            return Err(AgentError::BadRequest(
                "data after the request: one request per connection".into(),
            ));
        }
        if fds.len() > 1 {
            return Err(AgentError::BadRequest(format!(
                "{} descriptors sent, expected at most one",
                fds.len()
            )));
        }
        let request = AgentRequest::parse(&buf[..end])?;
        let netns = match (&request, fds.pop()) {
            (AgentRequest::Add(_), None) => return Err(AgentError::MissingNetns),
            (AgentRequest::Add(_), Some(fd)) => {
                Some(NetNs::from_fd(fd).map_err(|e| AgentError::BadNetns(e.to_string()))?)
            }
            // A descriptor with `del` is not needed: closed.
            (AgentRequest::Del(_), _) => None,
        };
        Ok((request, netns))
    }
}

/// A request read from a connection, waiting for its reply.
#[derive(Debug)]
pub struct Incoming {
    pub request: AgentRequest,
    /// The pod's network namespace (always set for `add`, never for `del`).
    pub netns: Option<NetNs>,
    conn: Connection,
}

impl Incoming {
    /// Answers and closes the connection. Dropping an `Incoming` without replying closes
    /// it too: the plugin then reports that the agent gave no reply.
    pub async fn reply(mut self, reply: AgentReply) -> Result<(), AgentError> {
        let line = encode_line(&reply);
        let socket = self.conn.socket.clone();
        match tokio::time::timeout(WRITE_TIMEOUT, self.conn.stream.write_all(&line)).await {
            Ok(Ok(())) => {
                let _ = self.conn.stream.shutdown().await;
                Ok(())
            }
            Ok(Err(source)) => Err(AgentError::Io {
                socket,
                what: "writing the reply",
                source,
            }),
            Err(_) => Err(AgentError::Timeout {
                socket,
                what: "writing the reply",
                timeout: WRITE_TIMEOUT,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodRef {
        PodRef {
            namespace: "shop".into(),
            name: "cart-7d9".into(),
            uid: "u-1".into(),
        }
    }

    fn add() -> AgentRequest {
        AgentRequest::Add(AddRequest {
            container_id: "c1".into(),
            netns: "/var/run/netns/cni-1".into(),
            ifname: "eth0".into(),
            pod: pod(),
            ips: vec!["10.244.1.5/24".into(), "fd00::5/64".into()],
        })
    }

    #[test]
    fn requests_are_camel_case_lines_tagged_by_op() {
        let line = encode_line(&add());
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.ends_with("}\n"), "{text}");
        assert!(
            text.starts_with(r#"{"op":"add","containerId":"c1","netns":"#),
            "{text}"
        );
        assert!(text.contains(r#""pod":{"namespace":"shop","name":"cart-7d9","uid":"u-1"}"#));
        assert_eq!(AgentRequest::parse(&line[..line.len() - 1]).unwrap(), add());
        let del = br#"{"op":"del","containerId":"c1","pod":{"namespace":"shop","name":"cart-7d9","uid":""}}"#;
        let d = AgentRequest::parse(del).unwrap();
        assert_eq!(d.op(), "del");
        assert_eq!(d.pod().uid, "");
    }

    #[test]
    fn parse_errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"op":"add","containerId":"c","netns":"n","ifname":"eth0","pod":{"namespace":"a","name":"b","uid":"u"},"ips":[],"extra":1}"#,
                "extra",
            ),
            (
                r#"{"op":"add","containerId":"c","netns":"n","ifname":"eth0","pod":{"namespace":"a","name":"b","uid":"u","x":1},"ips":[]}"#,
                "pod",
            ),
            (
                r#"{"op":"add","containerId":"c","netns":"n","ifname":"eth0","pod":{"namespace":"a","name":"b"},"ips":[]}"#,
                "uid",
            ),
            (
                r#"{"op":"add","containerId":"c","netns":"n","ifname":"eth0","pod":{"namespace":"a","name":"b","uid":"u"},"ips":[7]}"#,
                "ips[0]",
            ),
            (
                r#"{"op":"add","containerId":"c","netns":"n","ifname":"eth0","pod":{"namespace":"a","name":"b","uid":"u"},"ips":["10.0.0.1/33"]}"#,
                "ips[0]",
            ),
            (
                r#"{"op":"add","containerId":"","netns":"n","ifname":"eth0","pod":{"namespace":"a","name":"b","uid":"u"},"ips":[]}"#,
                "containerId",
            ),
            (
                r#"{"op":"del","containerId":"c","pod":{"namespace":"","name":"b","uid":"u"}}"#,
                "pod.namespace",
            ),
            (r#"{"op":"flush"}"#, "flush"),
            (r#"{"containerId":"c"}"#, "op"),
            (r#"not json"#, "not JSON"),
            (r#"[1]"#, "not a JSON object"),
        ];
        for (line, field) in cases {
            let e = AgentRequest::parse(line.as_bytes()).unwrap_err();
            assert!(matches!(e, AgentError::BadRequest(_)), "{line}: {e}");
            assert!(e.to_string().contains(field), "{line}: {e}");
        }
    }

    #[test]
    fn replies_have_exactly_one_of_result_and_error() {
        for (r, text) in [
            (AgentReply::Enrolled, r#"{"result":"enrolled"}"#),
            (AgentReply::NotCaptured, r#"{"result":"notCaptured"}"#),
            (AgentReply::Removed, r#"{"result":"removed"}"#),
            (AgentReply::Error("no".into()), r#"{"error":"no"}"#),
        ] {
            assert_eq!(serde_json::to_string(&r).unwrap(), text);
            assert_eq!(serde_json::from_str::<AgentReply>(text).unwrap(), r);
        }
        for bad in [
            r#"{}"#,
            r#"{"result":"enrolled","error":"x"}"#,
            r#"{"result":"maybe"}"#,
            r#"{"result":"enrolled","why":1}"#,
        ] {
            assert!(serde_json::from_str::<AgentReply>(bad).is_err(), "{bad}");
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn add_carries_the_namespace_fd_and_the_reply_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cni.sock");
        let rt = runtime();
        let server = rt.block_on(async { AgentServer::bind(&path) }).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let client_path = path.clone();
        let client = std::thread::spawn(move || {
            let ns = NetNs::open("/proc/self/ns/net").unwrap();
            send(
                &client_path,
                &add(),
                Some(ns.as_fd()),
                Duration::from_secs(5),
            )
        });
        let inode = rt.block_on(async {
            let inc = server.next().await.unwrap();
            assert_eq!(inc.request, add());
            let inode = inc.netns.as_ref().unwrap().inode();
            inc.reply(AgentReply::Enrolled).await.unwrap();
            inode
        });
        assert_eq!(client.join().unwrap().unwrap(), AgentReply::Enrolled);
        assert_eq!(inode, NetNs::open("/proc/self/ns/net").unwrap().inode());
        // Binding again replaces the (now stale) socket.
        drop(server);
        let again = rt.block_on(async { AgentServer::bind(&path) });
        assert!(again.is_ok());
    }

    #[test]
    fn client_refuses_add_without_fd_and_reports_a_missing_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cni.sock");
        let e = send(&path, &add(), None, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, AgentError::MissingNetns), "{e}");
        let ns = NetNs::open("/proc/self/ns/net").unwrap();
        let e = send(&path, &add(), Some(ns.as_fd()), Duration::from_secs(1)).unwrap_err();
        assert!(e.is_unreachable(), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    /// Raw client: writes `bytes` (with `fd` if given) and returns the reply line.
    fn raw(path: &Path, bytes: &[u8], fd: Option<BorrowedFd<'_>>, close: bool) -> String {
        let mut s = StdUnixStream::connect(path).unwrap();
        let fds: Vec<_> = fd.into_iter().collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            control.push(SendAncillaryMessage::ScmRights(&fds));
        }
        sendmsg(&s, &[IoSlice::new(bytes)], &mut control, SendFlags::empty()).unwrap();
        if close {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn server_refuses_bad_requests_with_an_error_reply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cni.sock");
        let rt = runtime();
        let server = rt
            .block_on(async { AgentServer::bind(&path) })
            .unwrap()
            .with_read_timeout(Duration::from_millis(300));
        let add_line = encode_line(&add());
        let status = std::fs::File::open("/proc/self/status").unwrap();
        let big = vec![b' '; MAX_MESSAGE + 10];
        let mut two = add_line.clone();
        two.extend_from_slice(&add_line);
        let cases: Vec<(Vec<u8>, Option<BorrowedFd<'_>>, bool, &str)> = vec![
            (add_line.clone(), None, true, "descriptor"),
            (
                add_line.clone(),
                Some(status.as_fd()),
                true,
                "not a usable network",
            ),
            (big, None, true, "longer than"),
            (two, None, true, "one request per connection"),
            (add_line[..10].to_vec(), None, true, "newline"),
            (add_line[..10].to_vec(), None, false, "timed out"),
            (b"{\"op\":\"add\"}\n".to_vec(), None, true, "containerId"),
        ];
        for (bytes, fd, close, want) in cases {
            let p = path.clone();
            std::thread::scope(|s| {
                let c = s.spawn(|| raw(&p, &bytes, fd, close));
                let e = rt.block_on(server.next()).unwrap_err();
                assert!(e.to_string().contains(want), "{want}: {e}");
                let reply: AgentReply = serde_json::from_str(c.join().unwrap().trim()).unwrap();
                let AgentReply::Error(text) = reply else {
                    panic!("{reply:?}")
                };
                assert!(text.contains(want), "{want}: {text}");
            });
        }
    }

    #[test]
    fn bind_refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cni.sock");
        std::fs::write(&path, b"x").unwrap();
        let e = runtime()
            .block_on(async { AgentServer::bind(&path) })
            .unwrap_err();
        assert!(matches!(e, AgentError::NotASocket { .. }), "{e}");
    }
}
