//! Apache Kafka wire protocol: a [`Codec`] for [`FramedSession`].
//!
//! Every message is an `int32` size followed by that many bytes
//! (<https://kafka.apache.org/protocol.html#protocol_common>). A request starts with the
//! request header — `api_key: int16`, `api_version: int16`, `correlation_id: int32`,
//! `client_id: nullable string` (header v1) and, for flexible versions, tagged fields
//! (header v2). A response starts with the correlation id and, for flexible versions other
//! than `ApiVersions`, tagged fields (response header v1). Requests and responses pair by
//! correlation id; since a response does not repeat its API, the codec remembers the key and
//! version of each request in flight (bounded) to read the response header and error code.
//!
//! # Detection
//!
//! Only requests are recognised (a response starts with a bare correlation id, too weak to
//! tell apart). A chunk is a Kafka request when its size is 10..=100 MiB, its API key is
//! known and its version at most two above the newest this module knows, its client id is
//! 1..=size-10 printable ASCII bytes (as DeepFlow requires), tagged fields of a flexible
//! header parse, and any bytes after the message again start a request. Chunks shorter than
//! the header are `NeedMore` while what they hold is consistent.
//!
//! # Fields (DeepFlow's `mq/kafka.rs`)
//!
//! | column | value |
//! |---|---|
//! | `request_type` | API name by key (`Produce`, `Fetch`, `Metadata`, … the full table of keys 0–92) |
//! | `request_resource` | first topic name of `Produce` v0–12 and `Fetch` v0–12 (later versions carry topic ids) |
//! | `version` | `api_version` |
//! | `response_code` | top-level `error_code` (0 included) where it sits at a fixed offset of the response body |
//! | `response_status` | `ok` for error code 0 or no error code, `server_error` otherwise |
//! | `response_exception` | the error's name (`NOT_COORDINATOR`, …) when the code is not 0 |
//!
//! A `Produce` with `acks = 0` expects no response and becomes a row at once.
//!
//! Where flowmesh differs from DeepFlow, and why:
//! - DeepFlow reads an error code only from `Fetch` v7+. flowmesh reads it from every
//!   response whose top-level `error_code` has a fixed offset: `Fetch` v7+, `ApiVersions`,
//!   `FindCoordinator` v0–3, the group APIs (`JoinGroup`, `Heartbeat`, `LeaveGroup`,
//!   `SyncGroup`, `ListGroups`), `SaslHandshake`, `SaslAuthenticate`, `InitProducerId`,
//!   `EndTxn` and others listed in `error_code_offset`. Status classes stay DeepFlow's
//!   (any non-zero code is `server_error`).
//! - `UNKNOWN_SERVER_ERROR` (-1) does not fit the unsigned `response_code` column: it leaves
//!   the code empty and says so in `response_exception`.
//! - DeepFlow's name table stops at key 58 and names 52 `AlterIsr`; flowmesh uses Kafka's
//!   own `ApiKeys` (52 is `Vote`, 56 `AlterPartition`). Unknown keys show as their number.
//! - DeepFlow assumes a null transactional id when locating the `Produce` topic; flowmesh
//!   reads the transactional id's length.
//! - Trace ids hidden in the client id (DeepFlow's `sw8`/`traceparent` search) are not read.

use std::collections::VecDeque;

use crate::framed::FramedSession;
use crate::infer::{Detection, Inference};
use crate::session::{Codec, Decode, ProtocolSession, WireLen};
use crate::{ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus, Role};

/// Largest request size detection accepts (Kafka's default `socket.request.max.bytes`).
const DETECT_MAX_SIZE: i32 = 100 * 1024 * 1024;
/// Versions above the newest known that detection still accepts (newer clients).
const DETECT_VERSION_HEADROOM: u16 = 2;
/// Requests in flight whose API is remembered for their responses.
const MAX_IN_FLIGHT: usize = 1024;
/// Longest topic name kept (Kafka limits names to 249 characters).
const MAX_TOPIC: usize = 255;

const PRODUCE: u16 = 0;
const FETCH: u16 = 1;
const CONTROLLED_SHUTDOWN: u16 = 7;
const API_VERSIONS: u16 = 18;

/// One API of Kafka's `ApiKeys`.
#[derive(Debug, Clone, Copy)]
struct Api {
    name: &'static str,
    /// Newest request version known.
    max_version: u16,
    /// First flexible version (tagged fields, compact strings), `NONE` if none is.
    flexible_from: u16,
}

const NONE: u16 = u16::MAX;

const fn api(name: &'static str, max_version: u16, flexible_from: u16) -> Api {
    Api {
        name,
        max_version,
        flexible_from,
    }
}

