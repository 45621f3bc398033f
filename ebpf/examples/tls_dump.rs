//! Prints captured TLS plaintext (run as root): loads the tracer, attaches TLS
//! capture to every libssl in use (and re-scans every 2 s, as the node does),
//! then prints one line per data event of the given processes for a while.
//!
//! `cargo run -p flowmesh-ebpf --example tls_dump -- [seconds] [comm ...]`
//!
//! With no comm, every process's TLS plaintext events are printed; with comms,
//! their plaintext and ciphertext data events are (to compare the two).

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use flowmesh_ebpf::{EventKind, SocketEvent, SocketTracer, TracerConfig};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tls_dump: {error}");
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
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(Ok(30), |a| a.parse())?;
    let comms: Vec<String> = args.collect();
    let mut tracer = SocketTracer::load(&TracerConfig::default())?;
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut next_scan = Instant::now();
    while Instant::now() < end {
        if Instant::now() >= next_scan {
            let attached = tracer.attach_tls_discovered()?;
            if attached > 0 {
                for library in tracer.tls_libraries() {
                    eprintln!(
                        "attached {} ({})",
                        library.path.display(),
                        library.symbols.join(", ")
                    );
                }
            }
            next_scan = Instant::now() + Duration::from_secs(2);
        }
        tracer.poll(Duration::from_millis(100), |event| print(&event, &comms))?;
    }
    eprintln!(
        "lost_events {} unattributed_tls_events {}",
        tracer.lost_events()?,
        tracer.unattributed_tls_events()?
    );
    Ok(())
}

fn print(event: &SocketEvent<'_>, comms: &[String]) {
    let h = &event.header;
    let comm = h.comm_str();
    let wanted = if comms.is_empty() {
        h.is_tls()
    } else {
        comms.iter().any(|c| *c == comm)
    };
    if !wanted || h.event_kind() != Some(EventKind::Data) {
        return;
    }
    let preview: String = event
        .payload
        .iter()
        .take(48)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect();
    println!(
        "{comm:<12} pid {:<7} tid {:<7} fd {:<3} sock {:#x} {}:{} -> {}:{} {:?} {:?} {} bytes{} {:?}",
        h.tgid,
        h.tid,
        h.fd,
        h.sock_id,
        h.local_ip(),
        h.local_port,
        h.remote_ip(),
        h.remote_port,
        h.data_direction(),
        h.syscall_kind(),
        h.byte_count,
        if h.is_tls() { " TLS" } else { "" },
        preview,
    );
}
