//! Conversions between C socket addresses and `SocketAddr`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The IP socket address at `ptr`, or `None` for null, a short length or another family.
///
/// # Safety
/// `ptr` is null or points to at least `len` readable bytes.
pub unsafe fn to_socket_addr(
    ptr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    if ptr.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: at least the family field is readable (checked above); unaligned read because the
    // caller's buffer may be any byte buffer.
    let family = unsafe { std::ptr::read_unaligned(ptr as *const libc::sa_family_t) };
    match family as i32 {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: length checked for a sockaddr_in.
            let sin = unsafe { std::ptr::read_unaligned(ptr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: length checked for a sockaddr_in6.
            let sin6 = unsafe { std::ptr::read_unaligned(ptr as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `addr` as a C socket address and its length.
pub fn from_socket_addr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Whether a connect that failed with `errno` had copied its address from the caller first.
/// The kernel copies the address before anything else and fails with EFAULT (bad pointer) or
/// EINVAL (bad length) when it cannot; the errors listed here all come later, from the protocol,
/// so the caller's memory is known to be readable. Anything else: the address is not touched.
pub fn connect_read_address(errno: i32) -> bool {
    matches!(
        errno,
        libc::EINPROGRESS
            | libc::EINTR
            | libc::EALREADY
            | libc::EISCONN
            | libc::ECONNREFUSED
            | libc::ETIMEDOUT
            | libc::ENETUNREACH
            | libc::EHOSTUNREACH
            | libc::ECONNRESET
            | libc::EADDRNOTAVAIL
            | libc::EAGAIN
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_families() {
        for a in ["127.0.0.1:8080", "[::1]:443", "[::ffff:127.0.0.1]:53"] {
            let addr: SocketAddr = a.parse().expect("literal address");
            let (ss, len) = from_socket_addr(addr);
            // SAFETY: `ss` holds `len` valid bytes.
            let back = unsafe { to_socket_addr(&ss as *const _ as *const libc::sockaddr, len) };
            assert_eq!(back, Some(addr));
        }
    }

    #[test]
    fn rejects_null_short_and_unix() {
        // SAFETY: null is allowed.
        assert_eq!(unsafe { to_socket_addr(std::ptr::null(), 16) }, None);
        let (ss, _) = from_socket_addr("127.0.0.1:1".parse().expect("literal"));
        // SAFETY: `ss` is readable for its whole size.
        let short = unsafe { to_socket_addr(&ss as *const _ as *const libc::sockaddr, 4) };
        assert_eq!(short, None);
        // SAFETY: an all-zero storage is valid.
        let mut un: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        un.ss_family = libc::AF_UNIX as libc::sa_family_t;
        // SAFETY: `un` is readable for its whole size.
        let r = unsafe { to_socket_addr(&un as *const _ as *const libc::sockaddr, 110) };
        assert_eq!(r, None);
    }
}
