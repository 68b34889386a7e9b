//! What the collector learns about traced processes from outside them: `/proc/PID/fd` and
//! `/proc/PID/net/*`, and its own sockets for route lookups. Nothing here runs in a traced
//! process, so sandboxes never see these calls.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::machine::{Found, Kernel};

/// The real kernel.
pub struct ProcFs;

impl Kernel for ProcFs {
    fn inode(&mut self, pid: i32, fd: i32) -> Option<u64> {
        socket_inode(pid, fd)
    }

    fn discover(&mut self, pid: i32, fd: i32) -> Option<Found> {
        let inode = socket_inode(pid, fd)?;
        for (table, stream) in [
            ("tcp", true),
            ("tcp6", true),
            ("udp", false),
            ("udp6", false),
        ] {
            let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
            if let Some(found) = find_inode(&text, inode, stream) {
                return Some(found);
            }
        }
        None
    }

    fn route_source(&mut self, dst: SocketAddr) -> Option<IpAddr> {
        let bind: SocketAddr = if dst.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let s = std::net::UdpSocket::bind(bind).ok()?;
        s.connect(dst).ok()?;
        s.local_addr().ok().map(|a| a.ip())
    }
}

/// The inode of the socket `fd` of `pid` names, from its `/proc` link (`socket:[N]`).
pub fn socket_inode(pid: i32, fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The line of a `/proc/net/{tcp,udp}[6]` table with `inode`.
fn find_inode(text: &str, inode: u64, stream: bool) -> Option<Found> {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[9].parse::<u64>().ok() != Some(inode) {
            continue;
        }
        let local = parse_addr(f[1]);
        let peer = parse_addr(f[2]).filter(|a| a.port() != 0);
        return Some(Found {
            inode,
            stream,
            listening: stream && f[3] == "0A",
            local,
            peer,
        });
    }
    None
}

/// `0100007F:1F90` (IPv4) or 32 hex digits then a port (IPv6), as the kernel prints them: each
/// 32-bit word in host order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<u32>> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok())
        .collect();
    let words = words?;
    let mut bytes = Vec::with_capacity(16);
    for w in &words {
        bytes.extend_from_slice(&w.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&bytes);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether `pid` is alive (a zombie has exited).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// The child of `parent` that its own pid namespace calls `ns_pid` (a sandboxed fork child
/// that could not see /proc to say who it is).
pub fn child_in_namespace(parent: i32, ns_pid: i32) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        if parent_and_innermost_pid(&status) == Some((parent, ns_pid)) {
            return Some(pid);
        }
    }
    None
}

/// `PPid` and the last `NSpid` number of a `/proc/PID/status` text.
fn parent_and_innermost_pid(status: &str) -> Option<(i32, i32)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::split_whitespace)
    };
    let ppid = field("PPid:")?.next()?.parse().ok()?;
    let inner = field("NSpid:")?.last()?.parse().ok()?;
    Some((ppid, inner))
}

/// The state (`/proc/net/tcp`'s `st`) of the TCP socket from `local` to `peer` in the network
/// namespace of `pid` (or the collector's, once `pid` is gone): how a socket no process holds
/// any more (closing, in TIME_WAIT) is seen from outside. `Some(None)`: no such socket; `None`:
/// the table could not be read.
pub fn tcp_state(pid: i32, local: SocketAddr, peer: SocketAddr) -> Option<Option<u8>> {
    let table = if local.is_ipv4() { "tcp" } else { "tcp6" };
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
        .or_else(|_| std::fs::read_to_string(format!("/proc/self/net/{table}")))
        .ok()?;
    Some(find_pair(&text, local, peer))
}

/// The state of the line of a `/proc/net/tcp[6]` table from `local` to `peer`.
fn find_pair(text: &str, local: SocketAddr, peer: SocketAddr) -> Option<u8> {
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || parse_addr(f[1]) != Some(local) || parse_addr(f[2]) != Some(peer) {
            return None;
        }
        u8::from_str_radix(f[3], 16).ok()
    })
}

/// The executable's file name of `pid`, for pcapng comments and `%e`.
pub fn exe_path(pid: i32) -> std::ffi::OsString {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(std::path::PathBuf::into_os_string)
        .unwrap_or_default()
}

