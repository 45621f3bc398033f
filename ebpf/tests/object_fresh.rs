//! The committed `bpf/socket_trace.bpf.o` (embedded by the crate) must be exactly
//! what `bpf/build.sh` produces from the committed sources, so that a plain
//! `cargo build` needs no clang and still runs the code that is reviewed.

use std::path::Path;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

#[test]
fn committed_object_matches_a_fresh_build() {
    for tool in ["clang-19", "llvm-strip-19"] {
        assert!(
            have(tool),
            "{tool} not found: install clang-19 and llvm-19 (apt-get install clang-19 llvm-19) \
             to check the committed eBPF object"
        );
    }
    let bpf_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
    let out_dir = tempfile::tempdir().expect("temp dir");
    let fresh_path = out_dir.path().join("socket_trace.bpf.o");

    let build = Command::new(bpf_dir.join("build.sh"))
        .arg(&fresh_path)
        .output()
        .expect("run ebpf/bpf/build.sh");
    assert!(
        build.status.success(),
        "ebpf/bpf/build.sh failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );

    let fresh = std::fs::read(&fresh_path).expect("read fresh object");
    let committed =
        std::fs::read(bpf_dir.join("socket_trace.bpf.o")).expect("read committed object");
    assert!(
        fresh == committed,
        "ebpf/bpf/socket_trace.bpf.o is stale ({} bytes committed, {} bytes built): \
         run ebpf/bpf/build.sh and commit the refreshed object",
        committed.len(),
        fresh.len()
    );
}
