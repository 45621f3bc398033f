//! HTTP/2 frames (RFC 9113 §4.1, §6) and [`Framer`], which cuts one direction of a captured
//! connection into frames through capture gaps.
//!
//! Frames are length-prefixed, so the framer skips payload bytes that were not captured
//! exactly and stays in step. It loses framing only when a frame *header* (or the client
//! preface) falls into uncaptured bytes, or when the bytes contradict the protocol; it then
//! waits for a syscall whose captured bytes start with a chain of well-formed frames that the
//! [`FrameSink`] finds plausible, since a syscall boundary is the only place a frame can be
//! found again without guessing.

use crate::session::{SeqStep, SyscallMeta};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 9;

/// `SETTINGS_MAX_FRAME_SIZE` before any SETTINGS frame (RFC 9113 §6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 1 << 14;

/// Frame flags (RFC 9113 §6).
pub mod flags {
    /// DATA, HEADERS: the last frame the endpoint sends on the stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: an acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION: the header block ends with this frame.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS, PUSH_PROMISE: the payload starts with a pad length and ends with
    /// padding.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: the payload starts with a stream dependency and weight.
    pub const PRIORITY: u8 = 0x20;
}

/// A frame type (RFC 9113 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// DATA (0x0).
    Data,
    /// HEADERS (0x1).
    Headers,
    /// PRIORITY (0x2).
    Priority,
    /// RST_STREAM (0x3).
    RstStream,
    /// SETTINGS (0x4).
    Settings,
    /// PUSH_PROMISE (0x5).
    PushPromise,
    /// PING (0x6).
    Ping,
    /// GOAWAY (0x7).
    GoAway,
    /// WINDOW_UPDATE (0x8).
    WindowUpdate,
    /// CONTINUATION (0x9).
    Continuation,
    /// A type this crate does not know (extensions are ignored, RFC 9113 §5.5).
    Unknown(u8),
}

impl FrameType {
    /// The type of the frame type byte `byte`.
    pub fn from_byte(byte: u8) -> Self {
        match byte {
            0x0 => FrameType::Data,
            0x1 => FrameType::Headers,
            0x2 => FrameType::Priority,
            0x3 => FrameType::RstStream,
            0x4 => FrameType::Settings,
            0x5 => FrameType::PushPromise,
            0x6 => FrameType::Ping,
            0x7 => FrameType::GoAway,
            0x8 => FrameType::WindowUpdate,
            0x9 => FrameType::Continuation,
            other => FrameType::Unknown(other),
        }
    }

    /// The flags this type defines; `None` for unknown types.
    fn defined_flags(self) -> Option<u8> {
        use flags::*;
        match self {
            FrameType::Data => Some(END_STREAM | PADDED),
            FrameType::Headers => Some(END_STREAM | END_HEADERS | PADDED | PRIORITY),
            FrameType::Settings | FrameType::Ping => Some(ACK),
            FrameType::PushPromise => Some(END_HEADERS | PADDED),
            FrameType::Continuation => Some(END_HEADERS),
            FrameType::Priority
            | FrameType::RstStream
            | FrameType::GoAway
            | FrameType::WindowUpdate => Some(0),
            FrameType::Unknown(_) => None,
        }
    }

    /// Whether the session needs this frame's payload (header blocks, settings, error codes),
    /// not only its length.
    fn payload_needed(self) -> bool {
        matches!(
            self,
            FrameType::Headers
                | FrameType::Continuation
                | FrameType::PushPromise
                | FrameType::Settings
                | FrameType::RstStream
                | FrameType::GoAway
        )
    }
}

/// A frame header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub length: u32,
    /// Frame type.
    pub kind: FrameType,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (31 bits).
    pub stream_id: u32,
    /// The reserved bit before the stream identifier (must be unset).
    pub reserved: bool,
}

