//! [`Mesh`]: the handle the node holds on its mesh membership.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::{Multiaddr, PeerId};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span};

use crate::config::MeshConfig;
use crate::directory::{Directory, PeerState};
use crate::error::FederationError;
use crate::keys::load_or_create_keypair;
use crate::record::NodeRecord;
use crate::stats::{Counters, MeshStats};
use crate::swarm::SwarmTask;

/// State shared by the swarm task and every [`Mesh`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Own record and peer table.
    pub(crate) directory: Mutex<Directory>,
    /// Actual listen addresses, each ending in `/p2p/<own peer id>`.
    pub(crate) listen_addrs: Mutex<Vec<Multiaddr>>,
    pub(crate) counters: Counters,
    /// Bumped whenever the directory changes (record in, peer dead or forgotten, connection
    /// up or down); waiters re-check their predicate on every bump.
    changed: watch::Sender<u64>,
    /// Asks the swarm task to publish now (a permit is kept if the task is busy).
    pub(crate) republish: Notify,
}

impl Shared {
    fn new(directory: Directory) -> Self {
        Self {
            directory: Mutex::new(directory),
            listen_addrs: Mutex::new(Vec::new()),
            counters: Counters::default(),
            changed: watch::Sender::new(0),
            republish: Notify::new(),
        }
    }

    pub(crate) fn notify_changed(&self) {
        self.changed
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }
}

/// A running mesh member: publishes this node's record, keeps the directory of the others.
///
/// Cheap to clone; all clones drive the same swarm task. The task stops on
/// [`Mesh::shutdown`], or when the last clone is dropped (then without waiting for it).
#[derive(Debug, Clone)]
pub struct Mesh {
    inner: Arc<MeshInner>,
}

#[derive(Debug)]
struct MeshInner {
    shared: Arc<Shared>,
    peer_id: PeerId,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Drop for MeshInner {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl Mesh {
    /// Loads (or creates) the identity at `key_path`, binds `config.listen`, starts the swarm
    /// task and dials the seeds. Returns once the listener is up, so
    /// [`Mesh::listen_addrs`] is never empty afterwards.
    ///
    /// `record` is what this node publishes; its `peer_id` and `seq` are overwritten here
    /// and `started_at_ms` is set to now when it is 0. `config.enabled` is not consulted:
    /// the caller decides whether to start a mesh at all.
    pub async fn start(
        config: &MeshConfig,
        key_path: &Path,
        mut record: NodeRecord,
    ) -> Result<Mesh, FederationError> {
        let checked = config.validate()?;
        let key_path = key_path.to_owned();
        let keypair = tokio::task::spawn_blocking(move || load_or_create_keypair(&key_path))
            .await
            .map_err(|err| FederationError::Setup {
                component: "key loader",
                reason: err.to_string(),
            })??;
        let peer_id = keypair.public().to_peer_id();
        record.peer_id = peer_id.to_string();
        record.seq = 0;
        if record.started_at_ms == 0 {
            record.started_at_ms = unix_millis_now();
        }
        let directory = Directory::new(record, checked.dead_after, checked.forget_after);
        let shared = Arc::new(Shared::new(directory));
        let mut task = SwarmTask::new(&checked, keypair, Arc::clone(&shared))?;
        task.listen(&checked.listen).await?;

        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(
            task.run(token.clone())
                .instrument(info_span!("mesh_swarm", %peer_id)),
        );
        tracker.close();
        info!(%peer_id, listen = %checked.listen, seeds = checked.seeds.len(), "mesh started");
        Ok(Mesh {
            inner: Arc::new(MeshInner {
                shared,
                peer_id,
                token,
                tracker,
            }),
        })
    }

    /// This node's libp2p peer id (stable across restarts with the same key file).
    pub fn peer_id(&self) -> String {
        self.inner.peer_id.to_string()
    }

    /// The addresses actually bound (port 0 resolved), each ending in `/p2p/<peer id>`, ready
    /// to be used as another node's seed.
    pub fn listen_addrs(&self) -> Vec<String> {
        self.inner
            .shared
            .listen_addrs
            .lock()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Changes this node's record. A change is published right away (and the heartbeat
    /// restarts from there); an update that changes nothing waits for the next heartbeat.
    /// `peer_id`, `seq` and `started_at_ms` belong to the mesh and are restored after `f`
    /// runs. `f` runs under the directory lock: it must not call back into the mesh.
    pub fn update_record(&self, f: impl FnOnce(&mut NodeRecord)) {
        let changed = {
            let mut directory = self.inner.shared.directory.lock();
            let local = directory.local_mut();
            let before = local.clone();
            f(local);
            local.peer_id.clone_from(&before.peer_id);
            local.seq = before.seq;
            local.started_at_ms = before.started_at_ms;
            *local != before
        };
        if changed {
            self.inner.shared.notify_changed();
            self.inner.shared.republish.notify_one();
        }
    }

    /// Every node known, this one included, sorted by peer id.
    pub fn directory(&self) -> Vec<PeerState> {
        self.inner.shared.directory.lock().snapshot(Instant::now())
    }

    /// This node and every alive peer, sorted by peer id: the candidates for a query.
    pub fn alive_nodes(&self) -> Vec<NodeRecord> {
        self.inner
            .shared
            .directory
            .lock()
            .alive_records(Instant::now())
    }

    /// Waits until at least `n` nodes (this one included) are alive. False on timeout.
    pub async fn wait_for_alive(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(
            |directory| directory.iter().filter(|peer| peer.alive).count() >= n,
            timeout,
        )
        .await
    }

    /// Waits until `predicate` holds for [`Mesh::directory`], re-checking on every directory
    /// change (records, deaths, connections). False on timeout.
    pub async fn wait_for(
        &self,
        predicate: impl Fn(&[PeerState]) -> bool,
        timeout: Duration,
    ) -> bool {
        // Subscribe before the first check so a change between check and wait is not lost.
        let mut changes = self.inner.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if predicate(&self.directory()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in `Shared`, which we hold: closing cannot happen, but if
                // it did there would be nothing more to wait for.
                Ok(Err(_)) | Err(_) => return predicate(&self.directory()),
            }
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> MeshStats {
        let (known, alive) = {
            let directory = self.inner.shared.directory.lock();
            (
                directory.known_peers(),
                directory.alive_peers(Instant::now()),
            )
        };
        self.inner.shared.counters.snapshot(known, alive)
    }

    /// Stops the swarm task (closing every connection and the listener) and returns once it
    /// has ended. Other clones of this handle keep answering from the last directory.
    pub async fn shutdown(self) {
        self.inner.token.cancel();
        self.inner.tracker.wait().await;
        info!(peer_id = %self.inner.peer_id, "mesh stopped");
    }
}

fn unix_millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
