//! Classic BPF programs for the capture socket.
//!
//! The programs address the network header through the kernel's `SKF_NET_OFF` window and
//! read the ethertype from `SKF_AD_PROTOCOL`, so one program works on every link type
//! (Ethernet, loopback, raw IP) and with or without VLAN tags. A program's accept value is
//! the snap length: the kernel copies at most that many bytes of the frame into the ring.

use libc::sock_filter;

const ETHERTYPE_IPV4: u32 = 0x0800;
const ETHERTYPE_IPV6: u32 = 0x86dd;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;

// Instruction classes, sizes, modes and operations (linux/bpf_common.h, linux/filter.h).
const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_H: u16 = 0x08;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_MSH: u16 = 0xa0;
const BPF_JEQ: u16 = 0x10;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;

/// `k` of a load relative to the network header (`SKF_NET_OFF + offset`).
fn net(offset: i32) -> u32 {
    // Negative offsets are how classic BPF reaches the kernel's ancillary windows; the
    // kernel reads `k` as a signed 32-bit value.
    (libc::SKF_NET_OFF + offset) as u32
}

/// Builds the default capture filter: IPv4 or IPv6 packets carrying TCP or UDP,
/// optionally only those with one of a set of ports as source or destination.
///
/// With ports set, non-first IPv4 fragments (which carry no ports) are rejected, and IPv6
/// ports are read right after the fixed header (packets with extension headers before the
/// transport header do not match a port filter).
#[derive(Debug, Clone)]
pub struct FilterBuilder {
    tcp: bool,
    udp: bool,
    ports: Vec<u16>,
}

impl Default for FilterBuilder {
    fn default() -> Self {
        FilterBuilder::new()
    }
}

/// One instruction with symbolic jump targets, resolved by [`assemble`].
#[derive(Debug, Clone, Copy)]
enum Op {
    Stmt(u16, u32),
    /// Conditional jump: `code`, `k`, then the labels for true and false.
    Jump(u16, u32, Label, Label),
    Mark(Label),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Next,
    Accept,
    Drop,
    Ipv6,
    Ipv4Transport,
    Ipv6Transport,
    Port(u8),
}

impl FilterBuilder {
    /// Most ports one filter matches: with more, a conditional jump (8-bit offset) could
    /// not reach the end of the program.
    pub const MAX_PORTS: usize = 32;

    /// TCP and UDP, any port.
    pub fn new() -> Self {
        FilterBuilder {
            tcp: true,
            udp: true,
            ports: Vec::new(),
        }
    }

    /// Only TCP.
    pub fn tcp_only(mut self) -> Self {
        self.tcp = true;
        self.udp = false;
        self
    }

    /// Only UDP.
    pub fn udp_only(mut self) -> Self {
        self.tcp = false;
        self.udp = true;
        self
    }

    /// Also accept packets with `port` as source or destination port. Without any call,
    /// every port matches. At most [`FilterBuilder::MAX_PORTS`] ports; further ones are
    /// ignored.
    pub fn port(mut self, port: u16) -> Self {
        if !self.ports.contains(&port) && self.ports.len() < Self::MAX_PORTS {
            self.ports.push(port);
        }
        self
    }

