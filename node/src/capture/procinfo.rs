//! AutoTagging of processes: what /proc says about a pid — name, command line, executable,
//! container, start time, the TCP ports it listens on — cached per pid for a short while
//! (pids get reused, names change). Each process instance is a resource (`gprocess`,
//! DESIGN.md §5): rows store its key, and its attributes are registered once per version in
//! the dictionary.
//!
//! `auto_service` is inferred from the listening process and port: a process listening on
//! TCP ports is the service `name:lowest port` (`nginx:80`, `redis-server:6379`), wherever
//! it appears, as a server or as a client of another service; a process that listens on
//! nothing (curl, a batch job) is its name. Listening sockets are the process's socket fds
//! found in LISTEN state in its network namespace's `/proc/<pid>/net/tcp{,6}`, so
//! inherited sockets (an nginx worker's) and containers' namespaces count. UDP servers
//! (DNS) have no listening state and keep their name.

use hashbrown::HashMap;
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

const TTL: Duration = Duration::from_secs(30);
const MAX_ENTRIES: usize = 16_384;
/// Longest command line kept, in bytes (the dictionary refuses longer strings).
const MAX_CMDLINE: usize = 1024;

/// One process instance as /proc describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessInfo {
    /// The resource's key, `node/pid/start ticks`: unique per process instance on a node.
    pub key: Arc<str>,
    /// `/proc/<pid>/comm`, the main thread's name (`process_kname`).
    pub name: Arc<str>,
    /// `auto_service`: `name:port` with the lowest TCP port it listens on, else its name.
    pub service: Arc<str>,
    pub cmdline: Arc<str>,
    pub exe: Arc<str>,
    /// The container id from the cgroup path; empty on the host.
    pub container_id: Arc<str>,
    /// When this version of the attributes starts: the process start, or the moment a
    /// change (e.g. a new name) was first seen.
    pub valid_from_us: i64,
}

impl ProcessInfo {
    pub(crate) fn same_attributes(&self, other: &ProcessInfo) -> bool {
        (
            &self.key,
            &self.name,
            &self.service,
            &self.cmdline,
            &self.exe,
            &self.container_id,
        ) == (
            &other.key,
            &other.name,
            &other.service,
            &other.cmdline,
            &other.exe,
            &other.container_id,
        )
    }
}

/// The node's one registry of processes, shared by capture and the OTLP receiver so that
/// both tag a process alike and register each version once.
pub type SharedProcesses = Arc<parking_lot::Mutex<Processes>>;

/// pid → [`ProcessInfo`], plus the versions first seen since the last [`Self::take_new`].
pub struct Processes {
    node: Arc<str>,
    boot_time_us: i64,
    ticks_per_second: i64,
    infos: HashMap<u32, (Arc<ProcessInfo>, u64)>,
    new: Vec<Arc<ProcessInfo>>,
    /// Per network namespace (its inode): when read, and socket inode → listening port.
    listeners: HashMap<u64, (u64, HashMap<u64, u16>)>,
}

/// How long a network namespace's table of listening sockets is reused.
const LISTENERS_TTL_NS: u64 = 1_000_000_000;
/// Network namespaces whose listening sockets are kept at most.
const MAX_NAMESPACES: usize = 1024;