/// The command line of `pid`, words joined by spaces.
pub fn command_line(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Whether a process other than this one may still claim a slot of the run whose processes
/// carry `name=value` in their environment and whose first process is `first`. Only processes
/// started since then are looked at (pids are handed out in increasing order until they wrap
/// at `pid_max`; after a wrap, all): one that has the variable (as `/proc` shows it: the block
/// its image started with), or one just started that shows no environment (a child in the
/// middle of its exec: `posix_spawn` lets the parent go on before the kernel has set up the new
/// image's environment) or does not let us read it (another user's, or undumpable).
pub fn may_claim(name: &str, value: &std::ffi::OsStr, first: u32) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    let mut entry = Vec::with_capacity(name.len() + 1 + value.len());
    entry.extend_from_slice(name.as_bytes());
    entry.push(b'=');
    entry.extend_from_slice(value.as_bytes());
    let me = std::process::id();
    let now = uptime_ticks();
    let last = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    // Not wrapped since the run began: only pids above its first one are new.
    let since_run = |pid: u32| last.is_none_or(|last| last < first || pid > first);
    // One buffer for every process, read in large pieces (the kernel gives a page per read).
    let mut env = Vec::with_capacity(64 << 10);
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && since_run(pid))
        .any(|pid| {
            env.clear();
            let read = std::fs::File::open(format!("/proc/{pid}/environ"))
                .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut env));
            match read {
                Ok(0) | Err(_) => now.is_some_and(|now| just_started(pid, now)),
                Ok(_) => env_has(&env, &entry),
            }
        })
}

/// Clock ticks since boot (the unit of a process's start time in `/proc/PID/stat`).
fn uptime_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf has no memory preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then_some((secs * hz as f64) as u64)
}

/// A user process (not a kernel thread, not a zombie) started less than 2 s ago.
fn just_started(pid: u32, now_ticks: u64) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the command name (which may hold spaces and parentheses): state is the
    // first, flags the 7th, the start time the 20th.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return false;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (Some(state), Some(flags), Some(start)) = (
        f.first(),
        f.get(6).and_then(|v| v.parse::<u64>().ok()),
        f.get(19).and_then(|v| v.parse::<u64>().ok()),
    ) else {
        return false;
    };
    // SAFETY: sysconf has no memory preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    *state != "Z" && flags & PF_KTHREAD == 0 && now_ticks.saturating_sub(start) < 2 * hz
}

/// Whether the NUL-separated block `env` holds the entry `name=value`, whole.
fn env_has(env: &[u8], entry: &[u8]) -> bool {
    env.split(|&b| b == 0).any(|e| e == entry)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_environment_entry_matches_only_whole() {
        let env = b"A=1\0NETINTERCEPT_RING=/dev/shm/r-1\0B=2\0";
        assert!(super::env_has(env, b"NETINTERCEPT_RING=/dev/shm/r-1"));
        assert!(!super::env_has(env, b"NETINTERCEPT_RING=/dev/shm/r-"));
        assert!(!super::env_has(env, b"RING=/dev/shm/r-1"));
        assert!(!super::env_has(b"", b"A=1"));
    }

    #[test]
    fn a_child_with_the_variable_is_found_and_one_without_is_not() {
        let value = format!("/dev/shm/netintercept-test-{}", std::process::id());
        let name = "NI_TEST_CARRIES_RING";
        assert!(!super::may_claim(name, value.as_ref(), 1));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .env(name, &value)
            .spawn()
            .expect("sleep");
        let found = super::may_claim(name, value.as_ref(), 1);
        // A process older than the run's first is not the run's.
        let older = super::may_claim(name, value.as_ref(), child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found);
        assert!(!older);
        assert!(!super::may_claim(name, value.as_ref(), 1));
    }

    #[test]
    fn a_young_process_without_environment_may_claim_an_old_one_not() {
        let now = super::uptime_ticks().expect("uptime");
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .env_clear()
            .spawn()
            .expect("sleep");
        let young = super::just_started(child.id(), now + 1);
        let later = super::just_started(child.id(), now + 10_000);
        let _ = child.kill();
        let _ = child.wait();
        let reaped = super::just_started(child.id(), now);
        assert!(young);
        assert!(!later);
        assert!(!reaped);
        // Kernel threads show no environment either (kthreadd is pid 2).
        assert!(!super::just_started(2, now));
    }

    use super::*;

    #[test]
    fn reads_parent_and_namespace_pid() {
        let status = "Name:\tchromium\nPid:\t8591\nPPid:\t8588\nNSpid:\t8591\t3\n";
        assert_eq!(parent_and_innermost_pid(status), Some((8588, 3)));
        assert_eq!(parent_and_innermost_pid("PPid:\t1\n"), None);
    }

    #[test]
    fn reads_kernel_socket_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1\n";
        let f = find_inode(v4, 12345, true).expect("found");
        assert!(f.listening);
        assert_eq!(f.local, Some("127.0.0.1:8080".parse().expect("addr")));
        assert_eq!(f.peer, None);
        let v6 = "h\n 0: 00000000000000000000000001000000:01BB 00000000000000000000000001000000:9C40 01 0:0 0:0 0 0 0 777 1\n";
        let f = find_inode(v6, 777, true).expect("found");
        assert_eq!(f.local, Some("[::1]:443".parse().expect("addr")));
        assert_eq!(f.peer, Some("[::1]:40000".parse().expect("addr")));
        assert!(!f.listening);
        let pair = |l: &str, p: &str| find_pair(v6, l.parse().expect("l"), p.parse().expect("p"));
        assert_eq!(pair("[::1]:443", "[::1]:40000"), Some(1));
        assert_eq!(pair("[::1]:443", "[::1]:40001"), None);
    }
}