    /// The program, accepting `snaplen` bytes of each matching frame.
    pub fn build(&self, snaplen: u32) -> Vec<sock_filter> {
        let mut ops = Vec::new();
        let stmt = |code, k| Op::Stmt(code, k);
        // A = ethertype (host order), via the SKF_AD_PROTOCOL ancillary load.
        ops.push(stmt(
            BPF_LD | BPF_W | BPF_ABS,
            (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32,
        ));
        ops.push(Op::Jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            ETHERTYPE_IPV4,
            Label::Next,
            Label::Ipv6,
        ));
        // IPv4: protocol byte.
        ops.push(stmt(BPF_LD | BPF_B | BPF_ABS, net(9)));
        self.protocol_checks(&mut ops, Label::Ipv4Transport);
        ops.push(Op::Mark(Label::Ipv4Transport));
        if self.ports.is_empty() {
            ops.push(stmt(BPF_RET | BPF_K, snaplen));
        } else {
            // Non-first fragments carry no ports.
            ops.push(stmt(BPF_LD | BPF_H | BPF_ABS, net(6)));
            ops.push(Op::Jump(
                BPF_JMP | BPF_JSET | BPF_K,
                0x1fff,
                Label::Drop,
                Label::Next,
            ));
            // X = IPv4 header length.
            ops.push(stmt(BPF_LDX | BPF_B | BPF_MSH, net(0)));
            ops.push(stmt(BPF_LD | BPF_H | BPF_IND, net(0)));
            self.port_checks(&mut ops, 0);
            ops.push(stmt(BPF_LD | BPF_H | BPF_IND, net(2)));
            self.port_checks(&mut ops, 1);
            ops.push(stmt(BPF_RET | BPF_K, 0));
        }
        ops.push(Op::Mark(Label::Ipv6));
        ops.push(Op::Jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            ETHERTYPE_IPV6,
            Label::Next,
            Label::Drop,
        ));
        ops.push(stmt(BPF_LD | BPF_B | BPF_ABS, net(6)));
        self.protocol_checks(&mut ops, Label::Ipv6Transport);
        ops.push(Op::Mark(Label::Ipv6Transport));
        if self.ports.is_empty() {
            ops.push(stmt(BPF_RET | BPF_K, snaplen));
        } else {
            ops.push(stmt(BPF_LD | BPF_H | BPF_ABS, net(40)));
            self.port_checks(&mut ops, 2);
            ops.push(stmt(BPF_LD | BPF_H | BPF_ABS, net(42)));
            self.port_checks(&mut ops, 3);
        }
        ops.push(Op::Mark(Label::Drop));
        ops.push(stmt(BPF_RET | BPF_K, 0));
        ops.push(Op::Mark(Label::Accept));
        ops.push(stmt(BPF_RET | BPF_K, snaplen));
        assemble(&ops)
    }

    /// A holds the IP protocol: jump to `matched` for an enabled transport, else drop.
    fn protocol_checks(&self, ops: &mut Vec<Op>, matched: Label) {
        let protocols: Vec<u32> = [(self.tcp, IPPROTO_TCP), (self.udp, IPPROTO_UDP)]
            .into_iter()
            .filter_map(|(enabled, number)| enabled.then_some(number))
            .collect();
        for (index, protocol) in protocols.iter().enumerate() {
            let otherwise = if index + 1 == protocols.len() {
                Label::Drop
            } else {
                Label::Next
            };
            ops.push(Op::Jump(
                BPF_JMP | BPF_JEQ | BPF_K,
                *protocol,
                matched,
                otherwise,
            ));
        }
        if protocols.is_empty() {
            ops.push(Op::Stmt(BPF_RET | BPF_K, 0));
        }
    }

    /// A holds a port: accept on any configured port, else fall through to the next
    /// instruction after the checks (labelled `Port(group)`).
    fn port_checks(&self, ops: &mut Vec<Op>, group: u8) {
        for (index, port) in self.ports.iter().enumerate() {
            let otherwise = if index + 1 == self.ports.len() {
                Label::Port(group)
            } else {
                Label::Next
            };
            ops.push(Op::Jump(
                BPF_JMP | BPF_JEQ | BPF_K,
                u32::from(*port),
                Label::Accept,
                otherwise,
            ));
        }
        ops.push(Op::Mark(Label::Port(group)));
    }
}

/// Resolves labels into relative jump offsets. Every jump goes forward; the programs
/// built above are far shorter than the 255-instruction reach of a conditional jump.
fn assemble(ops: &[Op]) -> Vec<sock_filter> {
    let mut program = Vec::new();
    let mut jumps = Vec::new();
    let mut marks: Vec<(Label, usize)> = Vec::new();
    for op in ops {
        match *op {
            Op::Stmt(code, k) => program.push(sock_filter {
                code,
                jt: 0,
                jf: 0,
                k,
            }),
            Op::Jump(code, k, on_true, on_false) => {
                jumps.push((program.len(), on_true, on_false));
                program.push(sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                });
            }
            Op::Mark(label) => marks.push((label, program.len())),
        }
    }
    let target = |from: usize, label: Label| -> u8 {
        if label == Label::Next {
            return 0;
        }
        // The first mark of the label after the jump.
        let to = marks
            .iter()
            .find(|(mark, at)| *mark == label && *at > from)
            .map_or(from + 1, |(_, at)| *at);
        u8::try_from(to - from - 1).unwrap_or(u8::MAX)
    };
    for (at, on_true, on_false) in jumps {
        program[at].jt = target(at, on_true);
        program[at].jf = target(at, on_false);
    }
    program
}