/// Kafka's API keys 0..=92 with their newest version and first flexible version, from the
/// request schemas in `clients/src/main/resources/common/message/*Request.json`.
const APIS: [Api; 93] = [
    api("Produce", 11, 9),                     // 0
    api("Fetch", 17, 12),                      // 1
    api("ListOffsets", 10, 6),                 // 2
    api("Metadata", 12, 9),                    // 3
    api("LeaderAndIsr", 7, 4),                 // 4
    api("StopReplica", 4, 2),                  // 5
    api("UpdateMetadata", 8, 6),               // 6
    api("ControlledShutdown", 3, 3),           // 7
    api("OffsetCommit", 9, 8),                 // 8
    api("OffsetFetch", 9, 6),                  // 9
    api("FindCoordinator", 6, 3),              // 10
    api("JoinGroup", 9, 6),                    // 11
    api("Heartbeat", 4, 4),                    // 12
    api("LeaveGroup", 5, 4),                   // 13
    api("SyncGroup", 5, 4),                    // 14
    api("DescribeGroups", 5, 5),               // 15
    api("ListGroups", 5, 3),                   // 16
    api("SaslHandshake", 1, NONE),             // 17
    api("ApiVersions", 4, 3),                  // 18
    api("CreateTopics", 7, 5),                 // 19
    api("DeleteTopics", 6, 4),                 // 20
    api("DeleteRecords", 2, 2),                // 21
    api("InitProducerId", 5, 2),               // 22
    api("OffsetForLeaderEpoch", 4, 4),         // 23
    api("AddPartitionsToTxn", 5, 3),           // 24
    api("AddOffsetsToTxn", 4, 3),              // 25
    api("EndTxn", 5, 3),                       // 26
    api("WriteTxnMarkers", 1, 1),              // 27
    api("TxnOffsetCommit", 4, 3),              // 28
    api("DescribeAcls", 3, 2),                 // 29
    api("CreateAcls", 3, 2),                   // 30
    api("DeleteAcls", 3, 2),                   // 31
    api("DescribeConfigs", 4, 4),              // 32
    api("AlterConfigs", 2, 2),                 // 33
    api("AlterReplicaLogDirs", 2, 2),          // 34
    api("DescribeLogDirs", 4, 2),              // 35
    api("SaslAuthenticate", 2, 2),             // 36
    api("CreatePartitions", 3, 2),             // 37
    api("CreateDelegationToken", 3, 2),        // 38
    api("RenewDelegationToken", 2, 2),         // 39
    api("ExpireDelegationToken", 2, 2),        // 40
    api("DescribeDelegationToken", 3, 2),      // 41
    api("DeleteGroups", 2, 2),                 // 42
    api("ElectLeaders", 2, 2),                 // 43
    api("IncrementalAlterConfigs", 1, 1),      // 44
    api("AlterPartitionReassignments", 0, 0),  // 45
    api("ListPartitionReassignments", 0, 0),   // 46
    api("OffsetDelete", 0, NONE),              // 47
    api("DescribeClientQuotas", 1, 1),         // 48
    api("AlterClientQuotas", 1, 1),            // 49
    api("DescribeUserScramCredentials", 0, 0), // 50
    api("AlterUserScramCredentials", 0, 0),    // 51
    api("Vote", 1, 0),                         // 52
    api("BeginQuorumEpoch", 1, 1),             // 53
    api("EndQuorumEpoch", 1, 1),               // 54
    api("DescribeQuorum", 2, 0),               // 55
    api("AlterPartition", 3, 0),               // 56
    api("UpdateFeatures", 2, 0),               // 57
    api("Envelope", 0, 0),                     // 58
    api("FetchSnapshot", 1, 0),                // 59
    api("DescribeCluster", 1, 0),              // 60
    api("DescribeProducers", 0, 0),            // 61
    api("BrokerRegistration", 4, 0),           // 62
    api("BrokerHeartbeat", 1, 0),              // 63
    api("UnregisterBroker", 0, 0),             // 64
    api("DescribeTransactions", 0, 0),         // 65
    api("ListTransactions", 1, 0),             // 66
    api("AllocateProducerIds", 0, 0),          // 67
    api("ConsumerGroupHeartbeat", 1, 0),       // 68
    api("ConsumerGroupDescribe", 0, 0),        // 69
    api("ControllerRegistration", 0, 0),       // 70
    api("GetTelemetrySubscriptions", 0, 0),    // 71
    api("PushTelemetry", 0, 0),                // 72
    api("AssignReplicasToDirs", 0, 0),         // 73
    api("ListClientMetricsResources", 0, 0),   // 74
    api("DescribeTopicPartitions", 0, 0),      // 75
    api("ShareGroupHeartbeat", 0, 0),          // 76
    api("ShareGroupDescribe", 0, 0),           // 77
    api("ShareFetch", 0, 0),                   // 78
    api("ShareAcknowledge", 0, 0),             // 79
    api("AddRaftVoter", 0, 0),                 // 80
    api("RemoveRaftVoter", 0, 0),              // 81
    api("UpdateRaftVoter", 0, 0),              // 82
    api("InitializeShareGroupState", 0, 0),    // 83
    api("ReadShareGroupState", 0, 0),          // 84
    api("WriteShareGroupState", 0, 0),         // 85
    api("DeleteShareGroupState", 0, 0),        // 86
    api("ReadShareGroupStateSummary", 0, 0),   // 87
    api("StreamsGroupHeartbeat", 0, 0),        // 88
    api("StreamsGroupDescribe", 0, 0),         // 89
    api("DescribeShareGroupOffsets", 0, 0),    // 90
    api("AlterShareGroupOffsets", 0, 0),       // 91
    api("DeleteShareGroupOffsets", 0, 0),      // 92
];

