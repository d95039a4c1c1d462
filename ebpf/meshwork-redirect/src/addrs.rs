use std::net::{Ipv4Addr, Ipv6Addr};

use crate::RedirectError;

/// IPv4 addresses configured on the interfaces of the current network namespace (the
/// node's own addresses: destinations an enrolled pod reaches without the mesh).
pub fn local_ipv4_addresses() -> Result<Vec<Ipv4Addr>, RedirectError> {
    let mut out = Vec::new();
    for (_, ip) in interface_ipv4_addresses()? {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// Every (interface, IPv4 address) of the current network namespace, in the kernel's
/// order. Run inside a pod's namespace (`NetNs::run`) it names the pod's interface and
/// addresses.
pub fn interface_ipv4_addresses() -> Result<Vec<(String, Ipv4Addr)>, RedirectError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(RedirectError::Addresses(std::io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a valid node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() && !ifa.ifa_name.is_null() {
            // SAFETY: the address family says which sockaddr this is.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET {
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                // SAFETY: ifa_name is a NUL-terminated string owned by the list.
                let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
                out.push((name.to_string_lossy().into_owned(), ip));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// IPv6 addresses configured on the interfaces of the current network namespace
/// (link-local ones included).
pub fn local_ipv6_addresses() -> Result<Vec<Ipv6Addr>, RedirectError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(RedirectError::Addresses(std::io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a valid node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: the address family says which sockaddr this is.
            if unsafe { (*ifa.ifa_addr).sa_family } as i32 == libc::AF_INET6 {
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_loopback_when_up() {
        let addrs = local_ipv4_addresses().unwrap();
        // Every environment this runs in has lo up with 127.0.0.1.
        assert!(addrs.contains(&Ipv4Addr::LOCALHOST), "{addrs:?}");
        let named = interface_ipv4_addresses().unwrap();
        assert!(
            named.contains(&("lo".to_string(), Ipv4Addr::LOCALHOST)),
            "{named:?}"
        );
    }
}
