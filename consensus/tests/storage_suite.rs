//! openraft's storage test suite against our sled log store and state machine.

#![allow(clippy::unwrap_used)]

use flowmesh_consensus::TypeConfig;
use flowmesh_consensus::store::{LogStore, StateMachine, open_store};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};

/// Each build gets a fresh directory, removed when the suite drops the guard.
struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir =
            tempfile::tempdir().map_err(|e| StorageIOError::<u64>::write(AnyError::new(&e)))?;
        let (log_store, state_machine, _view) =
            open_store(dir.path()).map_err(|e| StorageIOError::<u64>::write(AnyError::new(&e)))?;
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledStoreBuilder).unwrap();
}