/// Kafka's error names by code + 1 (`Errors.java`, -1..=128).
const ERROR_NAMES: [&str; 130] = [
    "UNKNOWN_SERVER_ERROR",
    "NONE",
    "OFFSET_OUT_OF_RANGE",
    "CORRUPT_MESSAGE",
    "UNKNOWN_TOPIC_OR_PARTITION",
    "INVALID_FETCH_SIZE",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_OR_FOLLOWER",
    "REQUEST_TIMED_OUT",
    "BROKER_NOT_AVAILABLE",
    "REPLICA_NOT_AVAILABLE",
    "MESSAGE_TOO_LARGE",
    "STALE_CONTROLLER_EPOCH",
    "OFFSET_METADATA_TOO_LARGE",
    "NETWORK_EXCEPTION",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_COORDINATOR",
    "INVALID_TOPIC_EXCEPTION",
    "RECORD_LIST_TOO_LARGE",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "INVALID_REQUIRED_ACKS",
    "ILLEGAL_GENERATION",
    "INCONSISTENT_GROUP_PROTOCOL",
    "INVALID_GROUP_ID",
    "UNKNOWN_MEMBER_ID",
    "INVALID_SESSION_TIMEOUT",
    "REBALANCE_IN_PROGRESS",
    "INVALID_COMMIT_OFFSET_SIZE",
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "CLUSTER_AUTHORIZATION_FAILED",
    "INVALID_TIMESTAMP",
    "UNSUPPORTED_SASL_MECHANISM",
    "ILLEGAL_SASL_STATE",
    "UNSUPPORTED_VERSION",
    "TOPIC_ALREADY_EXISTS",
    "INVALID_PARTITIONS",
    "INVALID_REPLICATION_FACTOR",
    "INVALID_REPLICA_ASSIGNMENT",
    "INVALID_CONFIG",
    "NOT_CONTROLLER",
    "INVALID_REQUEST",
    "UNSUPPORTED_FOR_MESSAGE_FORMAT",
    "POLICY_VIOLATION",
    "OUT_OF_ORDER_SEQUENCE_NUMBER",
    "DUPLICATE_SEQUENCE_NUMBER",
    "INVALID_PRODUCER_EPOCH",
    "INVALID_TXN_STATE",
    "INVALID_PRODUCER_ID_MAPPING",
    "INVALID_TRANSACTION_TIMEOUT",
    "CONCURRENT_TRANSACTIONS",
    "TRANSACTION_COORDINATOR_FENCED",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    "SECURITY_DISABLED",
    "OPERATION_NOT_ATTEMPTED",
    "KAFKA_STORAGE_ERROR",
    "LOG_DIR_NOT_FOUND",
    "SASL_AUTHENTICATION_FAILED",
    "UNKNOWN_PRODUCER_ID",
    "REASSIGNMENT_IN_PROGRESS",
    "DELEGATION_TOKEN_AUTH_DISABLED",
    "DELEGATION_TOKEN_NOT_FOUND",
    "DELEGATION_TOKEN_OWNER_MISMATCH",
    "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
    "DELEGATION_TOKEN_AUTHORIZATION_FAILED",
    "DELEGATION_TOKEN_EXPIRED",
    "INVALID_PRINCIPAL_TYPE",
    "NON_EMPTY_GROUP",
    "GROUP_ID_NOT_FOUND",
    "FETCH_SESSION_ID_NOT_FOUND",
    "INVALID_FETCH_SESSION_EPOCH",
    "LISTENER_NOT_FOUND",
    "TOPIC_DELETION_DISABLED",
    "FENCED_LEADER_EPOCH",
    "UNKNOWN_LEADER_EPOCH",
    "UNSUPPORTED_COMPRESSION_TYPE",
    "STALE_BROKER_EPOCH",
    "OFFSET_NOT_AVAILABLE",
    "MEMBER_ID_REQUIRED",
    "PREFERRED_LEADER_NOT_AVAILABLE",
    "GROUP_MAX_SIZE_REACHED",
    "FENCED_INSTANCE_ID",
    "ELIGIBLE_LEADERS_NOT_AVAILABLE",
    "ELECTION_NOT_NEEDED",
    "NO_REASSIGNMENT_IN_PROGRESS",
    "GROUP_SUBSCRIBED_TO_TOPIC",
    "INVALID_RECORD",
    "UNSTABLE_OFFSET_COMMIT",
    "THROTTLING_QUOTA_EXCEEDED",
    "PRODUCER_FENCED",
    "RESOURCE_NOT_FOUND",
    "DUPLICATE_RESOURCE",
    "UNACCEPTABLE_CREDENTIAL",
    "INCONSISTENT_VOTER_SET",
    "INVALID_UPDATE_VERSION",
    "FEATURE_UPDATE_FAILED",
    "PRINCIPAL_DESERIALIZATION_FAILURE",
    "SNAPSHOT_NOT_FOUND",
    "POSITION_OUT_OF_RANGE",
    "UNKNOWN_TOPIC_ID",
    "DUPLICATE_BROKER_REGISTRATION",
    "BROKER_ID_NOT_REGISTERED",
    "INCONSISTENT_TOPIC_ID",
    "INCONSISTENT_CLUSTER_ID",
    "TRANSACTIONAL_ID_NOT_FOUND",
    "FETCH_SESSION_TOPIC_ID_ERROR",
    "INELIGIBLE_REPLICA",
    "NEW_LEADER_ELECTED",
    "OFFSET_MOVED_TO_TIERED_STORAGE",
    "FENCED_MEMBER_EPOCH",
    "UNRELEASED_INSTANCE_ID",
    "UNSUPPORTED_ASSIGNOR",
    "STALE_MEMBER_EPOCH",
    "MISMATCHED_ENDPOINT_TYPE",
    "UNSUPPORTED_ENDPOINT_TYPE",
    "UNKNOWN_CONTROLLER_ID",
    "UNKNOWN_SUBSCRIPTION_ID",
    "TELEMETRY_TOO_LARGE",
    "INVALID_REGISTRATION",
    "TRANSACTION_ABORTABLE",
    "INVALID_RECORD_STATE",
    "SHARE_SESSION_NOT_FOUND",
    "INVALID_SHARE_SESSION_EPOCH",
    "FENCED_STATE_EPOCH",
    "INVALID_VOTER_KEY",
    "DUPLICATE_VOTER",
    "VOTER_NOT_FOUND",
    "INVALID_REGULAR_EXPRESSION",
];

