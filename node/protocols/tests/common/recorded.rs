//! Recorded conversations as `.bin` fixtures (records of a direction byte — `c`, `>` or 0
//! from the client, `s`, `<` or 1 from the server — a big-endian u32 length and the bytes of
//! one syscall), replayed from either side, whole or with a capture cap.

use flowmesh_protocols::L7Protocol;

use super::{Wire, directions, read_fixture};

/// One recorded syscall: whether the client sent it, and its bytes.
pub type Recorded = (bool, Vec<u8>);

/// `tests/fixtures/<dir>/<name>.bin`.
pub fn load(dir: &str, name: &str) -> Vec<Recorded> {
    let bytes = read_fixture(dir, &format!("{name}.bin"));
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while let [direction, l0, l1, l2, l3, tail @ ..] = rest {
        let len = u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize;
        assert!(
            len <= tail.len() && matches!(direction, b'c' | b's' | b'>' | b'<' | 0 | 1),
            "{name}: bad record"
        );
        out.push((matches!(direction, b'c' | b'>' | 0), tail[..len].to_vec()));
        rest = &tail[len..];
    }
    assert!(rest.is_empty(), "{name}: trailing bytes");
    out
}

/// The default capture per syscall, and no limit.
pub const CAPS: [usize; 2] = [usize::MAX, 1024];

/// Feeds `recorded` as seen by the client (`server == false`) or the server, each record
/// one syscall of which the first `cap` bytes are captured, then closes the socket.
pub fn feed(recorded: &[Recorded], server: bool, cap: usize) -> Wire {
    let (requests, responses) = directions(server);
    let mut wire = Wire::new();
    for (from_client, bytes) in recorded {
        let direction = if *from_client { requests } else { responses };
        wire.send_capped(direction, bytes, cap);
    }
    wire.close();
    wire
}

/// [`feed`], checking that the conversation was recognised as `protocol`.
pub fn replay(recorded: &[Recorded], server: bool, cap: usize, protocol: L7Protocol) -> Wire {
    let wire = feed(recorded, server, cap);
    assert_eq!(wire.conversation.protocol(), Some(protocol));
    wire
}

/// Every (server side?, capture cap) pair.
pub fn views() -> impl Iterator<Item = (bool, usize)> {
    [false, true]
        .into_iter()
        .flat_map(|server| CAPS.into_iter().map(move |cap| (server, cap)))
}

/// Bytes sent by the client (or the server) over the whole recording.
pub fn total(recorded: &[Recorded], from_client: bool) -> u64 {
    recorded
        .iter()
        .filter(|(c, _)| *c == from_client)
        .map(|(_, b)| b.len() as u64)
        .sum()
}
