//! [`MeshConfig`]: the `[mesh]` section of the node's config, and its checked form.

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::FederationError;

/// Shortest publish interval accepted: below this the heartbeat alone would load the mesh.
const MIN_PUBLISH_INTERVAL: Duration = Duration::from_millis(10);

/// A peer not heard from for `FORGET_AFTER_DEAD_INTERVALS × dead_after` leaves the directory.
pub const FORGET_AFTER_DEAD_INTERVALS: u32 = 10;

/// Domain-separation prefix for the pre-shared key derived from `cluster_token`.
const PSK_DOMAIN: &[u8] = b"flowmesh/pnet-psk/1\0";

/// Mesh membership settings (`[mesh]` in the node's config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    /// Join the mesh at all. A single node needs no mesh; [`crate::Mesh::start`] does not read
    /// this flag, the node does.
    pub enabled: bool,
    /// libp2p listen multiaddr, `/ip4/…/tcp/…` or `/ip6/…/tcp/…`. Port 0 picks a free port.
    pub listen: String,
    /// Multiaddrs other nodes should dial (announced through identify and Kademlia). Empty:
    /// the actual listen addresses.
    pub advertise: Vec<String>,
    /// Bootstrap multiaddrs. Each may end in `/p2p/<peer id>`; without it the node dials the
    /// address and learns the peer id from the handshake. Unreachable seeds are redialled with
    /// exponential backoff, so seeds may start later than this node. Listing this node itself
    /// is harmless.
    pub seeds: Vec<String>,
    /// Path of the persisted ed25519 keypair (protobuf encoding, mode 0600) that fixes this
    /// node's peer id. Empty: `<data_dir>/mesh/node.key`, filled in by the node.
    pub key_file: String,
    /// Shared secret of a closed mesh. Empty: any node may join. Otherwise every connection
    /// first runs a libp2p private-network handshake keyed with SHA-256 of the token, so a node
    /// without the same token cannot complete a connection.
    pub cluster_token: String,
    /// How often this node republishes its record (its heartbeat).
    #[serde(with = "humantime_serde")]
    pub publish_interval: Duration,
    /// A peer whose last record is older than this is reported not alive. Must exceed
    /// `publish_interval`; three intervals tolerate two lost heartbeats.
    #[serde(with = "humantime_serde")]
    pub dead_after: Duration,
    /// Discover peers on the local network with mDNS. Off by default: mDNS multicasts on every
    /// interface.
    pub mdns: bool,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "/ip4/127.0.0.1/tcp/20419".to_owned(),
            advertise: Vec::new(),
            seeds: Vec::new(),
            key_file: String::new(),
            cluster_token: String::new(),
            publish_interval: Duration::from_secs(5),
            dead_after: Duration::from_secs(15),
            mdns: false,
        }
    }
}

/// One bootstrap address, split into the dialable part and the expected peer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeedAddr {
    /// The multiaddr without a trailing `/p2p/…`.
    pub(crate) addr: Multiaddr,
    /// The peer id from `/p2p/…`, if the config gave one.
    pub(crate) peer_id: Option<PeerId>,
}

/// A [`MeshConfig`] whose addresses parsed and whose durations are consistent. Built by
/// [`MeshConfig::validate`]; [`crate::Mesh::start`] validates on its own, so the node only needs
/// this to report config errors early.
#[derive(Debug, Clone)]
pub struct CheckedMeshConfig {
    pub(crate) listen: Multiaddr,
    pub(crate) advertise: Vec<Multiaddr>,
    pub(crate) seeds: Vec<SeedAddr>,
    pub(crate) psk: Option<[u8; 32]>,
    pub(crate) publish_interval: Duration,
    pub(crate) dead_after: Duration,
    pub(crate) forget_after: Duration,
    pub(crate) mdns: bool,
}

impl CheckedMeshConfig {
    /// How long a silent peer stays in the directory (as not alive) before it is dropped.
    pub fn forget_after(&self) -> Duration {
        self.forget_after
    }
}

impl MeshConfig {
    /// Parses every address and checks the durations, once.
    pub fn validate(&self) -> Result<CheckedMeshConfig, FederationError> {
        let listen = parse_tcp_addr("listen", &self.listen)?;
        if peer_id_suffix(&listen).is_some() {
            return Err(invalid("listen", "must not end in /p2p/<peer id>"));
        }
        let advertise = self
            .advertise
            .iter()
            .map(|addr| parse_tcp_addr("advertise", addr))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seeds = Vec::with_capacity(self.seeds.len());
        for text in &self.seeds {
            let mut addr = parse_tcp_addr("seeds", text)?;
            let peer_id = peer_id_suffix(&addr);
            if peer_id.is_some() {
                addr.pop();
            }
            seeds.push(SeedAddr { addr, peer_id });
        }
        if self.publish_interval < MIN_PUBLISH_INTERVAL {
            return Err(invalid(
                "publish_interval",
                format!("must be at least {MIN_PUBLISH_INTERVAL:?}"),
            ));
        }
        if self.dead_after <= self.publish_interval {
            return Err(invalid(
                "dead_after",
                format!(
                    "must exceed publish_interval ({:?}), or every peer flaps between alive and dead",
                    self.publish_interval
                ),
            ));
        }
        let forget_after = self
            .dead_after
            .checked_mul(FORGET_AFTER_DEAD_INTERVALS)
            .ok_or_else(|| invalid("dead_after", "too large"))?;
        let psk = (!self.cluster_token.is_empty()).then(|| derive_psk(&self.cluster_token));
        Ok(CheckedMeshConfig {
            listen,
            advertise,
            seeds,
            psk,
            publish_interval: self.publish_interval,
            dead_after: self.dead_after,
            forget_after,
            mdns: self.mdns,
        })
    }
}

