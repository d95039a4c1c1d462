//! The few rtnetlink requests the loader needs, made on a `NETLINK_ROUTE` socket of the
//! calling thread's network namespace (run them inside `NetNs::run` to act on a pod):
//! an interface's `accept_local` (RTM_NEWLINK with `IFLA_AF_SPEC`/`AF_INET`/
//! `IFLA_INET_CONF`, so no write to `/proc/sys`, which kubelet mounts read-only in
//! containers), a `fwmark` rule and a `local 0.0.0.0/0` route.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Errors of one rtnetlink request; each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket for {what}: {source}")]
    Socket { what: String, source: io::Error },
    #[error("{what}: {source}")]
    Request { what: String, source: io::Error },
    #[error("interface {interface}: {source}")]
    Interface {
        interface: String,
        source: io::Error,
    },
}

const RTM_NEWLINK: u16 = 16;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INET_CONF: u16 = 1;
/// `IPV4_DEVCONF_ACCEPT_LOCAL` (linux/ip.h).
const IPV4_DEVCONF_ACCEPT_LOCAL: u16 = 23;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const FR_ACT_TO_TBL: u8 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const RTN_LOCAL: u8 = 2;
const RT_SCOPE_HOST: u8 = 254;
const RT_SCOPE_NOWHERE: u8 = 255;
const RTPROT_STATIC: u8 = 4;

/// A netlink message under construction: header, family header, attributes.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16, family_header: &[u8]) -> Self {
        let mut m = Msg {
            buf: vec![0; 16],
            nests: Vec::new(),
        };
        m.buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        m.buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        m.buf[8..12].copy_from_slice(&1u32.to_ne_bytes());
        m.push(family_header);
        m
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.push(payload);
    }

    fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }

    fn begin(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    fn end(&mut self) {
        let start = self.nests.pop().expect("balanced nests");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// Sends one request and waits for its acknowledgement; the kernel's error as an
/// `io::Error` (e.g. `EEXIST`, `ENOENT`).
fn request(what: &str, msg: Msg) -> Result<Result<(), io::Error>, NetlinkError> {
    let sock_err = |source| NetlinkError::Socket {
        what: what.to_string(),
        source,
    };
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(sock_err(io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: valid fd and option value of the right size.
    if unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    } != 0
    {
        return Err(sock_err(io::Error::last_os_error()));
    }
    let bytes = msg.finish();
    // SAFETY: zeroed sockaddr_nl addressed to the kernel (pid 0).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: valid buffer and address.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            bytes.as_ptr() as *const libc::c_void,
            bytes.len(),
            0,
            &kernel as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(sock_err(io::Error::last_os_error()));
    }
    let mut buf = vec![0u8; 8192];
    // Bounded: the kernel answers a request with one ack; stray messages are skipped and
    // a silent kernel ends in the receive timeout.
    for _ in 0..16 {
        // SAFETY: valid buffer.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(sock_err(io::Error::last_os_error()));
        }
        let data = &buf[..n as usize];
        let mut off = 0;
        while off + 16 <= data.len() {
            let len = u32::from_ne_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
            let ty = u16::from_ne_bytes(data[off + 4..off + 6].try_into().expect("2 bytes"));
            if len < 16 || off + len > data.len() {
                break;
            }
            if ty == NLMSG_ERROR && len >= 20 {
                let code =
                    i32::from_ne_bytes(data[off + 16..off + 20].try_into().expect("4 bytes"));
                return Ok(if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                });
            }
            off += (len + 3) & !3;
        }
    }
    Err(sock_err(io::Error::other(
        "no acknowledgement from the kernel",
    )))
}

fn check(what: String, msg: Msg, ok_errnos: &[i32]) -> Result<(), NetlinkError> {
    match request(&what, msg)? {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error().is_some_and(|c| ok_errnos.contains(&c)) => Ok(()),
        Err(source) => Err(NetlinkError::Request { what, source }),
    }
}

/// The index of `interface` in the calling thread's network namespace.
pub fn ifindex(interface: &str) -> Result<u32, NetlinkError> {
    let err = |source| NetlinkError::Interface {
        interface: interface.to_string(),
        source,
    };
    let name = std::ffi::CString::new(interface)
        .map_err(|_| err(io::Error::from(io::ErrorKind::InvalidInput)))?;
    // SAFETY: valid NUL-terminated name.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(idx)
}

/// Sets `net.ipv4.conf.<interface>.accept_local` through rtnetlink.
pub fn set_accept_local(interface: &str, on: bool) -> Result<(), NetlinkError> {
    let index = ifindex(interface)?;
    // ifinfomsg: family, pad, type, index, flags, change.
    let mut hdr = [0u8; 16];
    hdr[0] = libc::AF_UNSPEC as u8;
    hdr[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    let mut m = Msg::new(RTM_NEWLINK, 0, &hdr);
    m.begin(IFLA_AF_SPEC);
    m.begin(libc::AF_INET as u16);
    m.begin(IFLA_INET_CONF);
    m.u32(IPV4_DEVCONF_ACCEPT_LOCAL, on as u32);
    m.end();
    m.end();
    m.end();
    check(
        format!("setting accept_local={} on {interface}", on as u8),
        m,
        &[],
    )
}

fn rule_msg(ty: u16, flags: u16, family: i32, mark: u32, table: u32, priority: u32) -> Msg {
    // fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action, flags.
    let mut hdr = [0u8; 12];
    hdr[0] = family as u8;
    hdr[7] = FR_ACT_TO_TBL;
    let mut m = Msg::new(ty, flags, &hdr);
    m.u32(FRA_PRIORITY, priority);
    m.u32(FRA_FWMARK, mark);
    m.u32(FRA_FWMASK, mark);
    m.u32(FRA_TABLE, table);
    m
}

/// IP version of a rule or route request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn af(self) -> i32 {
        match self {
            Family::V4 => libc::AF_INET,
            Family::V6 => libc::AF_INET6,
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }

    fn any(self) -> &'static str {
        match self {
            Family::V4 => "0.0.0.0/0",
            Family::V6 => "::/0",
        }
    }
}

