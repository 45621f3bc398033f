//! MQTT 3.1, 3.1.1 and 5.0 over TCP.
//!
//! # Exchanges
//!
//! | request | response | paired by |
//! |---|---|---|
//! | CONNECT | CONNACK | one per connection |
//! | PUBLISH QoS 0 | none: a row at once | |
//! | PUBLISH QoS 1 | PUBACK | packet id |
//! | PUBLISH QoS 2 | PUBREC | packet id |
//! | PUBREL | PUBCOMP | packet id |
//! | SUBSCRIBE | SUBACK | packet id |
//! | UNSUBSCRIBE | UNSUBACK | packet id |
//! | PINGREQ | PINGRESP | order |
//! | DISCONNECT, AUTH | none: a row at once | |
//!
//! A QoS 2 delivery is two rows, PUBLISH→PUBREC and PUBREL→PUBCOMP, as on the wire: the
//! receiver may hold the message between them. The PUBREL row names the topic of its
//! PUBLISH when that was seen.
//!
//! Requests travel both ways: a broker delivers messages to a subscriber with PUBLISH (and
//! PUBREL), which the client acknowledges; in MQTT 5 the broker may also send DISCONNECT
//! and AUTH. [`crate::framed::FramedSession`] has one request direction, so the session of
//! an MQTT socket holds two: one for the requests of the client (the process that sent
//! CONNECT), one for those of the broker. Both read every byte, each keeps the packets of
//! its exchanges and skips the others; framing errors, resyncs and gaps are counted once.
//!
//! A row of a broker→client request has the role of the process *in that exchange*: seen
//! from the subscriber it is [`Role::Server`] (it receives and answers the request), seen
//! from the broker [`Role::Client`]. So for every row the request travelled in
//! `role.request_direction()`, as for every other protocol, and `observation_point` says
//! which end of that exchange the row was seen from.
//!
//! # Detection
//!
//! Only a CONNECT, as DeepFlow does: first byte `0x10`, a Remaining Length of at least 12,
//! protocol name `MQTT` with level 4 or 5 or `MQIsdp` with level 3, valid connect flags
//! (reserved bit clear, Will QoS below 3, no Will QoS or Retain without a Will, before
//! MQTT 5 no password without a user name), and properties and the client identifier's
//! length within the Remaining Length. A connection seen only after its CONNECT is not
//! recognised: the packets after it are too short to tell from other bytes.
//!
//! # Fields (DeepFlow's `mq/mqtt.rs`)
//!
//! | field | value |
//! |---|---|
//! | `request_type` | packet type: `CONNECT`, `PUBLISH`, `SUBSCRIBE` ... |
//! | `request_domain` | the client identifier, from CONNECT or MQTT 5's Assigned Client Identifier |
//! | `request_resource`, `endpoint` | PUBLISH topic (topic aliases resolved); SUBSCRIBE and UNSUBSCRIBE filters joined by `,`; the topic of a PUBREL's PUBLISH |
//! | `version` | `3.1`, `3.1.1` or `5.0` |
//! | `response_code` | CONNACK return code; MQTT 5 reason code; the first failure of a SUBACK (or MQTT 5 UNSUBACK), else its first code; a one-way MQTT 5 DISCONNECT or AUTH: its own reason code |
//! | `response_status` | MQTT 3 CONNACK: 0 ok, 1, 2, 4, 5 client error, 3 server error; MQTT 3 SUBACK: 0x80 client error; MQTT 5: below 0x80 ok, above it client or server error by the code's meaning; one-way rows ok |
//! | `response_exception` | the name of a failure code (`Not authorized`, `Malformed Packet` ...) |
//!
//! Where flowmesh differs: DeepFlow names the client only on the CONNECT row, pairs nothing
//! by packet id (its own comment says so) and reads only 3.1.1; it classifies MQTT 5
//! failures by the packet's direction, flowmesh by the reason code (5.0 §2.4: 0x80
//! "Unspecified error", 0x83, 0x88, 0x89, 0x8B, 0x98, 0x9A–0x9E, 0xA0–0xA2 are the
//! server's; the others the client's). MQTT 3 acknowledgments other than CONNACK and SUBACK
//! carry no code: their `response_code` is `None` though they have a response.