impl FrameHeader {
    /// The header at the start of `bytes`, if 9 bytes are there.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let h = bytes.get(..FRAME_HEADER_LEN)?;
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
        Some(FrameHeader {
            length: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: FrameType::from_byte(h[3]),
            flags: h[4],
            stream_id: stream & 0x7fff_ffff,
            reserved: stream & 0x8000_0000 != 0,
        })
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Bytes of the frame on the wire, header included.
    pub fn wire_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.length)
    }

    /// What RFC 9113 requires of every frame of a known type whatever the settings: stream 0
    /// or not, fixed payload lengths, room for padding and priority fields. Unknown types
    /// pass. A frame that fails this is a connection error: framing was lost or the bytes
    /// are not HTTP/2.
    pub fn is_consistent(&self) -> bool {
        use flags::*;
        let len = self.length;
        let stream = self.stream_id != 0;
        let pad = u32::from(self.has(PADDED));
        match self.kind {
            FrameType::Data => stream && len >= pad,
            FrameType::Headers => stream && len >= pad + if self.has(PRIORITY) { 5 } else { 0 },
            FrameType::Priority => stream && len == 5,
            FrameType::RstStream => stream && len == 4,
            FrameType::Settings => {
                !stream
                    && if self.has(ACK) {
                        len == 0
                    } else {
                        len.is_multiple_of(6)
                    }
            }
            FrameType::PushPromise => stream && len >= pad + 4,
            FrameType::Ping => !stream && len == 8,
            FrameType::GoAway => !stream && len >= 8,
            FrameType::WindowUpdate => len == 4,
            FrameType::Continuation => stream,
            FrameType::Unknown(_) => true,
        }
    }

    /// The strict check of inference and resynchronisation: [`FrameHeader::is_consistent`],
    /// a known type with only its defined flags, the reserved bit unset and a length within
    /// `max_frame_size`.
    pub fn is_well_formed(&self, max_frame_size: u32) -> bool {
        let Some(defined) = self.kind.defined_flags() else {
            return false;
        };
        !self.reserved
            && self.flags & !defined == 0
            && self.length <= max_frame_size
            && self.is_consistent()
    }
}

/// Where a byte of a direction was: the syscall that carried it and its offset there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePosition {
    /// The syscall.
    pub meta: SyscallMeta,
    /// Offset of the byte in the syscall's bytes.
    pub offset: u32,
}

impl FramePosition {
    /// TCP sequence number of the byte, if known.
    pub fn seq(&self) -> Option<u32> {
        self.meta.seq.map(|seq| seq.wrapping_add(self.offset))
    }
}

/// A frame whose last byte has gone by.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Its header.
    pub header: FrameHeader,
    /// The captured part of its payload, for the types whose payload the session needs
    /// (HEADERS, CONTINUATION, PUSH_PROMISE, SETTINGS, RST_STREAM, GOAWAY); empty for the
    /// others. At most the framer's buffer limit.
    pub payload: &'a [u8],
    /// Whether `payload` is the whole payload.
    pub complete: bool,
    /// Where its first byte was.
    pub start: FramePosition,
    /// The syscall that carried (or skipped) its last byte.
    pub end: SyscallMeta,
}

/// Receives what a [`Framer`] finds.
pub trait FrameSink {
    /// A frame ended.
    fn on_frame(&mut self, frame: Frame<'_>);
    /// The client connection preface went by, starting at `start`.
    fn on_preface(&mut self, start: FramePosition);
    /// Framing was lost at syscall `at`: frames went by uncaptured, the stream jumped, or
    /// (`malformed`) the bytes are not valid frames.
    fn on_lost(&mut self, at: &SyscallMeta, malformed: bool);
    /// Whether a syscall that starts with a frame with this header may resynchronise the
    /// direction (the header itself is well-formed).
    fn accepts_resync(&self, header: &FrameHeader) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not at a known frame boundary: before the first syscall, or after framing was lost.
    Unsynced,
    /// Inside the client preface.
    Preface {
        matched: usize,
        start: FramePosition,
    },
    /// At a frame boundary, or inside a frame header (`have` bytes in `head`).
    Header {
        have: usize,
        start: Option<FramePosition>,
    },
    /// Inside a payload, `left` bytes to go.
    Payload {
        header: FrameHeader,
        left: u32,
        start: FramePosition,
        complete: bool,
    },
}

/// Cuts one direction of a connection into frames. See the module docs.
#[derive(Debug, Clone)]
pub struct Framer {
    state: State,
    head: [u8; FRAME_HEADER_LEN],
    /// The payload of a needed frame that spans syscalls.
    payload: Vec<u8>,
    max_buffer: usize,
    max_frame_size: u32,
    preface_allowed: bool,
    /// Some syscall was fed.
    started: bool,
}

impl Framer {
    /// A framer that has seen nothing yet. `preface_allowed`: the direction is the client's,
    /// whose first bytes may be the connection preface. Payloads the session needs are kept up
    /// to `max_buffer` bytes each.
    pub fn new(preface_allowed: bool, max_buffer: usize) -> Self {
        Framer {
            state: State::Unsynced,
            head: [0; FRAME_HEADER_LEN],
            payload: Vec::new(),
            max_buffer,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            preface_allowed,
            started: false,
        }
    }

