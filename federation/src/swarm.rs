//! [`SwarmTask`]: the one task that owns the libp2p swarm.
//!
//! It publishes this node's record on a timer and on request, verifies incoming records and
//! tells gossipsub whether to forward them, feeds the directory, redials seeds with backoff and
//! sweeps dead peers. Nothing else touches the swarm, so no locks are held across awaits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, upgrade};
use libp2p::futures::{AsyncRead, AsyncWrite};
use libp2p::multiaddr::Protocol;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, Transport, gossipsub, identify, identity, kad, mdns,
    noise, tcp, yamux,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use crate::config::{CheckedMeshConfig, SeedAddr};
use crate::directory::Applied;
use crate::error::FederationError;
use crate::mesh::Shared;
use crate::record::{self, ENVELOPE_OVERHEAD_BYTES, MAX_RECORD_BYTES, NodeRecord};
use crate::stats::{add, bump};

/// The gossipsub topic carrying node records. The version suffix changes with the wire format.
pub(crate) const RECORDS_TOPIC: &str = "flowmesh/nodes/1";
/// Kademlia protocol name: a private DHT, so flowmesh nodes never join the public IPFS one.
const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/flowmesh/kad/1.0.0");
/// Identify protocol version; peers with another version are still identified.
const IDENTIFY_PROTOCOL: &str = "/flowmesh/id/1.0.0";

/// First delay before redialling an unreachable seed; doubles up to [`SEED_BACKOFF_MAX`].
const SEED_BACKOFF_INITIAL: Duration = Duration::from_millis(250);
const SEED_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long [`SwarmTask::listen`] waits for the listener to report its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for the pnet, noise and yamux handshakes of one connection. Also how long a
/// connection between nodes with different cluster tokens can stall: the private-network
/// handshake cannot tell a wrong key, the garbage that follows sometimes parses as a length
/// prefix, and both ends then wait for bytes that never come.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// Kademlia refreshes its routing table this often (it also bootstraps on new peers).
const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(60);
/// Connections without protocol activity close after this.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Below this many connections, a peer first heard of through gossip is looked up in the DHT
/// and connected to directly, so small meshes become fully connected and survive the loss of
/// the seed that joined them. Larger meshes rely on gossipsub's mesh (at most 12 links).
const DIRECT_PEERS_TARGET: usize = 12;

/// The protocols every mesh member runs.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    kademlia: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// Dial state of one configured seed.
#[derive(Debug)]
struct SeedState {
    addr: Multiaddr,
    /// From the config's `/p2p/…`; never changes.
    configured_peer_id: Option<PeerId>,
    /// Configured, or learned from the first successful connection.
    peer_id: Option<PeerId>,
    backoff: Duration,
    next_attempt: Instant,
    pending: Option<ConnectionId>,
    /// The seed is this node: never dialled.
    is_self: bool,
}

impl SeedState {
    fn new(seed: &SeedAddr, local_peer_id: PeerId, now: Instant) -> Self {
        Self {
            addr: seed.addr.clone(),
            configured_peer_id: seed.peer_id,
            peer_id: seed.peer_id,
            backoff: SEED_BACKOFF_INITIAL,
            next_attempt: now,
            pending: None,
            is_self: seed.peer_id == Some(local_peer_id),
        }
    }

    fn failed(&mut self, now: Instant) {
        self.pending = None;
        self.next_attempt = now + self.backoff;
        self.backoff = (self.backoff * 2).min(SEED_BACKOFF_MAX);
    }
}

/// Owns the swarm; see the module docs.
pub(crate) struct SwarmTask {
    swarm: Swarm<Behaviour>,
    keypair: identity::Keypair,
    topic: gossipsub::IdentTopic,
    shared: Arc<Shared>,
    seeds: Vec<SeedState>,
    local_peer_id: PeerId,
    publish_interval: Duration,
    maintenance_interval: Duration,
}

impl SwarmTask {
    /// Builds the transport and behaviours and subscribes to the records topic. Binds nothing
    /// yet.
    pub(crate) fn new(
        config: &CheckedMeshConfig,
        keypair: identity::Keypair,
        shared: Arc<Shared>,
    ) -> Result<Self, FederationError> {
        let local_peer_id = keypair.public().to_peer_id();
        let transport = build_transport(&keypair, config.psk.map(PreSharedKey::new))?;
        let behaviour = build_behaviour(config, &keypair)?;
        let swarm_config = libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT);
        let mut swarm = Swarm::new(transport, behaviour, local_peer_id, swarm_config);