/// `ip -4 rule add priority P fwmark M/M lookup T`; already present: no-op.
pub fn add_fwmark_rule(mark: u32, table: u32, priority: u32) -> Result<(), NetlinkError> {
    add_fwmark_rule_for(Family::V4, mark, table, priority)
}

/// `ip -4|-6 rule add priority P fwmark M/M lookup T`; already present: no-op.
pub fn add_fwmark_rule_for(
    family: Family,
    mark: u32,
    table: u32,
    priority: u32,
) -> Result<(), NetlinkError> {
    check(
        format!(
            "adding rule ({}) priority {priority} fwmark {mark:#x}/{mark:#x} lookup {table}",
            family.flag()
        ),
        rule_msg(
            RTM_NEWRULE,
            NLM_F_CREATE | NLM_F_EXCL,
            family.af(),
            mark,
            table,
            priority,
        ),
        &[libc::EEXIST],
    )
}

/// Removes the rule of [`add_fwmark_rule`]; missing: no-op.
pub fn del_fwmark_rule(mark: u32, table: u32, priority: u32) -> Result<(), NetlinkError> {
    del_fwmark_rule_for(Family::V4, mark, table, priority)
}

/// Removes the rule of [`add_fwmark_rule_for`]; missing (or IPv6 disabled): no-op.
pub fn del_fwmark_rule_for(
    family: Family,
    mark: u32,
    table: u32,
    priority: u32,
) -> Result<(), NetlinkError> {
    check(
        format!(
            "deleting rule ({}) priority {priority} fwmark {mark:#x}/{mark:#x} lookup {table}",
            family.flag()
        ),
        rule_msg(RTM_DELRULE, 0, family.af(), mark, table, priority),
        &[libc::ENOENT, libc::EAFNOSUPPORT],
    )
}

fn route_msg(ty: u16, flags: u16, family: i32, scope: u8, table: u32, lo: u32) -> Msg {
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut hdr = [0u8; 12];
    hdr[0] = family as u8;
    hdr[5] = RTPROT_STATIC;
    hdr[6] = scope;
    hdr[7] = RTN_LOCAL;
    let mut m = Msg::new(ty, flags, &hdr);
    m.u32(RTA_TABLE, table);
    m.u32(RTA_OIF, lo);
    m
}

/// `ip -4 route replace local 0.0.0.0/0 dev lo table T`.
pub fn replace_local_default_route(table: u32) -> Result<(), NetlinkError> {
    replace_local_default_route_for(Family::V4, table)
}

/// `ip -4|-6 route replace local 0.0.0.0/0|::/0 dev lo table T`.
pub fn replace_local_default_route_for(family: Family, table: u32) -> Result<(), NetlinkError> {
    let lo = ifindex("lo")?;
    check(
        format!(
            "replacing route ({}) local {} dev lo table {table}",
            family.flag(),
            family.any()
        ),
        route_msg(
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_REPLACE,
            family.af(),
            RT_SCOPE_HOST,
            table,
            lo,
        ),
        &[],
    )
}

/// Removes the route of [`replace_local_default_route`]; missing: no-op.
pub fn del_local_default_route(table: u32) -> Result<(), NetlinkError> {
    del_local_default_route_for(Family::V4, table)
}

/// Removes the route of [`replace_local_default_route_for`]; missing (or IPv6
/// disabled): no-op.
pub fn del_local_default_route_for(family: Family, table: u32) -> Result<(), NetlinkError> {
    let lo = ifindex("lo")?;
    check(
        format!(
            "deleting route ({}) local {} dev lo table {table}",
            family.flag(),
            family.any()
        ),
        route_msg(RTM_DELROUTE, 0, family.af(), RT_SCOPE_NOWHERE, table, lo),
        &[libc::ESRCH, libc::ENOENT, libc::EAFNOSUPPORT],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_length_and_flag() {
        let mut m = Msg::new(RTM_NEWLINK, 0, &[0u8; 16]);
        m.begin(IFLA_AF_SPEC);
        m.u32(IPV4_DEVCONF_ACCEPT_LOCAL, 1);
        m.end();
        let b = m.finish();
        assert_eq!(b.len(), 16 + 16 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 44);
        let nest_len = u16::from_ne_bytes(b[32..34].try_into().unwrap());
        let nest_ty = u16::from_ne_bytes(b[34..36].try_into().unwrap());
        assert_eq!(nest_len, 12);
        assert_eq!(nest_ty, IFLA_AF_SPEC | NLA_F_NESTED);
        assert_eq!(u16::from_ne_bytes(b[38..40].try_into().unwrap()), 23);
    }

    #[test]
    fn missing_interface_is_named() {
        let e = ifindex("mw-no-such-if").unwrap_err().to_string();
        assert!(e.contains("mw-no-such-if"), "{e}");
    }
}