impl Processes {
    pub fn new(node: Arc<str>) -> Self {
        let boot_time_us = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok())
            })
            .unwrap_or(0)
            * 1_000_000;
        let ticks = clock_ticks().unwrap_or(100);
        Self {
            node,
            boot_time_us,
            ticks_per_second: ticks,
            infos: HashMap::new(),
            new: Vec::new(),
            listeners: HashMap::new(),
        }
    }

    /// What is known of `pid`; `fallback` (the event's thread name) names processes /proc
    /// has no entry for any more, e.g. one that already exited. `now_ns` is Unix-epoch ns,
    /// the events' clock once capture has converted them.
    pub fn get(&mut self, pid: u32, fallback: &str, now_ns: u64) -> Arc<ProcessInfo> {
        let ttl = TTL.as_nanos() as u64;
        let previous = match self.infos.get(&pid) {
            Some((info, at)) if now_ns.saturating_sub(*at) < ttl => return Arc::clone(info),
            Some((info, _)) => Some(Arc::clone(info)),
            None => None,
        };
        let mut info = self.read(pid, fallback, now_ns);
        let gone = info.exe.is_empty() && info.key.contains("/exited/");
        let info = match previous {
            // unchanged, or gone since: what was read while it ran stays true
            Some(old) if old.same_attributes(&info) || gone => old,
            other => {
                if other.is_some_and(|old| old.key == info.key) {
                    // the same process changed (e.g. renamed itself): a new version from now
                    info.valid_from_us = (now_ns / 1000) as i64;
                }
                let info = Arc::new(info);
                if !info.key.is_empty() {
                    self.new.push(Arc::clone(&info));
                }
                info
            }
        };
        if self.infos.len() >= MAX_ENTRIES {
            self.infos
                .retain(|_, (_, at)| now_ns.saturating_sub(*at) < ttl);
            if self.infos.len() >= MAX_ENTRIES {
                self.infos.clear();
            }
        }
        self.infos.insert(pid, (Arc::clone(&info), now_ns));
        info
    }

    /// Process versions seen since the last call, for registering as resources.
    pub fn take_new(&mut self) -> Vec<Arc<ProcessInfo>> {
        std::mem::take(&mut self.new)
    }

    fn read(&mut self, pid: u32, fallback: &str, now_ns: u64) -> ProcessInfo {
        let proc = |file: &str| std::fs::read(format!("/proc/{pid}/{file}")).ok();
        let name: Arc<str> = proc("comm")
            .map(|b| String::from_utf8_lossy(&b).trim_end().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| fallback.to_string())
            .into();
        let Some(start_ticks) = proc("stat").and_then(|b| start_ticks(&b)) else {
            // Gone before we looked (a short-lived client, or capture running behind):
            // only the event's thread name is known. Instances of one pid with one name
            // share this key, which is harmless since they share all that is known.
            return ProcessInfo {
                key: format!("{}/{pid}/exited/{name}", self.node).into(),
                service: Arc::clone(&name),
                name,
                valid_from_us: (now_ns / 1000) as i64,
                ..ProcessInfo::default()
            };
        };
        let cmdline = proc("cmdline")
            .map(|b| cmdline_text(&b))
            .unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let container_id = proc("cgroup")
            .map(|b| container_id(&String::from_utf8_lossy(&b)))
            .unwrap_or_default();
        let service: Arc<str> = match self.listening_ports(pid, now_ns).first() {
            Some(port) => format!("{name}:{port}").into(),
            None => Arc::clone(&name),
        };
        ProcessInfo {
            key: format!("{}/{pid}/{start_ticks}", self.node).into(),
            service,
            name,
            cmdline: cmdline.into(),
            exe: exe.into(),
            container_id: container_id.into(),
            valid_from_us: self.boot_time_us
                + (start_ticks as i64).saturating_mul(1_000_000) / self.ticks_per_second.max(1),
        }
    }
}

impl Processes {
    /// The TCP ports `pid` listens on, ascending: its socket fds that its network
    /// namespace's table shows listening. Empty if /proc denies or lacks any of it.
    fn listening_ports(&mut self, pid: u32, now_ns: u64) -> Vec<u16> {
        let sockets: Vec<u64> = socket_inodes(pid).collect();
        if sockets.is_empty() {
            return Vec::new();
        }
        let Some(netns) = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        else {
            return Vec::new();
        };
        let fresh = matches!(self.listeners.get(&netns),
            Some((at, _)) if now_ns.saturating_sub(*at) < LISTENERS_TTL_NS);
        if !fresh {
            if self.listeners.len() >= MAX_NAMESPACES {
                self.listeners.clear();
            }
            let mut table = HashMap::new();
            for file in ["tcp", "tcp6"] {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
                    table.extend(listening_sockets(&text));
                }
            }
            self.listeners.insert(netns, (now_ns, table));
        }
        let table = &self.listeners[&netns].1;
        let mut ports: Vec<u16> = sockets
            .iter()
            .filter_map(|i| table.get(i))
            .copied()
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// The inodes of the sockets `pid` holds open (its `/proc/<pid>/fd` links); none if /proc
/// denies it.
fn socket_inodes(pid: u32) -> impl Iterator<Item = u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| socket_inode(&target.to_string_lossy()))
}

/// The inode of a `/proc/<pid>/fd` link's target `socket:[12345]`.
fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Socket inode → local port of the LISTEN (state `0A`) rows of a `/proc/net/tcp` or
/// `tcp6` table. Lines that do not parse are skipped.
fn listening_sockets(table: &str) -> impl Iterator<Item = (u64, u16)> + '_ {
    tcp_sockets(table, "0A").map(|(local, _, inode)| (inode, local.port()))
}

