//! TLS plaintext: the OpenSSL functions the uprobes hook, attaching them to one
//! libssl file, and finding the libssl files that processes have mapped.
//!
//! Probes are attached per file for all processes: a uprobe lives on the file's
//! inode, so one attachment covers every process that maps the file, including
//! processes started later. [`find_libssl_paths`] lists the files in use (also
//! inside other mount namespaces) so the caller can attach newly seen ones.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::programs::uprobe::{UProbeError, UProbeLinkId, UProbeScope};
use aya::programs::{ProgramError, UProbe};

use crate::error::EbpfError;

/// One hooked OpenSSL function: its symbol and the programs for its entry and return.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlsProbe {
    pub(crate) symbol: &'static str,
    pub(crate) entry_program: &'static str,
    pub(crate) return_program: &'static str,
}

/// The hooked functions. A library may lack some (OpenSSL before 1.1.1 has no
/// `_ex` variants); those are skipped.
pub(crate) const TLS_PROBES: [TlsProbe; 4] = [
    TlsProbe {
        symbol: "SSL_write",
        entry_program: "fm_ssl_write_enter",
        return_program: "fm_ssl_write_exit",
    },
    TlsProbe {
        symbol: "SSL_read",
        entry_program: "fm_ssl_read_enter",
        return_program: "fm_ssl_read_exit",
    },
    TlsProbe {
        symbol: "SSL_write_ex",
        entry_program: "fm_ssl_write_ex_enter",
        return_program: "fm_ssl_write_ex_exit",
    },
    TlsProbe {
        symbol: "SSL_read_ex",
        entry_program: "fm_ssl_read_ex_enter",
        return_program: "fm_ssl_read_ex_exit",
    },
];

/// A libssl file the TLS probes are attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsLibrary {
    /// The path it was attached through (as given to
    /// [`SocketTracer::attach_tls`](crate::SocketTracer::attach_tls)).
    pub path: PathBuf,
    /// The hooked functions it exports, in [`TLS_PROBES`] order.
    pub symbols: Vec<&'static str>,
}