fn api_of(key: u16) -> Option<&'static Api> {
    APIS.get(usize::from(key))
}

/// The name of API `key`, its number when unknown.
fn api_name(key: u16) -> String {
    match api_of(key) {
        Some(api) => api.name.to_string(),
        None => key.to_string(),
    }
}

fn is_flexible(key: u16, version: u16) -> bool {
    api_of(key).is_some_and(|api| version >= api.flexible_from)
}

/// Where the top-level `error_code` of a response body sits (after the response header),
/// for the APIs and versions that have one at a fixed offset: first in the body (0), or
/// after `throttle_time_ms` (4).
fn error_code_offset(key: u16, version: u16) -> Option<usize> {
    match key {
        // Fetch v7+: throttle_time_ms, error_code
        1 if version >= 7 => Some(4),
        // LeaderAndIsr, StopReplica, UpdateMetadata, ControlledShutdown, SaslHandshake,
        // ApiVersions, SaslAuthenticate, the delegation-token APIs, OffsetDelete, Vote,
        // BeginQuorumEpoch, EndQuorumEpoch, DescribeQuorum: error_code first
        4..=7 | 17 | 18 | 36 | 38..=41 | 47 | 52..=55 => Some(0),
        // FindCoordinator v0 and the group APIs v0 (JoinGroup v0-1) start with error_code,
        // later versions with throttle_time_ms; FindCoordinator v4+ has no top-level code
        10 => match version {
            0 => Some(0),
            1..=3 => Some(4),
            _ => None,
        },
        11 => Some(if version >= 2 { 4 } else { 0 }),
        12..=14 | 16 => Some(if version >= 1 { 4 } else { 0 }),
        // AddPartitionsToTxn v4+, DescribeLogDirs v3+, ElectLeaders v1+
        24 if version >= 4 => Some(4),
        35 if version >= 3 => Some(4),
        43 if version >= 1 => Some(4),
        // throttle_time_ms, error_code in every version
        22
        | 25
        | 26
        | 29
        | 45
        | 46
        | 48
        | 50
        | 56
        | 57
        | 59
        | 60
        | 62..=64
        | 66..=68
        | 70..=74
        | 76
        | 78..=82 => Some(4),
        _ => None,
    }
}

/// The bytes of a message did not hold a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Short;

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let end = self.pos.checked_add(n).ok_or(Short)?;
        let bytes = self.buf.get(self.pos..end).ok_or(Short)?;
        self.pos = end;
        Ok(bytes)
    }

    fn skip(&mut self, n: usize) -> Result<(), Short> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, Short> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, Short> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned varint of at most 5 bytes (a `u32`).
    fn uvarint(&mut self) -> Result<u32, Short> {
        let mut value = 0u32;
        for i in 0..5 {
            let b = self.u8()?;
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        // a sixth byte: not a u32 varint; treated like a field past the message
        Err(Short)
    }

    /// A `STRING`/`NULLABLE_STRING` (`int16` length, -1 null).
    fn string(&mut self) -> Result<Option<&'a [u8]>, Short> {
        match self.i16()? {
            n if n < 0 => Ok(None),
            n => self.take(n as usize).map(Some),
        }
    }

    /// A `COMPACT_STRING`/`COMPACT_NULLABLE_STRING` (uvarint length + 1, 0 null).
    fn compact_string(&mut self) -> Result<Option<&'a [u8]>, Short> {
        match self.uvarint()? {
            0 => Ok(None),
            n => self.take(n as usize - 1).map(Some),
        }
    }

    /// A tagged-field section: a uvarint count of (uvarint tag, uvarint size, bytes).
    fn tagged_fields(&mut self) -> Result<(), Short> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.skip(size as usize)?;
        }
        Ok(())
    }
}

/// The fixed part of a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    size: i32,
    api_key: u16,
    api_version: u16,
    correlation_id: i32,
}

/// A decoded request: what `fill` and pairing need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KafkaRequest {
    api_key: u16,
    api_version: u16,
    correlation_id: i32,
    /// First topic of a `Produce` or `Fetch`.
    topic: Option<String>,
    /// A `Produce` with `acks = 0`.
    fire_and_forget: bool,
}

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KafkaResponse {
    correlation_id: i32,
    error_code: Option<i16>,
}