/// Caps every non-zero accept value of a user-supplied program at `snaplen`, so that a
/// program written for `tcpdump` (which accepts 262 144 bytes) honours the configured snap
/// length.
pub(crate) fn cap_snaplen(program: &[sock_filter], snaplen: u32) -> Vec<sock_filter> {
    program
        .iter()
        .map(|insn| {
            let mut insn = *insn;
            if insn.code == BPF_RET | BPF_K && insn.k > snaplen {
                insn.k = snaplen;
            }
            insn
        })
        .collect()
}

/// A tiny interpreter of the subset of classic BPF the builder emits, over an IP packet
/// with a known ethertype: the test oracle for the programs.
#[cfg(test)]
pub(crate) fn run(program: &[sock_filter], ethertype: u16, network: &[u8]) -> u32 {
    let load = |k: u32, size: usize| -> Option<u32> {
        let k = k as i32;
        if k == libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL {
            return Some(u32::from(ethertype));
        }
        let at = usize::try_from(k - libc::SKF_NET_OFF).ok()?;
        let bytes = network.get(at..at + size)?;
        Some(
            bytes
                .iter()
                .fold(0, |acc, byte| (acc << 8) | u32::from(*byte)),
        )
    };
    let (mut a, mut x) = (0u32, 0u32);
    let mut pc = 0;
    while let Some(insn) = program.get(pc) {
        pc += 1;
        let size = match insn.code & 0x18 {
            BPF_H => 2,
            BPF_B => 1,
            _ => 4,
        };
        match insn.code {
            code if code == BPF_RET | BPF_K => return insn.k,
            code if code & 0x07 == BPF_LD && code & 0xe0 == BPF_ABS => {
                let Some(value) = load(insn.k, size) else {
                    return 0;
                };
                a = value;
            }
            code if code & 0x07 == BPF_LD && code & 0xe0 == BPF_IND => {
                let Some(value) = load(insn.k.wrapping_add(x), size) else {
                    return 0;
                };
                a = value;
            }
            code if code == BPF_LDX | BPF_B | BPF_MSH => {
                let Some(value) = load(insn.k, 1) else {
                    return 0;
                };
                x = (value & 0x0f) * 4;
            }
            code if code & 0x07 == BPF_JMP => {
                let taken = match code & 0xf0 {
                    BPF_JEQ => a == insn.k,
                    BPF_JSET => a & insn.k != 0,
                    other => panic!("unexpected jump {other:#x}"),
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            other => panic!("unexpected instruction {other:#x}"),
        }
    }
    panic!("program fell off its end");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LinkType;
    use crate::decode::build::{ip_frame, tcp_frame, udp_frame};
    use crate::decode::{TcpFlags, decode};
    use std::net::IpAddr;

    fn network_of(frame: &[u8]) -> (u16, &[u8]) {
        (u16::from_be_bytes([frame[12], frame[13]]), &frame[14..])
    }

    #[test]
    fn default_filter_keeps_tcp_and_udp_only() {
        let program = FilterBuilder::new().build(1500);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a6: IpAddr = "fd00::1".parse().unwrap();
        let b6: IpAddr = "fd00::2".parse().unwrap();
        let tcp = tcp_frame((a, 1), (b, 2), 0, 0, TcpFlags::SYN, 0, b"", 0);
        let udp6 = udp_frame((a6, 1), (b6, 2), b"x");
        let icmp = ip_frame(a, b, 1, &[8, 0, 0, 0], 4);
        for (frame, expected) in [(&tcp, 1500), (&udp6, 1500), (&icmp, 0)] {
            let (ethertype, network) = network_of(frame);
            assert_eq!(run(&program, ethertype, network), expected);
        }
        // ARP.
        assert_eq!(run(&program, 0x0806, &[0; 28]), 0);
        let tcp_only = FilterBuilder::new().tcp_only().build(100);
        let (ethertype, network) = network_of(&udp6);
        assert_eq!(run(&tcp_only, ethertype, network), 0);
        let (ethertype, network) = network_of(&tcp);
        assert_eq!(run(&tcp_only, ethertype, network), 100);
    }

    #[test]
    fn port_filter_matches_either_side() {
        let program = FilterBuilder::new().port(8080).port(53).build(9000);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a6: IpAddr = "fd00::1".parse().unwrap();
        let b6: IpAddr = "fd00::2".parse().unwrap();
        let cases = [
            (
                tcp_frame((a, 40000), (b, 8080), 0, 0, TcpFlags::SYN, 0, b"", 0),
                9000,
            ),
            (
                tcp_frame((b, 8080), (a, 40000), 0, 0, TcpFlags::SYN, 0, b"", 0),
                9000,
            ),
            (
                tcp_frame((a, 40000), (b, 8081), 0, 0, TcpFlags::SYN, 0, b"", 0),
                0,
            ),
            (udp_frame((a6, 40000), (b6, 53), b"q"), 9000),
            (udp_frame((a6, 53), (b6, 40000), b"r"), 9000),
            (udp_frame((a6, 54), (b6, 40000), b"r"), 0),
        ];
        for (frame, expected) in &cases {
            let (ethertype, network) = network_of(frame);
            assert_eq!(run(&program, ethertype, network), *expected, "{frame:?}");
            // The oracle agrees with the decoder about the ports.
            let packet = decode(LinkType::Ethernet, frame, frame.len() as u32).unwrap();
            let matched = [packet.src_port, packet.dst_port]
                .iter()
                .any(|port| [8080, 53].contains(port));
            assert_eq!(matched, *expected != 0);
        }
        // IPv4 with options: the header length comes from the packet.
        let mut with_options = cases[0].0.clone();
        with_options[14] = 0x46;
        with_options.splice(34..34, [1, 1, 1, 0]);
        let (ethertype, network) = network_of(&with_options);
        assert_eq!(run(&program, ethertype, network), 9000);
        // A non-first fragment never matches a port filter.
        let mut fragment = cases[0].0.clone();
        fragment[21] = 0x10;
        let (ethertype, network) = network_of(&fragment);
        assert_eq!(run(&program, ethertype, network), 0);
    }

    #[test]
    fn the_largest_port_set_still_assembles() {
        let mut builder = FilterBuilder::new();
        for port in 1000..1100 {
            builder = builder.port(port);
        }
        let program = builder.build(500);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a6: IpAddr = "fd00::1".parse().unwrap();
        let b6: IpAddr = "fd00::2".parse().unwrap();
        let last = 1000 + FilterBuilder::MAX_PORTS as u16 - 1;
        for (src, dst) in [(a, b), (a6, b6)] {
            for (sport, dport, expected) in
                [(50000, last, 500), (last, 50000, 500), (50000, last + 1, 0)]
            {
                let frame = tcp_frame((src, sport), (dst, dport), 0, 0, TcpFlags::SYN, 0, b"", 0);
                let (ethertype, network) = network_of(&frame);
                assert_eq!(run(&program, ethertype, network), expected);
            }
            let icmp = ip_frame(src, dst, 58, &[0; 8], 8);
            let (ethertype, network) = network_of(&icmp);
            assert_eq!(run(&program, ethertype, network), 0);
        }
    }

    #[test]
    fn user_programs_are_capped_at_the_snaplen() {
        let program = FilterBuilder::new().build(262_144);
        let capped = cap_snaplen(&program, 2000);
        assert!(
            capped
                .iter()
                .all(|insn| insn.code != BPF_RET | BPF_K || insn.k <= 2000)
        );
        assert!(
            capped
                .iter()
                .any(|insn| insn.code == BPF_RET | BPF_K && insn.k == 2000)
        );
        assert_eq!(capped.len(), program.len());
    }
}