/// Identity of a file as the kernel's uprobes see it (they live on the inode):
/// two paths with the same id would attach the same probes twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(crate) fn of(metadata: &fs::Metadata) -> FileId {
        FileId {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

/// Where Debian and Ubuntu install OpenSSL 3's libssl: probed even when no
/// process maps it yet, so that processes started later are covered at once.
#[cfg(target_arch = "x86_64")]
const DISTRO_LIBSSL_PATHS: &[&str] = &["/usr/lib/x86_64-linux-gnu/libssl.so.3"];
#[cfg(target_arch = "aarch64")]
const DISTRO_LIBSSL_PATHS: &[&str] = &["/usr/lib/aarch64-linux-gnu/libssl.so.3"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const DISTRO_LIBSSL_PATHS: &[&str] = &[];

/// The OpenSSL libssl shared objects on this host that are in use: the distro's
/// default libssl (if present), then every `libssl.so*` mapped by a process in
/// `/proc/*/maps`.
///
/// Paths of processes in this process's mount namespace are canonicalized;
/// files of other mount namespaces (containers) are named through
/// `/proc/<pid>/root/<path in the process's namespace>`, which reaches them from
/// here (canonicalizing that would leave the process's root: the kernel shows
/// that link as `/`). Deduplicated by
/// file identity (device and inode), first path wins; deleted files (mapped but
/// since replaced, e.g. by a package upgrade) and unreadable processes are
/// skipped. NSS's `libssl3.so` is not OpenSSL and is not listed.
///
/// Reads every process's maps: meant to be called every few seconds, not in a
/// tight loop.
pub fn find_libssl_paths() -> Vec<PathBuf> {
    let mut found = UniqueFiles::default();
    for path in DISTRO_LIBSSL_PATHS {
        if let Ok(canonical) = fs::canonicalize(path) {
            found.add(canonical);
        }
    }
    let own_namespace = fs::read_link("/proc/self/ns/mnt").ok();
    let Ok(proc_entries) = fs::read_dir("/proc") else {
        return found.paths;
    };
    for entry in proc_entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = std::str::from_utf8(file_name.as_bytes())
            .ok()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let proc_dir = entry.path();
        // Gone or unreadable processes are skipped: they cannot be traced anyway.
        let Ok(maps) = fs::read(proc_dir.join("maps")) else {
            continue;
        };
        let libraries = libssl_paths_in_maps(&maps);
        if libraries.is_empty() {
            continue;
        }
        // The kernel prints a mapped file's path relative to the reader's root
        // when the reader can reach it (same mount namespace, chroots included),
        // else relative to the root of the process's own mount namespace.
        let same_namespace = match (&own_namespace, fs::read_link(proc_dir.join("ns/mnt"))) {
            (Some(own), Ok(theirs)) => *own == theirs,
            _ => true,
        };
        for library in libraries {
            if same_namespace {
                if let Ok(canonical) = fs::canonicalize(&library) {
                    found.add(canonical);
                }
            } else {
                found.add(path_in_process_root(pid, &library));
            }
        }
    }
    found.paths
}

/// Paths deduplicated by the identity of the file they name.
#[derive(Default)]
struct UniqueFiles {
    seen: HashSet<FileId>,
    paths: Vec<PathBuf>,
}

impl UniqueFiles {
    fn add(&mut self, path: PathBuf) {
        let Ok(metadata) = fs::metadata(&path) else {
            return;
        };
        if metadata.is_file() && self.seen.insert(FileId::of(&metadata)) {
            self.paths.push(path);
        }
    }
}

/// `/proc/<pid>/root` joined with an absolute path of that process's mount namespace.
fn path_in_process_root(pid: u32, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    Path::new("/proc")
        .join(pid.to_string())
        .join("root")
        .join(relative)
}

/// The distinct OpenSSL libssl paths in the text of a `/proc/<pid>/maps` file,
/// in order of first appearance; deleted files are left out.
fn libssl_paths_in_maps(maps: &[u8]) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for line in maps.split(|&b| b == b'\n') {
        let Some(path) = maps_line_path(line) else {
            continue;
        };
        if path.ends_with(b" (deleted)") || !path.starts_with(b"/") {
            continue;
        }
        let path = Path::new(OsStr::from_bytes(path));
        let is_libssl = path
            .file_name()
            .is_some_and(|name| name.as_bytes().starts_with(b"libssl.so"));
        if is_libssl && !paths.iter().any(|known| known == path) {
            paths.push(path.to_path_buf());
        }
    }
    paths
}

/// The pathname column of one maps line (`address perms offset dev inode
/// pathname`; the pathname may contain spaces), or `None` for anonymous mappings.
fn maps_line_path(line: &[u8]) -> Option<&[u8]> {
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_ascii_start();
        let end = rest.iter().position(u8::is_ascii_whitespace)?;
        rest = &rest[end..];
    }
    let path = rest.trim_ascii_start();
    (!path.is_empty()).then_some(path)
}

/// Outcome of attaching one program to one symbol.
pub(crate) enum UprobeAttach {
    Attached(UProbeLinkId),
    /// The library does not export the symbol (or could not be parsed as ELF).
    MissingSymbol,
}

/// Attaches the (already loaded) uprobe program `program` to `symbol` in
/// `library`, for all processes.
pub(crate) fn attach_uprobe(
    ebpf: &mut Ebpf,
    program: &'static str,
    symbol: &'static str,
    library: &Path,
) -> Result<UprobeAttach, EbpfError> {
    let uprobe = uprobe_mut(ebpf, program)?;
    match uprobe.attach(symbol, library, UProbeScope::AllProcesses) {
        Ok(link) => Ok(UprobeAttach::Attached(link)),
        Err(ProgramError::UProbeError(UProbeError::SymbolError { .. })) => {
            Ok(UprobeAttach::MissingSymbol)
        }
        Err(source) => Err(EbpfError::classify(
            || {
                format!(
                    "attach uprobe {program} to {symbol} in {}",
                    library.display()
                )
            },
            source,
            |source| EbpfError::UprobeAttach {
                program,
                symbol,
                library: library.to_path_buf(),
                source: Box::new(source),
            },
        )),
    }
}