mod packet;

pub use packet::{Packet, PacketType};

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{
    ConversationConfig, ConversationStats, Direction, L7Protocol, L7Record, ResponseStatus, Role,
    framed::FramedSession,
    infer::{Detection, Inference},
    session::{Codec, Decode, ProtocolSession, SeqStep, SyscallMeta, WireLen},
};

/// Topic aliases remembered per sender (5.0 §3.3.2.3.4); the oldest are forgotten first.
const MAX_ALIASES: usize = 256;
/// Topics of QoS 2 PUBLISHes remembered for their PUBREL; the oldest are forgotten first.
const MAX_RELEASE_TOPICS: usize = 256;
/// Packets up to this long are decoded whole when their rest is still to come (see
/// [`MqttCodec`]); longer ones from what their first syscalls hold.
const WHOLE_PACKET_MAX: u64 = 1024;

/// Which end of the connection sends the requests of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// The client (CONNECT, SUBSCRIBE, its PUBLISHes ...), answered by the broker.
    Client,
    /// The broker (PUBLISH deliveries, PUBREL, MQTT 5 DISCONNECT), answered by the client.
    Broker,
}

/// The [`Codec`] of the exchanges one end of an MQTT connection starts.
///
/// A packet split across syscalls (a SUBSCRIBE whose filters arrive in two reads) is
/// waited for when it is short and its rest will come; when the syscall carrying it was
/// cut by the capture, its rest never will, and it is decoded from what was captured (a
/// SUBSCRIBE then names the filters captured). The session tells the codec which case
/// holds through a shared flag, set before each chunk.
#[derive(Debug)]
pub struct MqttCodec {
    requester: Requester,
    /// The chunk being fed was cut by the capture.
    chunk_cut: Arc<AtomicBool>,
    /// Packets up to this long are waited for whole.
    wait_limit: u64,
    /// Protocol level from the CONNECT (0 until seen).
    level: u8,
    client_id: String,
    /// Topic aliases set by the client (0) and the broker (1).
    aliases: [VecDeque<(u16, String)>; 2],
    /// Topics of this codec's QoS 2 PUBLISHes, by packet id.
    release_topics: VecDeque<(u16, String)>,
}

impl MqttCodec {
    /// A codec for the exchanges `requester` starts; `chunk_cut` says whether the chunk
    /// being fed was cut by the capture, and packets up to `wait_limit` bytes that are not
    /// are waited for whole.
    pub fn new(requester: Requester, chunk_cut: Arc<AtomicBool>, wait_limit: u64) -> Self {
        MqttCodec {
            requester,
            chunk_cut,
            wait_limit,
            level: 0,
            client_id: String::new(),
            aliases: Default::default(),
            release_topics: VecDeque::new(),
        }
    }

    fn decode(&mut self, buf: &[u8], from_client: bool) -> Decode<Packet> {
        if let Ok(header) = packet::FixedHeader::parse(buf)
            && (buf.len() as u64) < header.total_len()
            && header.total_len() <= self.wait_limit
            && !self.chunk_cut.load(Ordering::Relaxed)
        {
            return Decode::NeedMore;
        }
        let mut packet = match packet::parse(buf, self.level) {
            Ok(packet) => packet,
            Err(packet::Error::Incomplete) => return Decode::NeedMore,
            Err(packet::Error::Invalid) => return Decode::Invalid,
        };
        let Some(requester) = requester_of(packet.kind, from_client) else {
            // a packet that never travels this way
            return Decode::Invalid;
        };
        self.learn(&mut packet, from_client, requester == self.requester);
        let len = WireLen::Exact(packet.len);
        if requester == self.requester {
            Decode::Message { len, msg: packet }
        } else {
            Decode::Skip { len }
        }
    }