/// SHA-256 over a domain prefix and the token: a fixed-size key whatever the token's length.
fn derive_psk(token: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(PSK_DOMAIN);
    hasher.update(token.as_bytes());
    hasher.finalize().into()
}

fn invalid(field: &'static str, reason: impl Into<String>) -> FederationError {
    FederationError::InvalidConfig {
        field,
        reason: reason.into(),
    }
}

/// Parses a multiaddr and checks it is something the TCP transport can dial or bind: an IP
/// address followed by a TCP port (DNS names are not resolved by this build).
fn parse_tcp_addr(field: &'static str, text: &str) -> Result<Multiaddr, FederationError> {
    let addr: Multiaddr = text
        .parse()
        .map_err(|err| invalid(field, format!("{text:?} is not a multiaddr: {err}")))?;
    let mut protocols = addr.iter();
    let ip_ok = matches!(protocols.next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_)));
    let tcp_ok = matches!(protocols.next(), Some(Protocol::Tcp(_)));
    let rest_ok = match protocols.next() {
        None => true,
        Some(Protocol::P2p(_)) => protocols.next().is_none(),
        Some(_) => false,
    };
    if !(ip_ok && tcp_ok && rest_ok) {
        return Err(invalid(
            field,
            format!(
                "{text:?} must be /ip4/<addr>/tcp/<port> or /ip6/<addr>/tcp/<port>, optionally followed by /p2p/<peer id>"
            ),
        ));
    }
    Ok(addr)
}

fn peer_id_suffix(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer_id)) => Some(peer_id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_match_the_documented_values() {
        let config = MeshConfig::default();
        assert!(!config.enabled);
        assert_eq!(config.listen, "/ip4/127.0.0.1/tcp/20419");
        let checked = config.validate().unwrap();
        assert_eq!(checked.forget_after(), Duration::from_secs(150));
        assert!(checked.psk.is_none());
    }

    #[test]
    fn parses_from_json_with_humantime_and_rejects_unknown_keys() {
        let config: MeshConfig = serde_json::from_str(
            r#"{"enabled": true, "publish_interval": "200ms", "dead_after": "1s"}"#,
        )
        .unwrap();
        assert!(config.enabled);
        assert_eq!(config.publish_interval, Duration::from_millis(200));
        assert_eq!(config.listen, MeshConfig::default().listen);
        assert!(serde_json::from_str::<MeshConfig>(r#"{"seed": []}"#).is_err());
    }

    #[test]
    fn seeds_split_off_the_peer_id() {
        let peer_id = PeerId::random();
        let config = MeshConfig {
            seeds: vec![
                format!("/ip4/10.0.0.1/tcp/20419/p2p/{peer_id}"),
                "/ip4/10.0.0.2/tcp/20419".to_owned(),
            ],
            ..MeshConfig::default()
        };
        let checked = config.validate().unwrap();
        assert_eq!(checked.seeds[0].peer_id, Some(peer_id));
        assert_eq!(
            checked.seeds[0].addr,
            "/ip4/10.0.0.1/tcp/20419".parse::<Multiaddr>().unwrap()
        );
        assert_eq!(checked.seeds[1].peer_id, None);
    }

    #[test]
    fn rejects_bad_addresses_and_durations() {
        let bad = [
            MeshConfig {
                listen: "not an addr".into(),
                ..MeshConfig::default()
            },
            MeshConfig {
                seeds: vec!["/dns4/seed.example/tcp/20419".into()],
                ..MeshConfig::default()
            },
            MeshConfig {
                advertise: vec!["/ip4/1.2.3.4/udp/1".into()],
                ..MeshConfig::default()
            },
            MeshConfig {
                dead_after: Duration::from_secs(5),
                ..MeshConfig::default()
            },
            MeshConfig {
                publish_interval: Duration::ZERO,
                ..MeshConfig::default()
            },
        ];
        for config in bad {
            let err = config.validate().unwrap_err();
            assert!(
                matches!(err, FederationError::InvalidConfig { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn psk_depends_on_the_token() {
        let a = MeshConfig {
            cluster_token: "alpha".into(),
            ..MeshConfig::default()
        };
        let b = MeshConfig {
            cluster_token: "beta".into(),
            ..MeshConfig::default()
        };
        let psk_a = a.validate().unwrap().psk.unwrap();
        assert_eq!(psk_a, a.validate().unwrap().psk.unwrap());
        assert_ne!(psk_a, b.validate().unwrap().psk.unwrap());
    }
}