/// The Kafka codec. Its state is the API key and version of the requests in flight.
#[derive(Debug, Default)]
pub(crate) struct KafkaCodec {
    /// (correlation id, api key, api version), oldest first, at most `MAX_IN_FLIGHT`.
    in_flight: VecDeque<(i32, u16, u16)>,
}

/// The request at the start of `buf` as far as it is captured. `Err(Short)` when a field
/// lies beyond `buf` (and within the message); `Ok(None)` when the message is malformed.
fn parse_request(buf: &[u8]) -> Result<Option<(Header, KafkaRequest)>, Short> {
    let mut r = Reader::new(buf, 0);
    let size = r.i32()?;
    if size < 8 {
        return Ok(None);
    }
    let total = 4 + size as usize;
    // fields past the message's end are not missing bytes but a malformed message
    let within = |e: Short, pos: usize| if pos >= total { Ok(None) } else { Err(e) };
    let mut r = Reader::new(&buf[..buf.len().min(total)], 4);
    let header = match (r.i16(), r.i16(), r.i32()) {
        (Ok(key), Ok(version), Ok(correlation_id)) if key >= 0 && version >= 0 => Header {
            size,
            api_key: key as u16,
            api_version: version as u16,
            correlation_id,
        },
        (Ok(_), Ok(_), Ok(_)) => return Ok(None),
        _ => return within(Short, r.buf.len()),
    };
    let flexible = is_flexible(header.api_key, header.api_version);
    let header_v0 = header.api_key == CONTROLLED_SHUTDOWN && header.api_version == 0;
    let mut request = KafkaRequest {
        api_key: header.api_key,
        api_version: header.api_version,
        correlation_id: header.correlation_id,
        topic: None,
        fire_and_forget: false,
    };
    if !header_v0 {
        let head = r
            .string()
            .and_then(|_| if flexible { r.tagged_fields() } else { Ok(()) });
        if let Err(e) = head {
            return within(e, r.buf.len());
        }
    }
    match parse_body(&mut r, &mut request, flexible) {
        Ok(()) => {}
        // a body too short for its fields: the header is what counts
        Err(_) if r.buf.len() >= total => {}
        Err(e) => return Err(e),
    }
    Ok(Some((header, request)))
}

/// Reads `acks` and the first topic of a `Produce`, the first topic of a `Fetch`.
fn parse_body(r: &mut Reader<'_>, request: &mut KafkaRequest, flexible: bool) -> Result<(), Short> {
    let version = request.api_version;
    match request.api_key {
        PRODUCE => {
            if version >= 3 {
                if flexible {
                    r.compact_string()?;
                } else {
                    r.string()?;
                }
            }
            request.fire_and_forget = r.i16()? == 0;
            r.skip(4)?; // timeout_ms
            if version > 12 {
                return Ok(());
            }
        }
        FETCH if version <= 12 => {
            r.skip(12)?; // replica_id, max_wait_ms, min_bytes
            if version >= 3 {
                r.skip(4)?; // max_bytes
            }
            if version >= 4 {
                r.skip(1)?; // isolation_level
            }
            if version >= 7 {
                r.skip(8)?; // session_id, session_epoch
            }
        }
        _ => return Ok(()),
    }
    let (count, name) = if flexible {
        let count = i64::from(r.uvarint()?) - 1;
        (count, if count > 0 { r.compact_string()? } else { None })
    } else {
        let count = i64::from(r.i32()?);
        (count, if count > 0 { r.string()? } else { None })
    };
    if count > 0
        && let Some(name) = name
    {
        let name = &name[..name.len().min(MAX_TOPIC)];
        request.topic = Some(String::from_utf8_lossy(name).into_owned());
    }
    Ok(())
}

impl KafkaCodec {
    fn remember(&mut self, request: &KafkaRequest) {
        if request.fire_and_forget {
            return;
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.in_flight.pop_front();
        }
        self.in_flight
            .push_back((request.correlation_id, request.api_key, request.api_version));
    }

    fn api_of_response(&self, correlation_id: i32) -> Option<(usize, u16, u16)> {
        self.in_flight
            .iter()
            .position(|(id, _, _)| *id == correlation_id)
            .map(|i| (i, self.in_flight[i].1, self.in_flight[i].2))
    }
}

impl Codec for KafkaCodec {
    type Request = KafkaRequest;
    type Response = KafkaResponse;

    fn protocol(&self) -> L7Protocol {
        L7Protocol::Kafka
    }

    fn decode_request(&mut self, buf: &[u8]) -> Decode<KafkaRequest> {
        match parse_request(buf) {
            Ok(Some((header, request))) => {
                self.remember(&request);
                Decode::Message {
                    len: WireLen::Exact(4 + header.size as u64),
                    msg: request,
                }
            }
            Ok(None) => Decode::Invalid,
            Err(Short) => Decode::NeedMore,
        }
    }

