//! Mutual TLS on the peer port: a group whose certificates come from `deploy/certs.sh` elects
//! a leader and interns through forwarded requests over TLS; plain HTTP, a client without a
//! certificate and a client whose certificate another CA signed are refused (and counted),
//! a client with a good certificate still needs the token, and bad TLS files are clear
//! configuration errors.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Cluster, TOKEN, init_tracing, serial};
use flowmesh_consensus::tls::{PeerTls, PeerTlsFiles};
use flowmesh_consensus::{ConsensusError, DictionaryNode, TOKEN_HEADER, TagKind};
use rustls::pki_types::pem::PemObject;

const LONG: Duration = Duration::from_secs(60);

fn certs(dir: &Path, specs: &[&str]) {
    let out =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/certs.sh"))
            .arg(dir)
            .args(specs)
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn files(dir: &Path, name: &str) -> PeerTlsFiles {
    PeerTlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join("ca.pem"),
    }
}

/// A TLS client trusting `ca_dir`'s CA, presenting `identity` (dir, name) if given.
fn client(ca_dir: &Path, identity: Option<(&Path, &str)>) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca_dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((dir, name)) => {
            let chain =
                rustls::pki_types::CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key")))
                    .unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_over_mutual_tls_works_and_refuses_strangers() {
    let _serial = serial().await;
    init_tracing();
    let pki = tempfile::tempdir().unwrap();
    let mesh = pki.path().join("mesh");
    let rogue = pki.path().join("rogue");
    certs(
        &mesh,
        &[
            "n1=127.0.0.1",
            "n2=127.0.0.1",
            "n3=127.0.0.1",
            "tool=127.0.0.1",
        ],
    );
    certs(&rogue, &["intruder=127.0.0.1"]);

    let mut cluster = Cluster::new(&[1, 2, 3]);
    for id in [1, 2, 3] {
        let mut config = cluster.config(id);
        config.tls = Some(files(&mesh, &format!("n{id}")));
        let node = DictionaryNode::start(config).await.unwrap();
        assert!(node.peer_tls().is_some());
        cluster.nodes.insert(id, node);
    }
    let leader = cluster.wait_for_leader(LONG).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    // a follower forwards its intern to the leader: Raft and forwarding both over TLS
    let strings: Vec<String> = (0..20).map(|i| format!("tls-pod-{i}")).collect();
    let ids = cluster
        .client(follower)
        .intern(TagKind::POD, &strings)
        .await
        .unwrap();
    cluster.wait_converged(LONG).await;
    for id in [1, 2, 3] {
        assert_eq!(
            cluster
                .client(id)
                .intern(TagKind::POD, &strings)
                .await
                .unwrap(),
            ids,
            "node {id}"
        );
    }

    let addr = cluster.addrs[&leader];
    let url = format!("https://{addr}/cluster/status");
    let refused = |c: &Cluster| c.client(leader).stats().tls_refused_connections;
    let before = refused(&cluster);
    // plain HTTP to a TLS port: no answer
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/cluster/status"))
        .header(TOKEN_HEADER, TOKEN)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // TLS without a client certificate, and with one another CA signed: refused
    let no_cert = client(&mesh, None)
        .get(&url)
        .header(TOKEN_HEADER, TOKEN)
        .send()
        .await;
    assert!(
        no_cert.is_err(),
        "a client without a certificate got {no_cert:?}"
    );
    let intruder = client(&mesh, Some((&rogue, "intruder")))
        .get(&url)
        .header(TOKEN_HEADER, TOKEN)
        .send()
        .await;
    assert!(intruder.is_err(), "a client of another CA got {intruder:?}");
    common::eventually("the refusals to be counted", LONG, || {
        (refused(&cluster) >= before + 3).then_some(())
    })
    .await;
    // a server of another CA is not trusted by the mesh's clients either
    let wrong_server = client(&rogue, Some((&mesh, "tool")))
        .get(&url)
        .header(TOKEN_HEADER, TOKEN)
        .send()
        .await;
    assert!(wrong_server.is_err(), "{wrong_server:?}");

    // the mesh's certificate opens the tunnel; the token is still checked inside it
    let tool = client(&mesh, Some((&mesh, "tool")));
    let ok = tool
        .get(&url)
        .header(TOKEN_HEADER, TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let wrong = tool
        .get(&url)
        .header(TOKEN_HEADER, "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    cluster.stop_all().await;
}

#[test]
fn bad_tls_files_are_configuration_errors() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    certs(dir, &["a=127.0.0.1", "b=127.0.0.1"]);
    let message = |f: PeerTlsFiles| match PeerTls::load(&f) {
        Err(ConsensusError::Config { reason }) => reason,
        Err(e) => panic!("not a config error: {e}"),
        Ok(_) => panic!("{f:?} loaded"),
    };
    let mut missing = files(dir, "a");
    missing.cert = dir.join("nope.pem");
    let m = message(missing);
    assert!(m.contains("nope.pem"), "{m}");
    // a key that is not the certificate's
    let mut mismatched = files(dir, "a");
    mismatched.key = dir.join("b.key");
    let m = message(mismatched);
    assert!(m.contains("a.pem") && m.contains("b.key"), "{m}");
    // not PEM at all
    std::fs::write(dir.join("garbage.pem"), "not a certificate").unwrap();
    let mut garbage = files(dir, "a");
    garbage.ca = dir.join("garbage.pem");
    let m = message(garbage);
    assert!(m.contains("garbage.pem"), "{m}");
    assert!(PeerTls::load(&files(dir, "a")).is_ok());
}
