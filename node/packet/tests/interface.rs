//! Capture on an Ethernet interface (one end of a veth pair in a private network namespace):
//! outgoing packets make the capture point the client's NIC, and an interface going down
//! is reported once without making `poll_frames` spin. Needs root and `ip` (iproute2).

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use flowmesh_packet::{
    CloseType, ConnectionResult, FilterBuilder, ObservationPoint, PacketCapture, PacketConfig,
    PacketProcessor, ProcessorOutput, TransportProtocol,
};

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the interface capture test creates a network namespace and needs root; run it as root"
    );
}

fn ip(args: &str) {
    let status = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("iproute2's `ip` must be installed");
    assert!(status.success(), "ip {args}: {status}");
}

#[test]
fn outgoing_packets_on_a_real_interface_and_interface_down() {
    require_root();
    // Network namespaces belong to threads: this thread gets a private one (with its own
    // veth pair), and commands it spawns inherit it. Nothing on the host changes.
    let thread = std::thread::spawn(|| {
        // SAFETY: unshare has no memory-safety preconditions; CLONE_NEWNET moves only the
        // calling thread into a new network namespace.
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(unshared, 0, "unshare(CLONE_NEWNET) failed");
        ip("link add fm0 type veth peer name fm1");
        ip("addr add 192.0.2.1/24 dev fm0");
        // No ARP: frames to 192.0.2.2 leave at once (and the peer end drops them).
        ip("link set fm0 arp off");
        ip("link set fm1 up");
        ip("link set fm0 up");

        let config = PacketConfig {
            interfaces: vec!["fm0".to_string()],
            filter: Some(FilterBuilder::new().udp_only().port(9).build(65_535)),
            block_timeout: Duration::from_millis(5),
            poll_timeout: Duration::from_millis(100),
            ..PacketConfig::default()
        };
        let mut capture = PacketCapture::open(&config).expect("open capture on fm0");
        let mut processor = PacketProcessor::new(&config).expect("processor");
        let mut out = ProcessorOutput::default();

        // Nobody answers, but the capture sees the datagrams leave.
        let socket = UdpSocket::bind("192.0.2.1:0").expect("bind on fm0's address");
        let client = socket.local_addr().expect("local address");
        let server: SocketAddr = "192.0.2.2:9".parse().expect("address");
        for _ in 0..3 {
            socket.send_to(&[7u8; 123], server).expect("send");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut frames = 0;
        while frames < 3 {
            assert!(Instant::now() < deadline, "saw {frames} of 3 frames");
            frames += capture
                .poll_frames(|frame| processor.process_frame(frame, &mut out))
                .expect("poll");
        }
        processor.flush(0, &mut out);
        assert_eq!(out.l4.len(), 1, "{:#?}", out.l4);
        let record = &out.l4[0];
        assert_eq!(record.key.protocol, TransportProtocol::Udp);
        assert_eq!((record.key.client, record.key.server), (client, server));
        assert_eq!(record.observation_point, ObservationPoint::ClientNic);
        assert_eq!((record.packets_tx, record.packets_rx), (3, 0));
        assert_eq!(record.payload_bytes_tx, 3 * 123);
        // Ethernet (14) + IPv4 (20) + UDP (8) + 123 bytes, each.
        assert_eq!(record.bytes_tx, 3 * (14 + 20 + 8 + 123));
        assert_eq!(record.result, ConnectionResult::Unknown);
        assert_eq!(record.close_type, CloseType::Flushed);

        // The interface goes down: the socket reports ENETDOWN once; afterwards each poll
        // waits its timeout again rather than returning at once forever.
        ip("link set fm0 down");
        let start = Instant::now();
        for _ in 0..5 {
            capture
                .poll_frames(|_| {})
                .expect("poll after the interface went down");
        }
        let stats = capture.stats().expect("stats");
        assert!(stats.interfaces[0].socket_errors >= 1, "{stats:?}");
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "poll_frames spun: 5 calls took {:?}",
            start.elapsed()
        );
        assert_eq!(stats.kernel_drops(), 0);
    });
    thread.join().expect("namespace thread");
}
