//! Rough capture-rate check (run as root): loads the tracer, starts a python3
//! child that writes N 64-byte messages over a loopback TCP connection, and
//! reports how many of the child's events arrived and how many the kernel dropped.
//!
//! `cargo run -p flowmesh-ebpf --release --example capture_rate -- [messages]`

use std::error::Error;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use flowmesh_ebpf::{Direction, SocketTracer, TracerConfig};

const WRITER: &str = r#"
import os, socket, sys
n = int(sys.argv[1])
lsn = socket.socket(); lsn.bind(("127.0.0.1", 0)); lsn.listen(1)
cli = socket.create_connection(lsn.getsockname()); srv, _ = lsn.accept()
msg = b"x" * 64
fd = cli.fileno()
for _ in range(n):
    os.write(fd, msg)
    srv.recv(64)
"#;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("capture_rate: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let messages: u64 = std::env::args().nth(1).map_or(Ok(200_000), |a| a.parse())?;
    let mut tracer = SocketTracer::load(&TracerConfig::default())?;
    let mut child = Command::new("/usr/bin/env")
        .args(["python3", "-c", WRITER, &messages.to_string()])
        .stdout(Stdio::null())
        .spawn()?;
    let child_pid = child.id();
    let started = Instant::now();
    let (mut egress, mut ingress, mut all) = (0u64, 0u64, 0u64);
    let mut count = |event: flowmesh_ebpf::SocketEvent<'_>| {
        all += 1;
        if event.header.tgid == child_pid {
            match event.header.data_direction() {
                Some(Direction::Egress) => egress += 1,
                Some(Direction::Ingress) => ingress += 1,
                _ => {}
            }
        }
    };
    loop {
        tracer.poll(Duration::from_millis(100), &mut count)?;
        if child.try_wait()?.is_some() {
            while tracer.poll(Duration::ZERO, &mut count)? > 0 {}
            break;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "messages {messages}: egress events {egress}, ingress events {ingress}, all events {all} \
         in {:.2}s ({:.0} events/s); lost {}, malformed {}",
        elapsed.as_secs_f64(),
        all as f64 / elapsed.as_secs_f64(),
        tracer.lost_events()?,
        tracer.malformed_events()
    );
    Ok(())
}
