//! Errors of the capture side (sockets, rings, filters, configuration).
//!
//! Decoding and flow tracking never fail: a frame that cannot be decoded is skipped and
//! counted (see [`crate::DecodeError`] and [`crate::ProcessorStats`]).

use std::io;

/// Everything that can go wrong opening or running a [`crate::PacketCapture`].
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// A [`crate::PacketConfig`] field is out of range.
    #[error("invalid packet capture config: {field} {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No network interface has this name.
    #[error("network interface {interface:?} not found")]
    InterfaceNotFound {
        /// The configured name.
        interface: String,
    },
    /// The process may not open packet sockets (needs root or `CAP_NET_RAW`).
    #[error("permission denied opening a packet socket on {interface:?} (needs CAP_NET_RAW)")]
    PermissionDenied {
        /// The interface being opened.
        interface: String,
    },
    /// The kernel rejected the classic BPF filter.
    #[error(
        "kernel rejected the cbpf filter ({instructions} instructions) on {interface:?}: {source}"
    )]
    InvalidFilter {
        /// The interface being opened.
        interface: String,
        /// Length of the program.
        instructions: usize,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A system call on a packet socket failed.
    #[error("failed to {action} on packet socket for {interface:?}: {source}")]
    Socket {
        /// What was being done (`"create socket"`, `"set up rx ring"`, ...).
        action: &'static str,
        /// The interface of the socket.
        interface: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl PacketError {
    /// Whether opening or polling again later may succeed without a config change (the
    /// interface may appear, a transient OS error may go away).
    pub fn is_retryable(&self) -> bool {
        match self {
            PacketError::InterfaceNotFound { .. } | PacketError::Socket { .. } => true,
            PacketError::InvalidConfig { .. }
            | PacketError::PermissionDenied { .. }
            | PacketError::InvalidFilter { .. } => false,
        }
    }

    /// Whether the operator's configuration is at fault (bad value, unknown interface,
    /// rejected filter, missing privilege) rather than the system.
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            PacketError::InvalidConfig { .. }
                | PacketError::InterfaceNotFound { .. }
                | PacketError::PermissionDenied { .. }
                | PacketError::InvalidFilter { .. }
        )
    }
}
