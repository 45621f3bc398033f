//! Conversations recorded as `.chunks` fixtures: per syscall a header line
//! `<direction> <length> [<bytes kept>]` (`>` client to server), the bytes kept, and a
//! newline. Replayed from either side, capped, or cut further.

use super::{Wire, read_fixture};

/// No capture cap.
pub const UNCAPPED: usize = usize::MAX;

/// One recorded recv(): client to server or back, its length, the bytes kept of it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub to_server: bool,
    pub len: u32,
    pub bytes: Vec<u8>,
}

/// `tests/fixtures/<dir>/<name>.chunks`.
pub fn load(dir: &str, name: &str) -> Vec<Recorded> {
    let data = read_fixture(dir, &format!("{name}.chunks"));
    let mut chunks = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let newline = rest.iter().position(|&b| b == b'\n').expect("header line");
        let header = std::str::from_utf8(&rest[..newline]).expect("ascii header");
        let fields: Vec<&str> = header.split(' ').collect();
        let len: u32 = fields[1].parse().expect("length");
        let kept: usize = fields
            .get(2)
            .map_or(len as usize, |k| k.parse().expect("kept"));
        let bytes = rest[newline + 1..newline + 1 + kept].to_vec();
        assert_eq!(rest[newline + 1 + kept], b'\n', "{name}: record separator");
        chunks.push(Recorded {
            to_server: fields[0] == ">",
            len,
            bytes,
        });
        rest = &rest[newline + 2 + kept..];
    }
    chunks
}

/// Replays chunks as seen by a client (`server == false`) or by the server, keeping at
/// most `cap` bytes of each syscall.
pub fn replay(chunks: &[Recorded], server: bool, cap: usize) -> Wire {
    let mut wire = Wire::new();
    let (requests, replies) = super::directions(server);
    for chunk in chunks {
        let direction = if chunk.to_server { requests } else { replies };
        let kept = &chunk.bytes[..chunk.bytes.len().min(cap)];
        wire.send_raw(direction, kept, chunk.len);
    }
    wire.close();
    wire
}

/// Replays `chunks` with each recorded syscall cut into pieces at `cuts` (offsets taken
/// modulo its length), as if the bytes had been read or written in smaller syscalls.
pub fn replay_split(chunks: &[Recorded], cuts: &[Vec<usize>]) -> Wire {
    let mut split = Vec::new();
    for (chunk, cuts) in chunks
        .iter()
        .zip(cuts.iter().chain(std::iter::repeat(&Vec::new())))
    {
        let len = chunk.bytes.len();
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|p| p % len.max(1))
            .filter(|&p| p > 0)
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut start = 0;
        for point in points.into_iter().chain(std::iter::once(len)) {
            split.push(Recorded {
                to_server: chunk.to_server,
                len: (point - start) as u32,
                bytes: chunk.bytes[start..point].to_vec(),
            });
            start = point;
        }
    }
    replay(&split, false, UNCAPPED)
}