/// Detaches links made by [`attach_uprobe`]; errors are ignored (the link
/// is gone either way once the program is dropped).
pub(crate) fn detach_uprobe(ebpf: &mut Ebpf, program: &'static str, link: UProbeLinkId) {
    if let Ok(uprobe) = uprobe_mut(ebpf, program) {
        let _ = uprobe.detach(link);
    }
}

/// Loads one uprobe program into the kernel (no attachment yet).
pub(crate) fn load_uprobe(ebpf: &mut Ebpf, program: &'static str) -> Result<(), EbpfError> {
    uprobe_mut(ebpf, program)?.load().map_err(|source| {
        EbpfError::classify(
            || format!("load program {program}"),
            source,
            |source| EbpfError::ProgramLoad { program, source },
        )
    })
}

fn uprobe_mut<'a>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut UProbe, EbpfError> {
    ebpf.program_mut(program)
        .ok_or(EbpfError::MissingProgram {
            object: crate::loader::OBJECT_NAME,
            program,
        })?
        .try_into()
        .map_err(|source| EbpfError::ProgramLoad { program, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 1234                       /usr/bin/python3.11
7f1e4f81e000-7f1e4f844000 r--p 00000000 fe:01 5678                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e5004d000-7f1e50060000 r--p 00000000 fe:01 9012                       /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1e50060000-7f1e500d0000 r-xp 00013000 fe:01 9012                       /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1e50100000-7f1e50110000 r-xp 00000000 fe:01 9013                       /opt/my app/lib/libssl.so.1.1
7f1e50200000-7f1e50210000 r-xp 00000000 fe:01 9014                       /usr/lib/x86_64-linux-gnu/libssl3.so
7f1e50300000-7f1e50310000 r-xp 00000000 fe:01 9015                       /old/libssl.so.3 (deleted)
7f1e50400000-7f1e50410000 rw-p 00000000 00:00 0 
7ffd1a000000-7ffd1a021000 rw-p 00000000 00:00 0                          [stack]
7f1e50500000-7f1e50510000 r-xp 00000000 fe:01 9016                       /usr/lib/x86_64-linux-gnu/libsslcommon.so
";

    #[test]
    fn maps_yield_each_mapped_libssl_once() {
        assert_eq!(
            libssl_paths_in_maps(MAPS.as_bytes()),
            vec![
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
                PathBuf::from("/opt/my app/lib/libssl.so.1.1"),
            ]
        );
        assert!(libssl_paths_in_maps(b"").is_empty());
        assert!(libssl_paths_in_maps(b"garbage\n\n7f-8f r--p").is_empty());
    }

    #[test]
    fn maps_pathname_column_keeps_spaces_and_skips_anonymous_mappings() {
        let line = b"7f-8f r-xp 00000000 fe:01 9013   /opt/my app/libssl.so.3";
        assert_eq!(maps_line_path(line), Some(&b"/opt/my app/libssl.so.3"[..]));
        assert_eq!(maps_line_path(b"7f-8f rw-p 00000000 00:00 0 "), None);
        assert_eq!(maps_line_path(b"7f-8f rw-p 00000000 00:00 0"), None);
        assert_eq!(maps_line_path(b""), None);
    }

    #[test]
    fn other_namespaces_are_reached_through_proc_root() {
        assert_eq!(
            path_in_process_root(42, Path::new("/usr/lib/libssl.so.3")),
            PathBuf::from("/proc/42/root/usr/lib/libssl.so.3")
        );
    }

    #[test]
    fn unique_files_drop_second_paths_to_the_same_file_and_missing_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("libssl.so.3");
        fs::write(&file, b"not really a library").expect("write file");
        let link = dir.path().join("libssl.so");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        let mut found = UniqueFiles::default();
        found.add(file.clone());
        found.add(link);
        found.add(dir.path().join("missing.so"));
        found.add(dir.path().to_path_buf());
        assert_eq!(found.paths, vec![file]);
    }
}