/// The local process at the other end of a TCP connection this process accepted: the
/// ESTABLISHED socket in this network namespace whose local address is the connection's
/// `remote` and whose remote address is its `local` (`/proc/net/tcp{,6}`), then the process
/// holding that socket (a scan of `/proc/<pid>/fd`). `None` for a peer on another host or
/// in another network namespace, or when /proc denies it. Costs a scan of every process's
/// file descriptors: callers cache the answer per connection.
pub fn connection_peer_pid(local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    let (local, remote) = (canonical(local), canonical(remote));
    let inode = ["tcp", "tcp6"].iter().find_map(|file| {
        let table = std::fs::read_to_string(format!("/proc/net/{file}")).ok()?;
        tcp_sockets(&table, "01")
            .find(|(l, r, _)| *l == remote && (*r == local || r.port() == local.port()))
            .map(|(_, _, inode)| inode)
    })?;
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| socket_inodes(pid).any(|i| i == inode))
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of an IPv4 peer) become IPv4,
/// so both ends of a loopback connection name it the same way.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(addr, |v4| SocketAddr::new(IpAddr::V4(v4), addr.port())),
        IpAddr::V4(_) => addr,
    }
}

/// (local, remote, socket inode) of the rows of a `/proc/net/tcp` or `tcp6` table in
/// `state` (hex as the table prints it: `01` ESTABLISHED, `0A` LISTEN), addresses
/// canonical. Lines that do not parse are skipped.
fn tcp_sockets<'a>(
    table: &'a str,
    state: &'a str,
) -> impl Iterator<Item = (SocketAddr, SocketAddr, u64)> + 'a {
    table.lines().skip(1).filter_map(move |line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(3) != Some(&state) {
            return None;
        }
        let local = proc_net_addr(fields.get(1)?)?;
        let remote = proc_net_addr(fields.get(2)?)?;
        let inode = fields.get(9)?.parse().ok()?;
        Some((canonical(local), canonical(remote), inode))
    })
}