    /// The direction is known to start at a frame boundary (the server's side of a connection
    /// whose client preface was seen): unless a syscall was fed already, its first byte is
    /// taken as the start of a frame without the resynchronisation checks, so that a first
    /// frame split across syscalls is not missed.
    pub fn assume_boundary(&mut self) {
        if !self.started && self.state == State::Unsynced {
            self.state = State::Header {
                have: 0,
                start: None,
            };
        }
    }

    /// The receiver of this direction announced `SETTINGS_MAX_FRAME_SIZE`: the bound
    /// resynchronisation checks frame lengths against.
    pub fn set_max_frame_size(&mut self, size: u32) {
        self.max_frame_size = size.clamp(DEFAULT_MAX_FRAME_SIZE, (1 << 24) - 1);
    }

    /// Whether the framer is at or inside a known frame (not waiting to resynchronise).
    pub fn is_synced(&self) -> bool {
        self.state != State::Unsynced
    }

    /// Consumes one syscall: `step` says what was missed before it, `payload` is its captured
    /// prefix and `gap_after` the number of bytes it carried beyond that.
    pub fn feed(
        &mut self,
        meta: &SyscallMeta,
        step: SeqStep,
        payload: &[u8],
        gap_after: u64,
        sink: &mut dyn FrameSink,
    ) {
        self.started = true;
        if step.discontinuous {
            self.lose(meta, false, sink);
        } else if step.gap > 0 {
            self.skip(step.gap, meta, sink);
        }
        if !payload.is_empty() {
            if self.state == State::Unsynced {
                match self.resync_state(payload, meta, sink) {
                    Some(state) => self.state = state,
                    None => return,
                }
            }
            self.consume(meta, payload, sink);
        }
        if gap_after > 0 {
            self.skip(gap_after, meta, sink);
        }
    }

    /// Whether `data`, the captured start of a syscall, may be a frame boundary: the preface
    /// (client direction), or a chain of well-formed frames the sink accepts, of which at
    /// least one header is whole.
    fn resync_state(&self, data: &[u8], meta: &SyscallMeta, sink: &dyn FrameSink) -> Option<State> {
        let start = FramePosition {
            meta: *meta,
            offset: 0,
        };
        if self.preface_allowed {
            let n = data.len().min(PREFACE.len());
            if data[..n] == PREFACE[..n] {
                return Some(State::Preface { matched: 0, start });
            }
        }
        let first = FrameHeader::parse(data)?;
        if !first.is_well_formed(self.max_frame_size) || !sink.accepts_resync(&first) {
            return None;
        }
        let mut pos = 0usize;
        while let Some(header) = data.get(pos..).and_then(FrameHeader::parse) {
            if !header.is_well_formed(self.max_frame_size) {
                return None;
            }
            pos = pos.saturating_add(FRAME_HEADER_LEN + header.length as usize);
        }
        Some(State::Header {
            have: 0,
            start: None,
        })
    }