    fn decode_response(
        &mut self,
        buf: &[u8],
        _pending: Option<&KafkaRequest>,
    ) -> Decode<KafkaResponse> {
        let mut r = Reader::new(buf, 0);
        let Ok(size) = r.i32() else {
            return Decode::NeedMore;
        };
        if size < 4 {
            return Decode::Invalid;
        }
        let Ok(correlation_id) = r.i32() else {
            return Decode::NeedMore;
        };
        let total = 4 + size as usize;
        let api = self.api_of_response(correlation_id);
        let mut error_code = None;
        if let Some((_, key, version)) = api
            && let Some(offset) = error_code_offset(key, version)
        {
            let mut r = Reader::new(&buf[..buf.len().min(total)], 8);
            let code = (|| {
                if key != API_VERSIONS && is_flexible(key, version) {
                    r.tagged_fields()?;
                }
                r.skip(offset)?;
                r.i16()
            })();
            match code {
                Ok(code) => error_code = Some(code),
                Err(Short) if buf.len() < total => return Decode::NeedMore,
                Err(Short) => {}
            }
        }
        if let Some((i, _, _)) = api {
            self.in_flight.remove(i);
        }
        Decode::Message {
            len: WireLen::Exact(total as u64),
            msg: KafkaResponse {
                correlation_id,
                error_code,
            },
        }
    }

    fn request_key(&self, request: &KafkaRequest) -> Option<u64> {
        Some(u64::from(request.correlation_id as u32))
    }

    fn response_key(&self, response: &KafkaResponse) -> Option<u64> {
        Some(u64::from(response.correlation_id as u32))
    }

    fn expects_response(&self, request: &KafkaRequest) -> bool {
        !request.fire_and_forget
    }

    fn fill(
        &self,
        request: &KafkaRequest,
        response: Option<&KafkaResponse>,
        record: &mut L7Record,
    ) {
        record.request_type = api_name(request.api_key);
        record.version = request.api_version.to_string();
        if let Some(topic) = &request.topic {
            record.request_resource = topic.clone();
        }
        let Some(response) = response else {
            return;
        };
        record.response_status = ResponseStatus::Ok;
        record.response_code = response
            .error_code
            .and_then(|code| u16::try_from(code).ok());
        match response.error_code {
            None | Some(0) => {}
            Some(code) => {
                record.response_status = ResponseStatus::ServerError;
                let name = usize::try_from(i32::from(code) + 1)
                    .ok()
                    .and_then(|i| ERROR_NAMES.get(i));
                record.response_exception = match name {
                    Some(name) => (*name).to_string(),
                    None => format!("error code {code}"),
                };
            }
        }
    }
}

/// What the start of a chunk says about a Kafka request there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// A plausible request header of a message `total` bytes long.
    Request { total: usize },
    /// A consistent prefix of a request header.
    NeedMore,
    /// Not a Kafka request.
    No,
}

fn known_version(key: i16, version: i16) -> bool {
    key >= 0
        && version >= 0
        && api_of(key as u16)
            .is_some_and(|api| version as u16 <= api.max_version + DETECT_VERSION_HEADROOM)
}

fn printable(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| (0x20..0x7f).contains(b))
}

/// Checks the request header at the start of `bytes` strictly (see the module docs).
fn probe_request(bytes: &[u8]) -> Probe {
    let mut r = Reader::new(bytes, 0);
    let size = r.i32();
    let key = r.i16();
    let version = r.i16();
    let correlation_id = r.i32();
    let client_len = r.i16();
    let (Ok(size), Ok(key), Ok(version), Ok(_), Ok(client_len)) =
        (size, key, version, correlation_id, client_len)
    else {
        // a prefix: every field that has arrived must already be plausible
        let consistent = match (size, key, version) {
            (Ok(size), _, _) if !(10..=DETECT_MAX_SIZE).contains(&size) => false,
            (_, Ok(key), Ok(version)) => known_version(key, version),
            (_, Ok(key), Err(_)) => key >= 0 && api_of(key as u16).is_some(),
            _ => bytes.first().is_none_or(|b| *b == 0),
        };
        return if consistent {
            Probe::NeedMore
        } else {
            Probe::No
        };
    };
    if !(10..=DETECT_MAX_SIZE).contains(&size)
        || !known_version(key, version)
        || (key as u16 == CONTROLLED_SHUTDOWN && version == 0)
        || client_len < 1
        || i32::from(client_len) > size - 10
    {
        return Probe::No;
    }
    let total = 4 + size as usize;
    let Ok(client_id) = r.take(client_len as usize) else {
        // the rest of the client id has not arrived yet
        return if printable(&bytes[14..]) && bytes.len() < total {
            Probe::NeedMore
        } else {
            Probe::No
        };
    };
    if !printable(client_id) {
        return Probe::No;
    }
    if is_flexible(key as u16, version as u16) {
        let mut tagged = Reader::new(&bytes[..bytes.len().min(total)], r.pos);
        match tagged.tagged_fields() {
            Ok(()) => {}
            Err(Short) if bytes.len() < total => return Probe::NeedMore,
            Err(Short) => return Probe::No,
        }
    }
    Probe::Request { total }
}

/// Recognises a Kafka request at the start of a chunk (see the module docs). Bytes after the
/// first message must start requests too (up to four are checked).
pub(crate) fn detect(bytes: &[u8], direction: Direction) -> Detection {
    let matched = Detection::Match(Inference {
        protocol: L7Protocol::Kafka,
        role: Role::from_request_direction(direction),
    });
    let mut at = 0usize;
    for _ in 0..4 {
        let Some(rest) = bytes.get(at..) else {
            break;
        };
        match probe_request(rest) {
            Probe::Request { total } if total >= rest.len() => return matched,
            Probe::Request { total } => at += total,
            Probe::NeedMore if at == 0 => return Detection::NeedMore,
            Probe::NeedMore => return matched,
            Probe::No => return Detection::NoMatch,
        }
    }
    matched
}