/// A `/proc/net/tcp{,6}` address, `0100007F:1F90`: the address as 32-bit words in host
/// byte order, each printed in hex, then the port in hex.
fn proc_net_addr(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Clock ticks per second (`CLK_TCK`), from the auxiliary vector the kernel gave this
/// process (`AT_CLKTCK` = 17); Linux uses 100 almost everywhere.
fn clock_ticks() -> Option<i64> {
    let auxv = std::fs::read("/proc/self/auxv").ok()?;
    auxv.chunks_exact(16).find_map(|pair| {
        let key = u64::from_ne_bytes(pair[..8].try_into().ok()?);
        let value = u64::from_ne_bytes(pair[8..].try_into().ok()?);
        (key == 17).then_some(value as i64)
    })
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot). The name in
/// field 2 may hold spaces and parentheses, so fields are counted after the last `)`.
fn start_ticks(stat: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(stat);
    let (_, rest) = text.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// `/proc/<pid>/cmdline` as one line: NUL-separated arguments joined by spaces, capped.
fn cmdline_text(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut line = text.trim_end_matches('\0').replace('\0', " ");
    if line.len() > MAX_CMDLINE {
        let mut cut = MAX_CMDLINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line
}

/// The container id in a cgroup file: the last 64-hex-digit name in a path, as runtimes
/// write them (`/docker/<id>`, `docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `/kubepods/.../<id>`). Empty on the host.
pub fn container_id(cgroup: &str) -> String {
    cgroup
        .lines()
        .flat_map(|line| line.rsplit(['/', '-', ':']))
        .map(|part| part.strip_suffix(".scope").unwrap_or(part))
        .find(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_falls_back_for_missing_pids() {
        let mut p = Processes::new("host-a".into());
        let me = p.get(std::process::id(), "x", 1);
        let expected = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(&*me.name, expected.trim_end());
        assert!(
            me.key
                .starts_with(&format!("host-a/{}/", std::process::id())),
            "{}",
            me.key
        );
        assert_eq!(
            &*me.exe,
            std::env::current_exe().unwrap().display().to_string()
        );
        assert!(!me.cmdline.is_empty());
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        assert!(
            me.valid_from_us > now_us - 3_600_000_000 && me.valid_from_us <= now_us,
            "start {} vs now {now_us}",
            me.valid_from_us
        );
        // one new resource version, not repeated while cached or unchanged
        assert_eq!(p.take_new().len(), 1);
        p.get(std::process::id(), "x", 2);
        p.get(std::process::id(), "x", 2 + TTL.as_nanos() as u64);
        assert!(p.take_new().is_empty());

        // a process that exited keeps the name its events carried
        let gone = p.get(u32::MAX - 1, "gone", 1);
        assert_eq!(&*gone.name, "gone");
        assert_eq!(&*gone.key, &format!("host-a/{}/exited/gone", u32::MAX - 1));
        assert_eq!(p.take_new(), vec![gone]);
    }

    /// A listening socket names the service, with the lowest port; a connected socket
    /// and a UDP socket do not.
    #[test]
    fn service_is_the_name_and_lowest_listening_port() {
        use std::io::BufRead;
        // a child that listens on two ports, has a bound UDP socket and a connection
        let script = "import socket, time
a = socket.socket(); a.bind(('127.0.0.1', 0)); a.listen()
b = socket.socket(socket.AF_INET6); b.bind(('::1', 0)); b.listen()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', 0))
c = socket.create_connection(a.getsockname()); s, _ = a.accept()
print(a.getsockname()[1], b.getsockname()[1], flush=True)
time.sleep(30)";
        let mut server = std::process::Command::new("python3")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut ports: Vec<u16> = line
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        ports.sort_unstable();
        let mut p = Processes::new("host-a".into());
        let listening = p.listening_ports(server.id(), 1);
        let info = p.get(server.id(), "x", 1);
        let _ = server.kill();
        let _ = server.wait();
        // neither the UDP socket nor either end of the connection counts
        assert_eq!(listening, ports);
        assert_eq!(&*info.service, format!("{}:{}", info.name, ports[0]));
        // a process with no sockets is its name
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let comm = format!("/proc/{}/comm", child.id());
        for _ in 0..500 {
            if std::fs::read_to_string(&comm).is_ok_and(|c| c.trim_end() == "sleep") {
                break; // exec'd
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let sleeper = p.get(child.id(), "x", 1);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!((&*sleeper.name, &*sleeper.service), ("sleep", "sleep"));
    }

    #[test]
    fn listening_rows_of_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: garbage
";
        assert_eq!(
            listening_sockets(table).collect::<Vec<_>>(),
            vec![(4242, 8080)]
        );
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn proc_net_addresses() {
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(proc_net_addr("0100007F:1F90"), Some(v4));
        // ::ffff:127.0.0.1 port 4318 as tcp6 prints it, and ::1
        let mapped = proc_net_addr("0000000000000000FFFF00000100007F:10DE").unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:4318".parse().unwrap());
        assert_eq!(
            proc_net_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        for bad in [
            "",
            "0100007F",
            "0100007F:",
            "0100007:1F90",
            "ZZ00007F:1F90",
            "0100007F:1FFFF",
        ] {
            assert_eq!(proc_net_addr(bad), None, "{bad:?}");
        }
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1
   2: garbage
";
        let rows: Vec<_> = tcp_sockets(table, "01").collect();
        assert_eq!(rows, vec![("127.0.0.1:54321".parse().unwrap(), v4, 222)]);
    }

    #[test]
    fn the_peer_of_a_local_connection_is_found_by_its_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, remote) = listener.accept().unwrap();
        let local = accepted.local_addr().unwrap();
        assert_eq!(remote, client.local_addr().unwrap());
        assert_eq!(connection_peer_pid(local, remote), Some(std::process::id()));
        // a peer that is not connected here
        let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(connection_peer_pid(local, nobody), None);
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "3f1c0a9e5b7d4c2a8e6f0b1d3c5a7e9f2b4d6c8a0e1f3a5c7e9b1d3f5a7c9e1b";
        for cgroup in [
            format!("0::/system.slice/docker-{id}.scope\n"),
            format!("12:memory:/docker/{id}\n0::/\n"),
            format!("0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-{id}.scope"),
            format!("0::/kubepods/besteffort/pod1234/{id}"),
        ] {
            assert_eq!(container_id(&cgroup), id, "{cgroup}");
        }
        assert_eq!(
            container_id("0::/user.slice/user-0.slice/session-1.scope\n"),
            ""
        );
        assert_eq!(container_id(""), "");
    }

    #[test]
    fn stat_and_cmdline_parsing() {
        let stat =
            b"42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_ticks(stat), Some(987_654));
        assert_eq!(start_ticks(b"garbage"), None);
        assert_eq!(
            cmdline_text(b"nginx: worker\0-g\0daemon off;\0"),
            "nginx: worker -g daemon off;"
        );
        assert_eq!(cmdline_text(&vec![b'x'; 5000]).len(), MAX_CMDLINE);
    }
}