    fn consume(&mut self, meta: &SyscallMeta, data: &[u8], sink: &mut dyn FrameSink) {
        let mut offset = 0usize;
        while offset < data.len() {
            let rest = &data[offset..];
            let position = FramePosition {
                meta: *meta,
                offset: offset as u32,
            };
            match self.state {
                State::Unsynced => return,
                State::Preface { matched, start } => {
                    let take = rest.len().min(PREFACE.len() - matched);
                    if rest[..take] != PREFACE[matched..matched + take] {
                        self.lose(meta, true, sink);
                        return;
                    }
                    offset += take;
                    self.state = if matched + take == PREFACE.len() {
                        sink.on_preface(start);
                        State::Header {
                            have: 0,
                            start: None,
                        }
                    } else {
                        State::Preface {
                            matched: matched + take,
                            start,
                        }
                    };
                }
                State::Header { have, start } => {
                    let start = start.unwrap_or(position);
                    let take = rest.len().min(FRAME_HEADER_LEN - have);
                    self.head[have..have + take].copy_from_slice(&rest[..take]);
                    offset += take;
                    if have + take < FRAME_HEADER_LEN {
                        self.state = State::Header {
                            have: have + take,
                            start: Some(start),
                        };
                        continue;
                    }
                    let Some(header) = FrameHeader::parse(&self.head) else {
                        return;
                    };
                    if !header.is_consistent() {
                        self.lose(meta, true, sink);
                        return;
                    }
                    self.payload.clear();
                    self.state = State::Payload {
                        header,
                        left: header.length,
                        start,
                        complete: true,
                    };
                    if header.length == 0 {
                        self.finish(meta, sink);
                    }
                }
                State::Payload {
                    header,
                    left,
                    start,
                    mut complete,
                } => {
                    let take = rest.len().min(left as usize);
                    let needed = header.kind.payload_needed();
                    if needed
                        && left == header.length
                        && take == left as usize
                        && take <= self.max_buffer
                    {
                        // The whole payload is in this syscall: no copy.
                        offset += take;
                        self.state = State::Header {
                            have: 0,
                            start: None,
                        };
                        sink.on_frame(Frame {
                            header,
                            payload: &rest[..take],
                            complete: true,
                            start,
                            end: *meta,
                        });
                        continue;
                    }
                    if needed {
                        let room = self.max_buffer.saturating_sub(self.payload.len());
                        let kept = take.min(room);
                        self.payload.extend_from_slice(&rest[..kept]);
                        complete &= kept == take;
                    }
                    offset += take;
                    // `take <= left`, a u32.
                    let left = left - take as u32;
                    self.state = State::Payload {
                        header,
                        left,
                        start,
                        complete,
                    };
                    if left == 0 {
                        self.finish(meta, sink);
                    }
                }
            }
        }
    }

    /// `n` bytes went by uncaptured.
    fn skip(&mut self, n: u64, meta: &SyscallMeta, sink: &mut dyn FrameSink) {
        match self.state {
            State::Unsynced => {}
            State::Preface { matched, start } => {
                let take = n.min((PREFACE.len() - matched) as u64);
                // `take` is at most 24.
                let matched = matched + take as usize;
                if matched < PREFACE.len() {
                    self.state = State::Preface { matched, start };
                    return;
                }
                self.state = State::Header {
                    have: 0,
                    start: None,
                };
                sink.on_preface(start);
                if n > take {
                    self.lose(meta, false, sink);
                }
            }
            State::Header { .. } => self.lose(meta, false, sink),
            State::Payload {
                header,
                left,
                start,
                ..
            } => {
                let take = n.min(u64::from(left));
                // `take <= left`, a u32.
                let left = left - take as u32;
                self.state = State::Payload {
                    header,
                    left,
                    start,
                    complete: false,
                };
                if left == 0 {
                    self.finish(meta, sink);
                    if n > take {
                        // The rest of the gap holds frame headers.
                        self.lose(meta, false, sink);
                    }
                }
            }
        }
    }

    /// The frame whose payload was being read ended in syscall `meta`.
    fn finish(&mut self, meta: &SyscallMeta, sink: &mut dyn FrameSink) {
        let State::Payload {
            header,
            start,
            complete,
            ..
        } = self.state
        else {
            return;
        };
        self.state = State::Header {
            have: 0,
            start: None,
        };
        sink.on_frame(Frame {
            header,
            payload: &self.payload,
            complete: complete || !header.kind.payload_needed(),
            start,
            end: *meta,
        });
        self.payload.clear();
    }