/// The session of a socket whose requests `detect` recognised.
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    Box::new(FramedSession::new(KafkaCodec::default(), role, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request frame: header v1 (v2 when `flexible`) and `body`.
    fn request(
        key: i16,
        version: i16,
        correlation_id: i32,
        body: &[u8],
        flexible: bool,
    ) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&key.to_be_bytes());
        payload.extend_from_slice(&version.to_be_bytes());
        payload.extend_from_slice(&correlation_id.to_be_bytes());
        payload.extend_from_slice(&(6i16).to_be_bytes());
        payload.extend_from_slice(b"client");
        if flexible {
            payload.push(0);
        }
        payload.extend_from_slice(body);
        let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
        frame.extend(payload);
        frame
    }

    fn response(correlation_id: i32, body: &[u8], flexible: bool) -> Vec<u8> {
        let mut payload = correlation_id.to_be_bytes().to_vec();
        if flexible {
            payload.push(0);
        }
        payload.extend_from_slice(body);
        let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
        frame.extend(payload);
        frame
    }

    /// Produce v0-2 body: acks timeout_ms [topic ...].
    fn produce_v2_body(acks: i16, topic: &[u8]) -> Vec<u8> {
        let mut body = acks.to_be_bytes().to_vec();
        body.extend_from_slice(&1000i32.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        body.extend_from_slice(topic);
        body.extend_from_slice(&[0; 8]);
        body
    }

    const C2S: Direction = Direction::Egress;

    fn is_kafka(bytes: &[u8]) -> bool {
        matches!(detect(bytes, C2S), Detection::Match(i) if i.protocol == L7Protocol::Kafka)
    }

    #[test]
    fn detects_requests_with_role_from_direction() {
        let metadata = request(3, 1, 7, &0i32.to_be_bytes(), false);
        assert_eq!(
            detect(&metadata, Direction::Egress),
            Detection::Match(Inference {
                protocol: L7Protocol::Kafka,
                role: Role::Client
            })
        );
        assert_eq!(
            detect(&metadata, Direction::Ingress),
            Detection::Match(Inference {
                protocol: L7Protocol::Kafka,
                role: Role::Server
            })
        );
        // a flexible header, and two pipelined requests in one chunk
        let mut two = request(18, 3, 1, &[2, b'x', 2, b'1', 0], true);
        two.extend(request(3, 12, 2, &[1, 1, 0, 0], true));
        assert!(is_kafka(&two));
        // a prefix of the header waits for more; a captured prefix of a long request matches
        for n in 1..metadata.len() - 4 {
            assert_eq!(detect(&metadata[..n], C2S), Detection::NeedMore, "{n}");
        }
        let big = request(0, 2, 1, &produce_v2_body(1, &[b't'; 3000]), false);
        assert!(is_kafka(&big[..1024]));
    }

    #[test]
    fn detection_rejects_everything_else() {
        let metadata = request(3, 1, 7, &0i32.to_be_bytes(), false);
        let mut bad_key = metadata.clone();
        bad_key[4..6].copy_from_slice(&500i16.to_be_bytes());
        let mut bad_version = metadata.clone();
        bad_version[6..8].copy_from_slice(&40i16.to_be_bytes());
        let mut binary_client = metadata.clone();
        binary_client[14] = 0x01;
        let mut trailing_garbage = metadata.clone();
        trailing_garbage.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut empty_client = request(3, 1, 7, &0i32.to_be_bytes(), false);
        empty_client[12..14].copy_from_slice(&0i16.to_be_bytes());
        let others: [&[u8]; 14] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"*1\r\n$4\r\nPING\r\n",
            b"AMQP\x00\x00\x09\x01",
            b"INFO {\"server_id\":\"x\"}\r\n",
            b"PING\r\n",
            // MongoDB OP_MSG hello
            b"\x3a\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00\x00\x00\x00\x00\x00\x25\x00\x00\x00\x10hello\x00\x01\x00\x00\x00\x02$db\x00\x06\x00\x00\x00admin\x00\x00",
            // Dubbo request header
            b"\xda\xbb\xc2\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x10",
            // PostgreSQL StartupMessage
            b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00database\x00postgres\x00\x00",
            // PostgreSQL SSLRequest
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            // DNS over TCP query
            b"\x00\x1d\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x01a\x02io\x00\x00\x01\x00\x01",
            // Kafka ApiVersions v0 response (a response is never detected)
            b"\x00\x00\x00\x0e\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x12\x00\x00\x00\x03",
            // MySQL handshake
            b"\x4a\x00\x00\x00\x0a8.0.36\x00\x08\x00\x00\x00",
        ];
        for bytes in others.iter().copied().chain([
            &bad_key[..],
            &bad_version[..],
            &binary_client[..],
            &trailing_garbage[..],
            &empty_client[..],
        ]) {
            assert!(!is_kafka(bytes), "{bytes:?}");
        }
        // random bytes
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut bytes = [0u8; 48];
            for b in &mut bytes {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            // also with a plausible size prefix, the strongest random case
            assert!(!is_kafka(&bytes));
            bytes[..4].copy_from_slice(&44i32.to_be_bytes());
            assert!(!is_kafka(&bytes), "{bytes:?}");
        }
    }

    #[test]
    fn decodes_produce_topic_acks_and_captured_prefixes() {
        let mut codec = KafkaCodec::default();
        let frame = request(0, 2, 5, &produce_v2_body(0, b"orders"), false);
        let Decode::Message { len, msg } = codec.decode_request(&frame) else {
            panic!("not decoded");
        };
        assert_eq!(len, WireLen::Exact(frame.len() as u64));
        assert_eq!(msg.topic.as_deref(), Some("orders"));
        assert!(msg.fire_and_forget && !codec.expects_response(&msg));
        assert!(codec.in_flight.is_empty(), "acks=0 expects no response");
        // every prefix shorter than the topic waits for more
        for n in 0..frame.len() - 8 {
            assert_eq!(codec.decode_request(&frame[..n]), Decode::NeedMore, "{n}");
        }
        // a malformed header inside a complete message is invalid
        let mut bad = frame.clone();
        bad[12..14].copy_from_slice(&500i16.to_be_bytes());
        assert_eq!(codec.decode_request(&bad), Decode::Invalid);
        // Produce v9: compact strings
        let mut body = vec![0]; // null transactional id
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&5000i32.to_be_bytes());
        body.extend_from_slice(&[2, 4, b'a', b'b', b'c']);
        let frame = request(0, 9, 6, &body, true);
        let Decode::Message { msg, .. } = codec.decode_request(&frame) else {
            panic!("not decoded");
        };
        assert_eq!(msg.topic.as_deref(), Some("abc"));
        assert!(!msg.fire_and_forget);
    }

    #[test]
    fn response_error_codes_follow_the_request_api() {
        let mut codec = KafkaCodec::default();
        // FindCoordinator v3 (flexible): throttle_time_ms, error_code 15
        let req = request(10, 3, 11, &[2, b'g', 0, 0], true);
        assert!(matches!(codec.decode_request(&req), Decode::Message { .. }));
        let resp = response(11, &[0, 0, 0, 0, 0, 15, 0], true);
        for n in 0..resp.len() - 1 {
            assert_eq!(
                codec.decode_response(&resp[..n], None),
                Decode::NeedMore,
                "{n}"
            );
        }
        let Decode::Message { msg, .. } = codec.decode_response(&resp, None) else {
            panic!("not decoded");
        };
        assert_eq!(msg.error_code, Some(15));
        let mut record = blank_record();
        let Decode::Message { msg: q, .. } = KafkaCodec::default().decode_request(&req) else {
            panic!("not decoded");
        };
        codec.fill(&q, Some(&msg), &mut record);
        assert_eq!(record.request_type, "FindCoordinator");
        assert_eq!(record.version, "3");
        assert_eq!(record.response_code, Some(15));
        assert_eq!(record.response_status, ResponseStatus::ServerError);
        assert_eq!(record.response_exception, "COORDINATOR_NOT_AVAILABLE");
        // ApiVersions v3 is flexible but its response header is v0
        let req = request(18, 3, 12, &[1, 1, 0], true);
        assert!(matches!(codec.decode_request(&req), Decode::Message { .. }));
        let Decode::Message { msg, .. } =
            codec.decode_response(&response(12, &[0, 35, 0], false), None)
        else {
            panic!("not decoded");
        };
        assert_eq!(msg.error_code, Some(35));
        // a response to an unknown request: no code, still framed
        let Decode::Message { len, msg } =
            codec.decode_response(&response(99, &[0; 30], false), None)
        else {
            panic!("not decoded");
        };
        assert_eq!((len, msg.error_code), (WireLen::Exact(38), None));
        // -1 does not fit the column
        let mut record = blank_record();
        let unknown = KafkaResponse {
            correlation_id: 1,
            error_code: Some(-1),
        };
        codec.fill(&q, Some(&unknown), &mut record);
        assert_eq!(record.response_code, None);
        assert_eq!(record.response_exception, "UNKNOWN_SERVER_ERROR");
    }

    #[test]
    fn in_flight_state_is_bounded() {
        let mut codec = KafkaCodec::default();
        for id in 0..(MAX_IN_FLIGHT as i32 + 50) {
            let req = request(3, 1, id, &0i32.to_be_bytes(), false);
            assert!(matches!(codec.decode_request(&req), Decode::Message { .. }));
        }
        assert_eq!(codec.in_flight.len(), MAX_IN_FLIGHT);
    }

    #[test]
    fn tables_are_consistent() {
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(18), "ApiVersions");
        assert_eq!(api_name(52), "Vote");
        assert_eq!(api_name(92), "DeleteShareGroupOffsets");
        assert_eq!(api_name(93), "93");
        assert_eq!(ERROR_NAMES[0], "UNKNOWN_SERVER_ERROR");
        assert_eq!(ERROR_NAMES[1], "NONE");
        assert_eq!(ERROR_NAMES[17], "NOT_COORDINATOR");
        assert_eq!(ERROR_NAMES[129], "INVALID_REGULAR_EXPRESSION");
    }

    fn blank_record() -> L7Record {
        L7Record::new(L7Protocol::Kafka, Role::Client)
    }
}