    /// Keeps what later packets need (level, client id, aliases, QoS 2 topics) and fills
    /// in what earlier ones told (an aliased topic, a PUBREL's topic).
    fn learn(&mut self, packet: &mut Packet, from_client: bool, own: bool) {
        match packet.kind {
            PacketType::Connect => {
                self.level = packet.level.unwrap_or(0);
                self.client_id = packet.client_id.clone().unwrap_or_default();
            }
            PacketType::Connack => {
                if let Some(assigned) = &packet.client_id {
                    self.client_id = assigned.clone();
                }
            }
            PacketType::Publish => {
                let aliases = &mut self.aliases[usize::from(!from_client)];
                if let Some(alias) = packet.topic_alias {
                    if packet.topic.is_empty() {
                        if let Some((_, topic)) = aliases.iter().find(|(a, _)| *a == alias) {
                            packet.topic = topic.clone();
                        }
                    } else {
                        aliases.retain(|(a, _)| *a != alias);
                        if aliases.len() >= MAX_ALIASES {
                            aliases.pop_front();
                        }
                        aliases.push_back((alias, packet.topic.clone()));
                    }
                }
                if own && packet.qos == 2 {
                    if self.release_topics.len() >= MAX_RELEASE_TOPICS {
                        self.release_topics.pop_front();
                    }
                    self.release_topics
                        .push_back((packet.packet_id.unwrap_or(0), packet.topic.clone()));
                }
            }
            PacketType::Pubrel if own => {
                let id = packet.packet_id.unwrap_or(0);
                if let Some(i) = self.release_topics.iter().position(|(p, _)| *p == id)
                    && let Some((_, topic)) = self.release_topics.remove(i)
                {
                    packet.topic = topic;
                }
            }
            _ => {}
        }
    }

    fn version(&self) -> &'static str {
        match self.level {
            3 => "3.1",
            4 => "3.1.1",
            5 => "5.0",
            _ => "",
        }
    }

    /// The status and exception of `code`, carried by a packet of `kind`.
    fn classify(&self, kind: PacketType, code: u8) -> (ResponseStatus, &'static str) {
        if self.level == 5 {
            if code < 0x80 {
                return (ResponseStatus::Ok, "");
            }
            let status = if packet::v5_reason_is_server_error(code) {
                ResponseStatus::ServerError
            } else {
                ResponseStatus::ClientError
            };
            return (status, packet::v5_reason_name(code).unwrap_or(""));
        }
        match (kind, code) {
            (PacketType::Connack, 0) => (ResponseStatus::Ok, ""),
            (PacketType::Connack, 1 | 2 | 4 | 5) => (
                ResponseStatus::ClientError,
                packet::v3_connack_name(code).unwrap_or(""),
            ),
            (PacketType::Connack, 3) => (
                ResponseStatus::ServerError,
                packet::v3_connack_name(code).unwrap_or(""),
            ),
            (PacketType::Suback, 0..=2) => (ResponseStatus::Ok, ""),
            (PacketType::Suback, 0x80) => (ResponseStatus::ClientError, "Failure"),
            _ => (ResponseStatus::Unknown, ""),
        }
    }
}

/// Who sends the requests of the exchange a packet of `kind` from the client (or broker)
/// belongs to; `None` for a packet that never travels that way.
fn requester_of(kind: PacketType, from_client: bool) -> Option<Requester> {
    use PacketType::*;
    Some(match (kind, from_client) {
        (Connect | Subscribe | Unsubscribe | Pingreq, true) => Requester::Client,
        (Connack | Suback | Unsuback | Pingresp, false) => Requester::Client,
        (Publish | Pubrel | Disconnect | Auth, true) => Requester::Client,
        (Publish | Pubrel | Disconnect | Auth, false) => Requester::Broker,
        // acknowledgments answer the other end's PUBLISH or PUBREL
        (Puback | Pubrec | Pubcomp, true) => Requester::Broker,
        (Puback | Pubrec | Pubcomp, false) => Requester::Client,
        _ => return None,
    })
}