    fn lose(&mut self, meta: &SyscallMeta, malformed: bool, sink: &mut dyn FrameSink) {
        self.state = State::Unsynced;
        self.payload.clear();
        if self.payload.capacity() > self.max_buffer {
            self.payload = Vec::new();
        }
        sink.on_lost(meta, malformed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Event {
        Frame {
            kind: FrameType,
            stream: u32,
            payload: Vec<u8>,
            complete: bool,
            seq: Option<u32>,
            end_ns: u64,
        },
        Preface(Option<u32>),
        Lost(bool),
    }

    #[derive(Default)]
    struct Recorder {
        events: Vec<Event>,
        refuse_resync: bool,
    }

    impl FrameSink for Recorder {
        fn on_frame(&mut self, frame: Frame<'_>) {
            self.events.push(Event::Frame {
                kind: frame.header.kind,
                stream: frame.header.stream_id,
                payload: frame.payload.to_vec(),
                complete: frame.complete,
                seq: frame.start.seq(),
                end_ns: frame.end.exit_ns,
            });
        }
        fn on_preface(&mut self, start: FramePosition) {
            self.events.push(Event::Preface(start.seq()));
        }
        fn on_lost(&mut self, _at: &SyscallMeta, malformed: bool) {
            self.events.push(Event::Lost(malformed));
        }
        fn accepts_resync(&self, _header: &FrameHeader) -> bool {
            !self.refuse_resync
        }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.push(kind);
        out.push(flags);
        out.extend(stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn meta(n: u64, seq: u32) -> SyscallMeta {
        SyscallMeta {
            enter_ns: n * 10,
            exit_ns: n * 10 + 1,
            seq: Some(seq),
            tid: 1,
            syscall_trace_id: 0,
        }
    }

    fn kinds(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Frame {
                    kind,
                    stream,
                    complete,
                    ..
                } => format!("{kind:?}/{stream}{}", if *complete { "" } else { "~" }),
                Event::Preface(_) => "preface".into(),
                Event::Lost(m) => format!("lost{}", if *m { "!" } else { "" }),
            })
            .collect()
    }

    #[test]
    fn headers_parse_and_checks() {
        let settings = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let h = FrameHeader::parse(&settings).expect("9 bytes");
        assert_eq!(h.kind, FrameType::Settings);
        assert_eq!(h.length, 6);
        assert!(h.is_well_formed(DEFAULT_MAX_FRAME_SIZE));
        // Settings on a stream, a PING of 7 bytes, undefined flags, the reserved bit.
        let bad = [
            frame(4, 0, 1, &[0; 6]),
            frame(6, 0, 0, &[0; 7]),
            frame(8, 0x1, 0, &[0, 0, 0, 1]),
            frame(0, 0, 0, b"x"),
        ];
        for b in bad {
            let h = FrameHeader::parse(&b).expect("9 bytes");
            assert!(!h.is_well_formed(DEFAULT_MAX_FRAME_SIZE), "{h:?}");
        }
        let mut reserved = frame(0, 0, 1, b"x");
        reserved[5] |= 0x80;
        let h = FrameHeader::parse(&reserved).expect("9 bytes");
        assert_eq!(h.stream_id, 1);
        assert!(h.reserved && !h.is_well_formed(DEFAULT_MAX_FRAME_SIZE));
        assert!(FrameHeader::parse(&[0; 8]).is_none());
        // Unknown types are consistent (extensions) but never well-formed.
        let h = FrameHeader::parse(&frame(0xfe, 0, 0, b"")).expect("9 bytes");
        assert!(h.is_consistent() && !h.is_well_formed(DEFAULT_MAX_FRAME_SIZE));
    }

    #[test]
    fn preface_and_frames_split_anywhere() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(4, 0, 0, &[0, 4, 0, 1, 0, 0]));
        bytes.extend(frame(1, 0x5, 1, b"\x82\x86\x84"));
        bytes.extend(frame(0, 0x1, 1, &[7; 40]));
        for split in 1..bytes.len() {
            let mut framer = Framer::new(true, 1024);
            let mut sink = Recorder::default();
            framer.feed(
                &meta(1, 100),
                SeqStep::default(),
                &bytes[..split],
                0,
                &mut sink,
            );
            framer.feed(
                &meta(2, 100 + split as u32),
                SeqStep::default(),
                &bytes[split..],
                0,
                &mut sink,
            );
            assert_eq!(
                kinds(&sink.events),
                ["preface", "Settings/0", "Headers/1", "Data/1"],
                "split at {split}"
            );
            assert_eq!(sink.events[0], Event::Preface(Some(100)));
            let Event::Frame { payload, seq, .. } = &sink.events[2] else {
                panic!("a frame");
            };
            assert_eq!(payload, b"\x82\x86\x84");
            assert_eq!(*seq, Some(100 + 24 + 15));
            // DATA payloads are not kept.
            let Event::Frame { payload, .. } = &sink.events[3] else {
                panic!("a frame");
            };
            assert!(payload.is_empty());
        }
    }

