//! `SocketEventHeader` must have exactly the layout of `struct fm_socket_event`
//! in `bpf/socket_trace.h`: this compiles a C program against the header, prints
//! the size, alignment and every field's offset and size, and compares with Rust.

use std::mem::{align_of, offset_of, size_of};
use std::path::Path;
use std::process::Command;

use flowmesh_ebpf::{HEADER_LEN, MAX_PAYLOAD, SocketEventHeader};

/// Field name, Rust offset, Rust size.
fn rust_fields() -> Vec<(&'static str, usize, usize)> {
    macro_rules! fields {
        ($($field:ident: $ty:ty),+ $(,)?) => {
            vec![$((stringify!($field), offset_of!(SocketEventHeader, $field), size_of::<$ty>())),+]
        };
    }
    fields!(
        enter_ns: u64,
        exit_ns: u64,
        sock_id: u64,
        syscall_trace_id: u64,
        tgid: u32,
        tid: u32,
        fd: i32,
        byte_count: u32,
        payload_len: u32,
        tcp_seq: u32,
        kind: u8,
        direction: u8,
        family: u8,
        l4_proto: u8,
        syscall: u8,
        flags: u8,
        local_port: u16,
        remote_port: u16,
        local_addr: [u8; 16],
        remote_addr: [u8; 16],
        comm: [u8; 16],
    )
}

fn c_program(fields: &[(&str, usize, usize)]) -> String {
    let mut program = String::from(
        "#include <linux/types.h>\n\
         #include <stddef.h>\n\
         #include <stdio.h>\n\
         #include \"socket_trace.h\"\n\
         #define F(name) printf(\"field \" #name \" %zu %zu\\n\", \
             offsetof(struct fm_socket_event, name), sizeof(((struct fm_socket_event *)0)->name))\n\
         int main(void) {\n\
         printf(\"size %zu\\n\", sizeof(struct fm_socket_event));\n\
         printf(\"align %zu\\n\", _Alignof(struct fm_socket_event));\n\
         printf(\"max_payload %d\\n\", FM_MAX_PAYLOAD);\n",
    );
    for (name, _, _) in fields {
        program.push_str(&format!("F({name});\n"));
    }
    program.push_str("return 0;\n}\n");
    program
}

#[test]
fn rust_header_matches_the_c_header() {
    let bpf_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("layout.c");
    let binary = dir.path().join("layout");
    let fields = rust_fields();
    std::fs::write(&source, c_program(&fields)).expect("write layout.c");

    let compile = Command::new("cc")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(&bpf_dir)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output()
        .expect("run cc (a C compiler is needed for this test)");
    assert!(
        compile.status.success(),
        "compiling the layout probe against bpf/socket_trace.h failed:\n{}",
        String::from_utf8_lossy(&compile.stderr)
    );
    let run = Command::new(&binary).output().expect("run layout probe");
    assert!(run.status.success(), "layout probe failed");
    let stdout = String::from_utf8(run.stdout).expect("utf-8 probe output");

    let mut c_fields = Vec::new();
    let (mut c_size, mut c_align, mut c_max_payload) = (None, None, None);
    for line in stdout.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["size", n] => c_size = n.parse::<usize>().ok(),
            ["align", n] => c_align = n.parse::<usize>().ok(),
            ["max_payload", n] => c_max_payload = n.parse::<u32>().ok(),
            ["field", name, offset, size] => c_fields.push((
                name.to_string(),
                offset.parse::<usize>().expect("offset"),
                size.parse::<usize>().expect("size"),
            )),
            _ => panic!("unexpected probe line {line:?}"),
        }
    }

    assert_eq!(
        c_size,
        Some(size_of::<SocketEventHeader>()),
        "sizeof differs"
    );
    assert_eq!(c_size, Some(HEADER_LEN));
    assert_eq!(
        c_align,
        Some(align_of::<SocketEventHeader>()),
        "alignment differs"
    );
    assert_eq!(c_max_payload, Some(MAX_PAYLOAD), "FM_MAX_PAYLOAD differs");
    assert_eq!(c_fields.len(), fields.len());
    for ((rust_name, rust_offset, rust_size), (c_name, c_offset, c_size)) in
        fields.iter().zip(&c_fields)
    {
        assert_eq!(*rust_name, c_name, "field order differs");
        assert_eq!(
            (*rust_offset, *rust_size),
            (*c_offset, *c_size),
            "field {rust_name}: rust (offset, size) vs C"
        );
    }

    // Every field is listed: the fields' sizes add up to the struct minus its
    // trailing padding, so a field added on one side only cannot slip through.
    let last_end = fields
        .iter()
        .map(|(_, offset, size)| offset + size)
        .max()
        .unwrap_or(0);
    let covered: usize = fields.iter().map(|(_, _, size)| size).sum();
    assert_eq!(
        covered, last_end,
        "fields overlap or leave interior padding"
    );
    assert!(size_of::<SocketEventHeader>() - last_end < align_of::<SocketEventHeader>());
}