/// The pairing key: the exchange kind and the packet id (0 for the kinds without).
fn exchange_key(packet: &Packet) -> u64 {
    use PacketType::*;
    let kind: u64 = match packet.kind {
        Connect | Connack => 1,
        Pingreq | Pingresp => 2,
        Publish if packet.qos == 1 => 3,
        Puback => 3,
        Publish if packet.qos == 2 => 4,
        Pubrec => 4,
        Pubrel | Pubcomp => 5,
        Subscribe | Suback => 6,
        Unsubscribe | Unsuback => 7,
        Publish | Disconnect | Auth => 0,
    };
    (kind << 16) | u64::from(packet.packet_id.unwrap_or(0))
}

impl Codec for MqttCodec {
    type Request = Packet;
    type Response = Packet;

    fn protocol(&self) -> L7Protocol {
        L7Protocol::Mqtt
    }

    fn decode_request(&mut self, buf: &[u8]) -> Decode<Packet> {
        self.decode(buf, self.requester == Requester::Client)
    }

    fn decode_response(&mut self, buf: &[u8], _pending: Option<&Packet>) -> Decode<Packet> {
        self.decode(buf, self.requester == Requester::Broker)
    }

    fn request_key(&self, request: &Packet) -> Option<u64> {
        Some(exchange_key(request))
    }

    fn response_key(&self, response: &Packet) -> Option<u64> {
        Some(exchange_key(response))
    }

    fn expects_response(&self, request: &Packet) -> bool {
        match request.kind {
            PacketType::Publish => request.qos > 0,
            PacketType::Disconnect | PacketType::Auth => false,
            _ => true,
        }
    }

    fn fill(&self, request: &Packet, response: Option<&Packet>, record: &mut L7Record) {
        record.version = self.version().to_string();
        record.request_type = request.kind.name().to_string();
        record.request_domain = self.client_id.clone();
        record.request_resource = request.topic.clone();
        record.endpoint = request.topic.clone();
        // a one-way packet's outcome is its own (MQTT 5 DISCONNECT and AUTH carry a reason)
        let outcome = if self.expects_response(request) {
            response
        } else {
            record.response_status = ResponseStatus::Ok;
            Some(request)
        };
        if let Some(Packet {
            kind,
            code: Some(code),
            ..
        }) = outcome
        {
            let (status, exception) = self.classify(*kind, *code);
            record.response_code = Some(u16::from(*code));
            record.response_status = status;
            record.response_exception = exception.to_string();
        } else if response.is_some() {
            record.response_status = ResponseStatus::Ok;
        }
    }
}

/// The session of an MQTT socket: the client's exchanges and the broker's.
#[derive(Debug)]
struct MqttSession {
    client_requests: FramedSession<MqttCodec>,
    broker_requests: FramedSession<MqttCodec>,
    /// Shared with both codecs: the chunk being fed was cut by the capture.
    chunk_cut: Arc<AtomicBool>,
}

impl MqttSession {
    /// Runs `f` on both sessions; the second one's counters only add rows, dropped
    /// requests and unmatched responses (it saw the same bytes, errors and gaps).
    fn both(
        &mut self,
        stats: &mut ConversationStats,
        mut f: impl FnMut(&mut FramedSession<MqttCodec>, &mut ConversationStats),
    ) {
        f(&mut self.client_requests, stats);
        let mut shadow = ConversationStats::default();
        f(&mut self.broker_requests, &mut shadow);
        stats.records += shadow.records;
        stats.dropped_requests += shadow.dropped_requests;
        stats.unmatched_responses += shadow.unmatched_responses;
    }
}

impl ProtocolSession for MqttSession {
    fn protocol(&self) -> L7Protocol {
        L7Protocol::Mqtt
    }

    fn role(&self) -> Role {
        self.client_requests.role()
    }

    fn feed(
        &mut self,
        direction: Direction,
        meta: &SyscallMeta,
        step: SeqStep,
        payload: &[u8],
        gap_after: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        self.chunk_cut.store(gap_after > 0, Ordering::Relaxed);
        self.both(stats, |session, stats| {
            session.feed(direction, meta, step, payload, gap_after, stats, out);
        });
    }

    fn expire(
        &mut self,
        now_ns: u64,
        timeout_ns: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        self.both(stats, |session, stats| {
            session.expire(now_ns, timeout_ns, stats, out);
        });
    }