        let topic = gossipsub::IdentTopic::new(RECORDS_TOPIC);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|err| FederationError::Setup {
                component: "gossipsub subscription",
                reason: err.to_string(),
            })?;
        for addr in &config.advertise {
            swarm.add_external_address(addr.clone());
        }
        let now = Instant::now();
        let seeds: Vec<SeedState> = config
            .seeds
            .iter()
            .map(|seed| SeedState::new(seed, local_peer_id, now))
            .collect();
        for seed in &seeds {
            if let (Some(peer_id), false) = (seed.peer_id, seed.is_self) {
                swarm
                    .behaviour_mut()
                    .kademlia
                    .add_address(&peer_id, seed.addr.clone());
            }
        }
        // Fine enough to notice deaths within a tenth of `dead_after` and to honour short
        // seed backoffs; coarse enough to cost nothing.
        let maintenance_interval =
            (config.dead_after / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
        Ok(Self {
            swarm,
            keypair,
            topic,
            shared,
            seeds,
            local_peer_id,
            publish_interval: config.publish_interval,
            maintenance_interval,
        })
    }

    /// Binds `addr` and waits until the listener reports its actual address.
    pub(crate) async fn listen(&mut self, addr: &Multiaddr) -> Result<(), FederationError> {
        let listen_err = |reason: String| FederationError::Listen {
            addr: addr.to_string(),
            reason,
        };
        let listener = self
            .swarm
            .listen_on(addr.clone())
            .map_err(|err| listen_err(err.to_string()))?;
        let deadline = tokio::time::sleep(LISTEN_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => {
                    return Err(listen_err("timed out waiting for the listener to start".into()));
                }
                event = self.swarm.select_next_some() => match event {
                    SwarmEvent::NewListenAddr { listener_id, .. } if listener_id == listener => {
                        self.on_event(event);
                        return Ok(());
                    }
                    SwarmEvent::ListenerError { listener_id, error } if listener_id == listener => {
                        return Err(listen_err(error.to_string()));
                    }
                    SwarmEvent::ListenerClosed { listener_id, reason, .. } if listener_id == listener => {
                        let reason = match reason {
                            Ok(()) => "listener closed".to_owned(),
                            Err(err) => err.to_string(),
                        };
                        return Err(listen_err(reason));
                    }
                    other => self.on_event(other),
                },
            }
        }
    }

    /// The event loop; returns when `token` is cancelled, dropping (and so closing) the swarm.
    pub(crate) async fn run(mut self, token: CancellationToken) {
        let mut publish_tick = tokio::time::interval(self.publish_interval);
        publish_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintenance_tick = tokio::time::interval(self.maintenance_interval);
        maintenance_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = Arc::clone(&self.shared);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                _ = publish_tick.tick() => self.publish(),
                () = shared.republish.notified() => {
                    self.publish();
                    // The change is out; the heartbeat restarts from here.
                    publish_tick.reset();
                }
                _ = maintenance_tick.tick() => {
                    self.sweep();
                    self.dial_seeds();
                }
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        debug!(peer_id = %self.local_peer_id, "mesh swarm task stopping");
    }

    /// Signs and publishes the current own record with the next `seq`.
    fn publish(&mut self) {
        let record = {
            let mut directory = self.shared.directory.lock();
            let local = directory.local_mut();
            local.seq += 1;
            local.clone()
        };
        let record = sanitize_for_publish(record);
        let counters = &self.shared.counters;
        let bytes = match record::seal(&record, &self.keypair) {
            Ok(bytes) => bytes,
            Err(err) => {
                bump(&counters.publish_errors);
                warn!(seq = record.seq, error = %err, "failed to encode own node record");
                return;
            }
        };
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
        {
            Ok(_) => {
                bump(&counters.records_published);
                trace!(seq = record.seq, "published node record");
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                // Alone, or peers' subscriptions not exchanged yet: the next heartbeat retries.
                bump(&counters.publish_no_peers);
                trace!(
                    seq = record.seq,
                    "no subscribed peers to publish node record to"
                );
            }
            Err(err) => {
                bump(&counters.publish_errors);
                warn!(seq = record.seq, error = %err, "failed to publish node record");
            }
        }
    }

    fn sweep(&mut self) {
        let sweep = self.shared.directory.lock().sweep(Instant::now());
        if sweep.changed() {
            add(&self.shared.counters.peers_died, sweep.died);
            add(&self.shared.counters.peers_forgotten, sweep.forgotten);
            debug!(
                died = sweep.died,
                forgotten = sweep.forgotten,
                "mesh directory swept"
            );
            self.shared.notify_changed();
        }
    }

    /// Dials every seed that is not connected, not being dialled and past its backoff.
    fn dial_seeds(&mut self) {
        let now = Instant::now();
        for seed in &mut self.seeds {
            if seed.is_self || seed.pending.is_some() || now < seed.next_attempt {
                continue;
            }
            if let Some(peer_id) = seed.peer_id
                && self.swarm.is_connected(&peer_id)
            {
                seed.backoff = SEED_BACKOFF_INITIAL;
                continue;
            }
            let opts = match seed.peer_id {
                Some(peer_id) => DialOpts::peer_id(peer_id)
                    .addresses(vec![seed.addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::unknown_peer_id()
                    .address(seed.addr.clone())
                    .build(),
            };
            let connection_id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    seed.pending = Some(connection_id);
                    bump(&self.shared.counters.seed_dials);
                    trace!(addr = %seed.addr, "dialling seed");
                }
                // Already being dialled through another path (kad, mdns).
                Err(DialError::DialPeerConditionFalse(_)) => seed.next_attempt = now + seed.backoff,
                Err(err) => {
                    bump(&self.shared.counters.dial_failures);
                    debug!(addr = %seed.addr, error = %err, "failed to dial seed");
                    seed.failed(now);
                }
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identify(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer_id, addr) in found {
                    debug!(%peer_id, %addr, "discovered peer through mdns");
                    self.swarm
                        .behaviour_mut()
                        .kademlia
                        .add_address(&peer_id, addr.clone());
                    let opts = DialOpts::peer_id(peer_id)
                        .addresses(vec![addr])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    if let Err(err) = self.swarm.dial(opts) {
                        trace!(%peer_id, error = %err, "not dialling mdns peer");
                    }
                }
            }
            SwarmEvent::Behaviour(other) => trace!(event = ?other, "mesh behaviour event"),
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address
                    .with_p2p(self.local_peer_id)
                    .unwrap_or_else(|address| address);
                info!(addr = %full, "mesh listening");
                let mut addrs = self.shared.listen_addrs.lock();
                if !addrs.contains(&full) {
                    addrs.push(full);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address
                    .with_p2p(self.local_peer_id)
                    .unwrap_or_else(|address| address);
                self.shared.listen_addrs.lock().retain(|addr| addr != &full);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(seed) = self
                    .seeds
                    .iter_mut()
                    .find(|seed| seed.pending == Some(connection_id))
                {
                    seed.pending = None;
                    seed.backoff = SEED_BACKOFF_INITIAL;
                    if seed.peer_id.is_none() {
                        debug!(addr = %seed.addr, %peer_id, "learned seed peer id");
                        seed.peer_id = Some(peer_id);
                        self.swarm
                            .behaviour_mut()
                            .kademlia
                            .add_address(&peer_id, seed.addr.clone());
                    }
                }
                if num_established.get() == 1 {
                    debug!(%peer_id, "mesh peer connected");
                    self.connection_changed(peer_id, true);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                debug!(%peer_id, cause = ?cause, "mesh peer disconnected");
                self.connection_changed(peer_id, false);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                bump(&self.shared.counters.dial_failures);
                if let Some(seed) = self
                    .seeds
                    .iter_mut()
                    .find(|seed| seed.pending == Some(connection_id))
                {
                    match &error {
                        DialError::LocalPeerId { .. } => {
                            debug!(addr = %seed.addr, "seed is this node; not dialling it again");
                            seed.is_self = true;
                        }
                        // The seed was redeployed with a new key: learn the new id next time.
                        DialError::WrongPeerId { .. } if seed.configured_peer_id.is_none() => {
                            seed.peer_id = None;
                        }
                        _ => {}
                    }
                    debug!(addr = %seed.addr, backoff = ?seed.backoff, error = %error, "failed to connect to seed");
                    seed.failed(Instant::now());
                } else {
                    trace!(peer_id = ?peer_id, error = %error, "outgoing mesh connection failed");
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                // Among others: a peer with a different cluster token fails here.
                bump(&self.shared.counters.incoming_failures);
                debug!(addr = %send_back_addr, error = %error, "incoming mesh connection failed");
            }
            SwarmEvent::ListenerError { error, .. } => {
                warn!(error = %error, "mesh listener error");
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                warn!(addresses = ?addresses, reason = ?reason, "mesh listener closed");
            }
            _ => {}
        }
    }

    fn connection_changed(&mut self, peer_id: PeerId, connected: bool) {
        let connected_peers = self.swarm.connected_peers().count();
        self.shared.counters.peers_connected.store(
            u64::try_from(connected_peers).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.shared
            .directory
            .lock()
            .set_connected(&peer_id.to_string(), connected);
        self.shared.notify_changed();
    }

    fn on_identify(&mut self, peer_id: PeerId, info: identify::Info) {
        trace!(%peer_id, agent = %info.agent_version, addrs = info.listen_addrs.len(), "identified mesh peer");
        if !info.protocols.contains(&KAD_PROTOCOL) {
            return;
        }
        let kademlia = &mut self.swarm.behaviour_mut().kademlia;
        for addr in info.listen_addrs {
            // Strip a trailing /p2p/…: kad keys addresses by peer id already.
            let addr = match addr.iter().last() {
                Some(Protocol::P2p(_)) => {
                    let mut addr = addr;
                    addr.pop();
                    addr
                }
                _ => addr,
            };
            kademlia.add_address(&peer_id, addr);
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let counters = &self.shared.counters;
                bump(&counters.records_received);
                let acceptance = match verify_message(&message) {
                    Ok((source, record)) => self.accept(source, record),
                    Err(err) => {
                        bump(&counters.records_rejected);
                        debug!(source = ?message.source, %propagation_source, error = %err, "rejected node record");
                        gossipsub::MessageAcceptance::Reject
                    }
                };
                // False when gossipsub no longer holds the message (e.g. a duplicate): nothing
                // to do.
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            gossipsub::Event::Subscribed { peer_id, topic } if topic == self.topic.hash() => {
                // Tell a newcomer about us now rather than at the next heartbeat.
                debug!(%peer_id, "peer subscribed to node records");
                self.shared.republish.notify_one();
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                debug!(%peer_id, "peer does not speak gossipsub");
            }
            other => trace!(event = ?other, "gossipsub event"),
        }
    }

    /// Stores a verified record; the answer tells gossipsub whether to forward it.
    fn accept(&mut self, source: PeerId, record: NodeRecord) -> gossipsub::MessageAcceptance {
        let peer_id = record.peer_id.clone();
        let seq = record.seq;
        let applied = self.shared.directory.lock().apply(record, Instant::now());
        let counters = &self.shared.counters;
        match applied {
            Applied::New | Applied::Newer => {
                bump(&counters.records_accepted);
                if applied == Applied::New {
                    info!(%peer_id, seq, "mesh peer joined");
                    if !self.swarm.is_connected(&source)
                        && self.swarm.connected_peers().count() < DIRECT_PEERS_TARGET
                    {
                        // The lookup walks the DHT towards the peer and so connects to it.
                        debug!(%peer_id, "looking up gossip-only peer to connect directly");
                        self.swarm
                            .behaviour_mut()
                            .kademlia
                            .get_closest_peers(source);
                    }
                }
                self.shared.notify_changed();
                gossipsub::MessageAcceptance::Accept
            }
            Applied::Stale | Applied::Own | Applied::Full => {
                bump(&counters.records_ignored);
                trace!(%peer_id, seq, outcome = ?applied, "ignored node record");
                gossipsub::MessageAcceptance::Ignore
            }
        }
    }
}

/// Checks a gossip message end to end: envelope signature and signer (in [`record::open`])
/// and that the record's peer is the gossip message's author, so a valid record cannot be
/// replayed under another publisher's name.
fn verify_message(message: &gossipsub::Message) -> Result<(PeerId, NodeRecord), FederationError> {
    let record = record::open(&message.data)?;
    match message.source {
        Some(source) if source.to_string() == record.peer_id => Ok((source, record)),
        source => Err(FederationError::PeerMismatch {
            claimed: record.peer_id,
            actual: source.map_or_else(|| "an anonymous publisher".to_owned(), |s| s.to_string()),
        }),
    }
}

/// JSON cannot carry NaN or infinity; a receiver would reject the whole record.
fn sanitize_for_publish(mut record: NodeRecord) -> NodeRecord {
    if !record.load.is_finite() {
        record.load = 0.0;
    }
    record
}

/// TCP, then (with a cluster token) the private-network handshake, then noise and yamux.
fn build_transport(
    keypair: &identity::Keypair,
    psk: Option<PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, FederationError> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    match psk {
        Some(psk) => upgrade_transport(
            tcp.and_then(move |socket, _| PnetConfig::new(psk).handshake(socket)),
            keypair,
        ),
        None => upgrade_transport(tcp, keypair),
    }
}

fn upgrade_transport<T>(
    base: T,
    keypair: &identity::Keypair,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, FederationError>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let noise = noise::Config::new(keypair).map_err(|err| FederationError::Setup {
        component: "noise",
        reason: err.to_string(),
    })?;
    Ok(base
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(UPGRADE_TIMEOUT)
        .boxed())
}

fn build_behaviour(
    config: &CheckedMeshConfig,
    keypair: &identity::Keypair,
) -> Result<Behaviour, FederationError> {
    let local_peer_id = keypair.public().to_peer_id();
    let setup_err = |component: &'static str| {
        move |reason: String| FederationError::Setup { component, reason }
    };

    // Flood publishing sends our own record to every subscribed peer we are connected to,
    // whatever the mesh looks like. Forwarding uses the mesh; the default mesh_n_low (5) makes
    // gossipsub graft every subscriber as soon as it subscribes while the mesh is small, so in
    // meshes of up to seven nodes every connection is a mesh link.
    let gossipsub_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .flood_publish(true)
        .heartbeat_initial_delay(Duration::from_millis(100))
        .max_transmit_size(MAX_RECORD_BYTES + ENVELOPE_OVERHEAD_BYTES + 1024)
        .build()
        .map_err(|err| setup_err("gossipsub")(err.to_string()))?;
    let gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(keypair.clone()),
        gossipsub_config,
    )
    .map_err(|err| setup_err("gossipsub")(err.to_owned()))?;

    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config.set_periodic_bootstrap_interval(Some(KAD_BOOTSTRAP_INTERVAL));
    let mut kademlia = kad::Behaviour::with_config(
        local_peer_id,
        kad::store::MemoryStore::new(local_peer_id),
        kad_config,
    );
    // Every member serves the DHT, even before it knows an external address.
    kademlia.set_mode(Some(kad::Mode::Server));

    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), keypair.public())
            .with_agent_version(format!("flowmesh/{}", env!("CARGO_PKG_VERSION")))
            // With explicit advertise addresses, announce only those (listen addresses are
            // often unreachable from other hosts, e.g. 0.0.0.0 behind NAT).
            .with_hide_listen_addrs(!config.advertise.is_empty()),
    );

    let mdns = if config.mdns {
        let behaviour = mdns::tokio::Behaviour::new(mdns::Config::default(), local_peer_id)
            .map_err(|err| setup_err("mdns")(err.to_string()))?;
        Some(behaviour)
    } else {
        None
    };

    Ok(Behaviour {
        gossipsub,
        kademlia,
        identify,
        mdns: mdns.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: Vec<u8>, source: Option<PeerId>) -> gossipsub::Message {
        gossipsub::Message {
            source,
            data,
            sequence_number: Some(1),
            topic: gossipsub::IdentTopic::new(RECORDS_TOPIC).hash(),
        }
    }

    fn signed_record(keypair: &identity::Keypair) -> Vec<u8> {
        let record = NodeRecord {
            peer_id: keypair.public().to_peer_id().to_string(),
            seq: 1,
            ..NodeRecord::default()
        };
        record::seal(&record, keypair).unwrap()
    }

    #[test]
    fn a_record_must_come_from_its_own_peer() {
        let author = identity::Keypair::generate_ed25519();
        let relay = identity::Keypair::generate_ed25519();
        let bytes = signed_record(&author);
        let author_id = author.public().to_peer_id();
        assert!(verify_message(&message(bytes.clone(), Some(author_id))).is_ok());

        // A valid record re-published by someone else is refused.
        let err =
            verify_message(&message(bytes.clone(), Some(relay.public().to_peer_id()))).unwrap_err();
        assert!(matches!(err, FederationError::PeerMismatch { .. }), "{err}");
        let err = verify_message(&message(bytes, None)).unwrap_err();
        assert!(matches!(err, FederationError::PeerMismatch { .. }), "{err}");
    }

    #[test]
    fn non_finite_load_is_published_as_zero() {
        let record = NodeRecord {
            load: f64::NAN,
            ..NodeRecord::default()
        };
        let record = sanitize_for_publish(record);
        assert_eq!(record.load, 0.0);
        assert!(serde_json::to_vec(&record).is_ok());
    }
}