    #[test]
    fn uncaptured_payloads_are_skipped_exactly() {
        let mut framer = Framer::new(false, 1024);
        let mut sink = Recorder::default();
        let mut bytes = frame(1, 0x4, 1, &[0x88; 50]);
        bytes.extend(frame(0, 0, 1, &[1; 5000]));
        let tail = frame(0, 0x1, 1, b"end");
        // Captured: the HEADERS and the DATA header plus 100 bytes; the rest of the DATA
        // payload in the uncaptured tail, then a sendfile of nothing captured.
        framer.feed(
            &meta(1, 0),
            SeqStep::default(),
            &bytes[..168],
            3000,
            &mut sink,
        );
        framer.feed(&meta(2, 0), SeqStep::default(), &[], 1900, &mut sink);
        framer.feed(&meta(3, 0), SeqStep::default(), &tail, 0, &mut sink);
        assert_eq!(kinds(&sink.events), ["Headers/1", "Data/1", "Data/1"]);
        let Event::Frame { end_ns, .. } = sink.events[1] else {
            panic!("a frame");
        };
        assert_eq!(
            end_ns, 21,
            "the DATA frame ended in the second syscall's gap"
        );
    }

    #[test]
    fn a_cut_header_block_is_incomplete() {
        let mut framer = Framer::new(false, 1024);
        let mut sink = Recorder::default();
        let bytes = frame(1, 0x4, 3, &[0x88; 100]);
        framer.feed(&meta(1, 0), SeqStep::default(), &bytes[..30], 79, &mut sink);
        assert_eq!(kinds(&sink.events), ["Headers/3~"]);
        let Event::Frame { payload, .. } = &sink.events[0] else {
            panic!("a frame");
        };
        assert_eq!(payload.len(), 21);
        // Payloads beyond the buffer limit are cut too.
        let mut framer = Framer::new(false, 10);
        let mut sink = Recorder::default();
        framer.feed(&meta(1, 0), SeqStep::default(), &bytes[..50], 0, &mut sink);
        framer.feed(&meta(2, 0), SeqStep::default(), &bytes[50..], 0, &mut sink);
        assert_eq!(kinds(&sink.events), ["Headers/3~"]);
    }

    #[test]
    fn lost_framing_resyncs_at_a_plausible_syscall_start() {
        let mut framer = Framer::new(false, 1024);
        let mut sink = Recorder::default();
        let data = frame(0, 0, 1, &[1; 100]);
        // A frame header lies in the uncaptured tail.
        let mut bytes = data.clone();
        bytes.extend(&data);
        framer.feed(
            &meta(1, 0),
            SeqStep::default(),
            &bytes[..50],
            150,
            &mut sink,
        );
        assert_eq!(kinds(&sink.events), ["Data/1", "lost"]);
        // Mid-frame bytes are not a resync point; neither is a frame the sink refuses.
        framer.feed(&meta(2, 0), SeqStep::default(), &[1; 30], 0, &mut sink);
        sink.refuse_resync = true;
        framer.feed(&meta(3, 0), SeqStep::default(), &data, 0, &mut sink);
        // A chain that breaks down after the first frame is refused too.
        sink.refuse_resync = false;
        let mut broken = data.clone();
        broken.extend([0xff; 12]);
        framer.feed(&meta(4, 0), SeqStep::default(), &broken, 0, &mut sink);
        assert_eq!(kinds(&sink.events), ["Data/1", "lost"]);
        framer.feed(&meta(5, 0), SeqStep::default(), &data, 0, &mut sink);
        assert_eq!(kinds(&sink.events), ["Data/1", "lost", "Data/1"]);
        // A malformed header in step is an error.
        framer.feed(
            &meta(6, 0),
            SeqStep::default(),
            &frame(6, 0, 0, &[0; 3]),
            0,
            &mut sink,
        );
        assert_eq!(sink.events.last(), Some(&Event::Lost(true)));
        // A sequence gap at a frame boundary loses framing; inside a payload it is skipped.
        let mut framer = Framer::new(false, 1024);
        let mut sink = Recorder::default();
        framer.feed(&meta(1, 0), SeqStep::default(), &data[..20], 0, &mut sink);
        let gap = SeqStep {
            gap: 89,
            discontinuous: false,
        };
        framer.feed(&meta(2, 0), gap, &data, 0, &mut sink);
        assert_eq!(kinds(&sink.events), ["Data/1", "Data/1"]);
        framer.feed(&meta(3, 0), gap, &data, 0, &mut sink);
        assert_eq!(kinds(&sink.events), ["Data/1", "Data/1", "lost", "Data/1"]);
    }
}
