//! The node's persisted libp2p identity: an ed25519 keypair in a 0600 file.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;
use tracing::{info, warn};

use crate::error::FederationError;

/// Loads the keypair at `path`, or creates, persists and returns a new ed25519 keypair if the
/// file does not exist. A file that exists but does not decode is an error, never replaced:
/// that would change the node's peer id behind the operator's back.
pub(crate) fn load_or_create_keypair(path: &Path) -> Result<Keypair, FederationError> {
    match fs::read(path) {
        Ok(bytes) => {
            warn_if_readable_by_others(path);
            Keypair::from_protobuf_encoding(&bytes).map_err(|err| FederationError::DecodeKey {
                path: path.to_owned(),
                reason: err.to_string(),
            })
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            write_key_file(path, &keypair)?;
            info!(path = %path.display(), peer_id = %keypair.public().to_peer_id(), "created mesh key");
            Ok(keypair)
        }
        Err(source) => Err(FederationError::ReadKey {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes to a temporary sibling created with mode 0600, syncs, then renames, so a crash never
/// leaves a truncated key behind and the key is never readable by others, not even briefly.
fn write_key_file(path: &Path, keypair: &Keypair) -> Result<(), FederationError> {
    let write_err = |source| FederationError::WriteKey {
        path: path.to_owned(),
        source,
    };
    let bytes = keypair.to_protobuf_encoding().map_err(|err| {
        write_err(std::io::Error::other(format!(
            "failed to encode keypair: {err}"
        )))
    })?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(write_err)?;
    }
    let tmp_path = tmp_path_for(path);
    // A leftover from a crash during an earlier first start.
    match fs::remove_file(&tmp_path) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => return Err(write_err(err)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp_path)
        .map_err(write_err)?;
    file.write_all(&bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    fs::rename(&tmp_path, path).map_err(write_err)?;
    Ok(())
}

fn tmp_path_for(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(metadata) = fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warn!(path = %path.display(), mode = format!("{mode:o}"), "mesh key file is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded_with_the_same_peer_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh").join("node.key");
        let created = load_or_create_keypair(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let reloaded = load_or_create_keypair(&path).unwrap();
        assert_eq!(
            created.public().to_peer_id(),
            reloaded.public().to_peer_id()
        );
        assert!(!tmp_path_for(&path).exists());
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        fs::write(&path, b"garbage").unwrap();
        let err = load_or_create_keypair(&path).unwrap_err();
        assert!(matches!(err, FederationError::DecodeKey { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"garbage");
    }

    #[test]
    fn a_stale_temporary_file_does_not_block_creation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        fs::write(tmp_path_for(&path), b"half written").unwrap();
        load_or_create_keypair(&path).unwrap();
        assert!(path.exists());
    }
}
