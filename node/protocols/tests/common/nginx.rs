//! HTTP/1 exchanges recorded from nginx (tests/fixtures/README.md): `http1/<name>.request`
//! holds the bytes the client wrote on one connection, `http1/<name>.response` the bytes
//! it read back.

use super::read_fixture;

/// The request and the response bytes of fixture `name`.
pub fn load(name: &str) -> (Vec<u8>, Vec<u8>) {
    let read = |ext: &str| read_fixture("http1", &format!("{name}.{ext}"));
    (read("request"), read("response"))
}