    fn close(&mut self, now_ns: u64, stats: &mut ConversationStats, out: &mut Vec<L7Record>) {
        self.both(stats, |session, stats| session.close(now_ns, stats, out));
    }
}

/// Recognises a CONNECT at the start of a chunk; see the module docs for the rules.
pub(crate) fn detect(bytes: &[u8], direction: Direction) -> Detection {
    match packet::is_connect(bytes) {
        Some(true) => Detection::Match(Inference {
            protocol: L7Protocol::Mqtt,
            role: Role::from_request_direction(direction),
        }),
        Some(false) => Detection::NoMatch,
        None => Detection::NeedMore,
    }
}

/// The session of a socket [`detect`] matched: `role` is the socket's (the client's
/// requests travel `role.request_direction()`).
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    let broker_role = Role::from_request_direction(role.request_direction().opposite());
    let chunk_cut = Arc::new(AtomicBool::new(false));
    let wait_limit = WHOLE_PACKET_MAX.min(config.max_head_bytes as u64);
    let codec = |requester| MqttCodec::new(requester, chunk_cut.clone(), wait_limit);
    Box::new(MqttSession {
        client_requests: FramedSession::new(codec(Requester::Client), role, config),
        broker_requests: FramedSession::new(codec(Requester::Broker), broker_role, config),
        chunk_cut: chunk_cut.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(requester: Requester) -> MqttCodec {
        MqttCodec::new(requester, Arc::default(), WHOLE_PACKET_MAX)
    }

    const CONNECT_V5: &[u8] = b"\x10\x12\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x05dev-1";
    const CONNECT_V3: &[u8] = b"\x10\x11\x00\x04MQTT\x04\x02\x00\x3c\x00\x05dev-1";

    fn decoded(codec: &mut MqttCodec, bytes: &[u8], request: bool) -> Decode<Packet> {
        if request {
            codec.decode_request(bytes)
        } else {
            codec.decode_response(bytes, None)
        }
    }

    #[test]
    fn each_codec_keeps_its_exchanges() {
        let mut client = codec(Requester::Client);
        let mut broker = codec(Requester::Broker);
        assert!(matches!(
            decoded(&mut client, CONNECT_V3, true),
            Decode::Message { .. }
        ));
        assert!(matches!(
            decoded(&mut broker, CONNECT_V3, false),
            Decode::Skip { .. }
        ));
        // the broker's PUBLISH: a request of the broker's codec, skipped by the client's
        let publish = b"\x32\x07\x00\x01t\x00\x05hi";
        assert!(matches!(
            decoded(&mut client, publish, false),
            Decode::Skip { .. }
        ));
        assert!(matches!(
            decoded(&mut broker, publish, true),
            Decode::Message { .. }
        ));
        // the client's PUBACK answers it
        assert!(matches!(
            decoded(&mut broker, b"\x40\x02\x00\x05", false),
            Decode::Message { .. }
        ));
        assert!(matches!(
            decoded(&mut client, b"\x40\x02\x00\x05", true),
            Decode::Skip { .. }
        ));
        // a CONNACK from the client, a SUBSCRIBE from the broker: never
        assert_eq!(
            decoded(&mut client, b"\x20\x02\x00\x00", true),
            Decode::Invalid
        );
        assert_eq!(
            decoded(&mut broker, b"\x82\x06\x00\x01\x00\x01t\x00", true),
            Decode::Invalid
        );
        assert_eq!(decoded(&mut client, b"\x82\x06", true), Decode::NeedMore);
    }

    #[test]
    fn short_packets_are_waited_for_unless_the_capture_cut_them() {
        let cut = Arc::new(AtomicBool::new(false));
        let mut codec = MqttCodec::new(Requester::Client, cut.clone(), WHOLE_PACKET_MAX);
        codec.decode_request(CONNECT_V3);
        let subscribe = b"\x82\x0c\x00\x01\x00\x01a\x00\x00\x03b/c\x01";
        assert_eq!(codec.decode_request(&subscribe[..8]), Decode::NeedMore);
        let topic = |d: Decode<Packet>| match d {
            Decode::Message { msg, len } => (msg.topic, len),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            topic(codec.decode_request(subscribe)),
            ("a,b/c".to_string(), WireLen::Exact(14))
        );
        cut.store(true, Ordering::Relaxed);
        assert_eq!(
            topic(codec.decode_request(&subscribe[..8])),
            ("a".to_string(), WireLen::Exact(14))
        );
        // long packets are decoded from their head
        let mut codec = MqttCodec::new(Requester::Client, Arc::default(), 8);
        codec.decode_request(CONNECT_V3);
        assert_eq!(topic(codec.decode_request(&subscribe[..8])).0, "a");
    }

    #[test]
    fn fields_and_reason_codes() {
        let mut codec = codec(Requester::Client);
        let Decode::Message { msg: connect, .. } = codec.decode_request(CONNECT_V5) else {
            panic!("no CONNECT");
        };
        let connack = packet::parse(b"\x20\x03\x00\x87\x00", 5).unwrap();
        let mut record = L7Record::new(L7Protocol::Mqtt, Role::Client);
        codec.fill(&connect, Some(&connack), &mut record);
        assert_eq!(record.version, "5.0");
        assert_eq!(record.request_type, "CONNECT");
        assert_eq!(record.request_domain, "dev-1");
        assert_eq!(record.response_code, Some(0x87));
        assert_eq!(record.response_status, ResponseStatus::ClientError);
        assert_eq!(record.response_exception, "Not authorized");
        let busy = packet::parse(b"\x20\x03\x00\x89\x00", 5).unwrap();
        let mut record = L7Record::new(L7Protocol::Mqtt, Role::Client);
        codec.fill(&connect, Some(&busy), &mut record);
        assert_eq!(record.response_status, ResponseStatus::ServerError);
        // a QoS 0 PUBLISH is a row of its own, ok
        let q0 = packet::parse(b"\x30\x05\x00\x01tok", 5).unwrap();
        assert!(!codec.expects_response(&q0));
        let mut record = L7Record::new(L7Protocol::Mqtt, Role::Client);
        codec.fill(&q0, None, &mut record);
        assert_eq!(
            (record.request_resource.as_str(), record.response_status),
            ("t", ResponseStatus::Ok)
        );
        // a DISCONNECT with a failure reason is a one-way row with that reason
        let bye = packet::parse(b"\xe0\x01\x8e", 5).unwrap();
        let mut record = L7Record::new(L7Protocol::Mqtt, Role::Client);
        codec.fill(&bye, None, &mut record);
        assert_eq!(record.response_code, Some(0x8e));
        assert_eq!(record.response_exception, "Session taken over");
        // a QoS 1 PUBLISH without answer (timeout, close) keeps its status
        let q1 = packet::parse(b"\x32\x07\x00\x01t\x00\x05\x00", 5).unwrap();
        let mut record = L7Record::new(L7Protocol::Mqtt, Role::Client);
        codec.fill(&q1, None, &mut record);
        assert_eq!(record.response_status, ResponseStatus::Unknown);
        assert_eq!(record.response_code, None);
    }

    #[test]
    fn v3_return_codes() {
        let mut codec = codec(Requester::Client);
        codec.decode_request(CONNECT_V3);
        let connect = packet::parse(CONNECT_V3, 0).unwrap();
        for (code, status, exception) in [
            (0, ResponseStatus::Ok, ""),
            (
                1,
                ResponseStatus::ClientError,
                "unacceptable protocol version",
            ),
            (3, ResponseStatus::ServerError, "Server unavailable"),
            (5, ResponseStatus::ClientError, "not authorized"),
            (9, ResponseStatus::Unknown, ""),
        ] {
            let connack = packet::parse(&[0x20, 2, 0, code], 4).unwrap();
            let mut record = L7Record::new(L7Protocol::Mqtt, Role::Client);
            codec.fill(&connect, Some(&connack), &mut record);
            assert_eq!(record.version, "3.1.1");
            assert_eq!(record.response_code, Some(u16::from(code)));
            assert_eq!(
                (record.response_status, record.response_exception.as_str()),
                (status, exception)
            );
        }
        let subscribe = packet::parse(b"\x82\x06\x00\x01\x00\x01t\x00", 4).unwrap();
        let suback = packet::parse(b"\x90\x03\x00\x01\x80", 4).unwrap();
        let mut record = L7Record::new(L7Protocol::Mqtt, Role::Client);
        codec.fill(&subscribe, Some(&suback), &mut record);
        assert_eq!(record.response_status, ResponseStatus::ClientError);
        let pingresp = packet::parse(b"\xd0\x00", 4).unwrap();
        let mut record = L7Record::new(L7Protocol::Mqtt, Role::Client);
        codec.fill(
            &packet::parse(b"\xc0\x00", 4).unwrap(),
            Some(&pingresp),
            &mut record,
        );
        assert_eq!(
            (record.response_code, record.response_status),
            (None, ResponseStatus::Ok)
        );
    }

    #[test]
    fn aliases_and_release_topics() {
        let mut codec = codec(Requester::Client);
        codec.decode_request(CONNECT_V5);
        // PUBLISH QoS 2 "a/b" setting alias 4, then one using the alias only
        let first = b"\x34\x0b\x00\x03a/b\x00\x01\x03\x23\x00\x04";
        let second = b"\x34\x08\x00\x00\x00\x02\x03\x23\x00\x04";
        let topic = |d: Decode<Packet>| match d {
            Decode::Message { msg, .. } => msg.topic,
            other => panic!("{other:?}"),
        };
        assert_eq!(topic(codec.decode_request(first)), "a/b");
        assert_eq!(topic(codec.decode_request(second)), "a/b");
        // the PUBRELs name the topics of their PUBLISHes
        assert_eq!(topic(codec.decode_request(b"\x62\x02\x00\x02")), "a/b");
        assert_eq!(topic(codec.decode_request(b"\x62\x02\x00\x01")), "a/b");
        assert_eq!(topic(codec.decode_request(b"\x62\x02\x00\x01")), "");
        // aliases are per sender: the broker's alias 4 is unknown
        let mut broker = MqttCodec::new(Requester::Broker, Arc::default(), WHOLE_PACKET_MAX);
        broker.decode_response(CONNECT_V5, None);
        assert_eq!(topic(broker.decode_request(second)), "");
    }

    #[test]
    fn keys_pair_each_exchange_kind() {
        let key = |bytes: &[u8]| exchange_key(&packet::parse(bytes, 4).unwrap());
        assert_eq!(
            key(b"\x32\x07\x00\x01t\x00\x05hi"),
            key(b"\x40\x02\x00\x05")
        );
        assert_eq!(
            key(b"\x34\x07\x00\x01t\x00\x05hi"),
            key(b"\x50\x02\x00\x05")
        );
        assert_eq!(key(b"\x62\x02\x00\x05"), key(b"\x70\x02\x00\x05"));
        assert_ne!(
            key(b"\x32\x07\x00\x01t\x00\x05hi"),
            key(b"\x50\x02\x00\x05")
        );
        assert_eq!(key(b"\xc0\x00"), key(b"\xd0\x00"));
        assert_ne!(key(b"\xc0\x00"), key(b"\x20\x02\x00\x00"));
    }

    #[test]
    fn detection() {
        let client = Detection::Match(Inference {
            protocol: L7Protocol::Mqtt,
            role: Role::Client,
        });
        assert_eq!(detect(CONNECT_V3, Direction::Egress), client);
        assert_eq!(detect(CONNECT_V5, Direction::Egress), client);
        assert_eq!(
            detect(&CONNECT_V3[..1], Direction::Egress),
            Detection::NeedMore
        );
        assert_eq!(
            detect(&CONNECT_V3[..2], Direction::Egress),
            Detection::NeedMore
        );
        let streams: [&[u8]; 8] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
            b"\x20\x02\x00\x00",
            b"\x30\x05\x00\x01tok",
            b"\x10\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x10\x01\x00\x00\xd4\x07\x00\x00\x00\x00\x00\x00",
        ];
        for stream in streams {
            assert_eq!(
                detect(stream, Direction::Egress),
                Detection::NoMatch,
                "{stream:?}"
            );
        }
    }
}
