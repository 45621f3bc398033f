//! Conversations recorded as `.txt` fixtures (DNS, MQTT): one syscall or datagram a line,
//! `c <hex>` sent by the client or `s <hex>` by the server, `---` between connections and
//! `#` before comments.

use super::read_fixture;
use super::recorded::Recorded;

/// `tests/fixtures/<dir>/<name>.txt`: its connections, none of them empty.
pub fn load(dir: &str, name: &str) -> Vec<Vec<Recorded>> {
    let text = String::from_utf8(read_fixture(dir, &format!("{name}.txt"))).expect("text");
    let mut connections = vec![Vec::new()];
    for line in text.lines() {
        match line.split_once(' ') {
            _ if line == "---" => connections.push(Vec::new()),
            _ if line.starts_with('#') => {}
            Some((side @ ("c" | "s"), hex)) => connections
                .last_mut()
                .expect("a connection")
                .push((side == "c", unhex(hex))),
            _ => panic!("{name}: bad fixture line {line:?}"),
        }
    }
    connections.retain(|connection| !connection.is_empty());
    connections
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}
