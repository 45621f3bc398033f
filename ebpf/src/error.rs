//! Errors of loading, attaching and reading the socket tracer.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages are lowercase and name
/// the object involved; the aya error (with the verifier log for a rejected
/// program) is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// The kernel refused with EPERM: the caller lacks the privileges for BPF.
    #[error(
        "permission denied: failed to {action}; capturing with eBPF requires root \
         (or CAP_BPF + CAP_PERFMON)"
    )]
    PermissionDenied {
        /// What was being done, e.g. "create map events".
        action: String,
        /// The underlying aya error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },

    /// The embedded object could not be parsed or its maps could not be created.
    #[error("failed to load eBPF object {object}")]
    Object {
        /// File name of the embedded object.
        object: &'static str,
        /// The underlying aya error.
        #[source]
        source: aya::EbpfError,
    },

    /// The embedded object lacks a program this loader expects (a stale object).
    #[error("eBPF object {object} has no program {program}")]
    MissingProgram {
        /// File name of the embedded object.
        object: &'static str,
        /// The program (C function) name.
        program: &'static str,
    },

    /// The embedded object lacks a map this loader expects (a stale object).
    #[error("eBPF object {object} has no map {map}")]
    MissingMap {
        /// File name of the embedded object.
        object: &'static str,
        /// The map name.
        map: &'static str,
    },

    /// The kernel (usually the verifier) rejected a program.
    #[error("failed to load program {program} into the kernel")]
    ProgramLoad {
        /// The program (C function) name.
        program: &'static str,
        /// The underlying aya error, including the verifier log.
        #[source]
        source: aya::programs::ProgramError,
    },

    /// Attaching a loaded program to its tracepoint failed.
    #[error("failed to attach tracepoint {category}/{name}")]
    Attach {
        /// Tracepoint category, e.g. "syscalls".
        category: &'static str,
        /// Tracepoint name, e.g. "sys_enter_read".
        name: &'static str,
        /// The underlying aya error.
        #[source]
        source: aya::programs::ProgramError,
    },

    /// Attaching a loaded uprobe program to a function of a library failed.
    #[error("failed to attach uprobe {program} to {symbol} in {}", library.display())]
    UprobeAttach {
        /// The program (C function) name.
        program: &'static str,
        /// The function in the library, e.g. "SSL_write".
        symbol: &'static str,
        /// The library file.
        library: PathBuf,
        /// The underlying aya error (boxed: it is large, and this variant
        /// already carries a path).
        #[source]
        source: Box<aya::programs::ProgramError>,
    },

    /// A library given for TLS capture could not be opened.
    #[error("failed to open tls library {}", library.display())]
    TlsLibrary {
        /// The library path as given.
        library: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A library given for TLS capture exports none of the hooked OpenSSL functions.
    #[error(
        "tls library {} exports none of SSL_write, SSL_read, SSL_write_ex, SSL_read_ex",
        library.display()
    )]
    NoTlsSymbols {
        /// The library path as given.
        library: PathBuf,
    },

    /// Opening or reading a map failed.
    #[error("failed to {action} map {map}")]
    Map {
        /// What was being done ("open", "read").
        action: &'static str,
        /// The map name.
        map: &'static str,
        /// The underlying aya error.
        #[source]
        source: aya::maps::MapError,
    },

    /// tracefs (where tracepoint ids live) is not mounted and mounting it failed.
    #[error("failed to mount tracefs at {path} (needed to attach syscall tracepoints)")]
    Tracefs {
        /// The mount point tried.
        path: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// poll(2) on the ring buffer fd failed.
    #[error("failed to poll ring buffer {map}")]
    Poll {
        /// The map name.
        map: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl EbpfError {
    /// Whether the failure was the kernel refusing for lack of privileges.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, EbpfError::PermissionDenied { .. })
    }

    /// Wraps `source` as [`EbpfError::PermissionDenied`] when any error in its
    /// chain is EPERM, otherwise builds the error with `otherwise`.
    ///
    /// Only EPERM counts: the verifier also answers EACCES when it rejects a
    /// program, which is not a privilege problem.
    pub(crate) fn classify<E>(
        action: impl FnOnce() -> String,
        source: E,
        otherwise: impl FnOnce(E) -> Self,
    ) -> Self
    where
        E: StdError + Send + Sync + 'static,
    {
        if chain_has_eperm(&source) {
            EbpfError::PermissionDenied {
                action: action(),
                source: Box::new(source),
            }
        } else {
            otherwise(source)
        }
    }
}

fn chain_has_eperm(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(io_error) = current.downcast_ref::<io::Error>()
            && io_error.raw_os_error() == Some(libc::EPERM)
        {
            return true;
        }
        next = current.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] io::Error);

    #[test]
    fn eperm_anywhere_in_the_chain_means_permission_denied() {
        let err = EbpfError::classify(
            || "attach tracepoint syscalls/sys_enter_read".to_string(),
            Outer(io::Error::from_raw_os_error(libc::EPERM)),
            |e| EbpfError::Poll {
                map: "events",
                source: io::Error::other(e),
            },
        );
        assert!(err.is_permission_denied());
        let message = err.to_string();
        assert!(
            message.contains("attach tracepoint syscalls/sys_enter_read"),
            "{message}"
        );
        assert!(message.contains("requires root"), "{message}");
    }

    #[test]
    fn eacces_from_the_verifier_is_not_permission_denied() {
        let err = EbpfError::classify(
            || "load program fm_enter_read".to_string(),
            Outer(io::Error::from_raw_os_error(libc::EACCES)),
            |e| EbpfError::Poll {
                map: "events",
                source: io::Error::other(e),
            },
        );
        assert!(!err.is_permission_denied());
        assert_eq!(err.to_string(), "failed to poll ring buffer events");
    }
}
