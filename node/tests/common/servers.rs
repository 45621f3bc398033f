//! Real servers from Debian for end-to-end tests, each on a free loopback port with its
//! data in a temporary directory, stopped when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{free_port, wait_for};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listening(port: u16) -> Option<()> {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .ok()
        .map(|_| ())
}

/// A server process killed on drop.
pub struct Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    stop: Option<Command>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = &mut self.stop {
            let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(cmd: &mut Command, port: u16, dir: tempfile::TempDir, what: &str) -> Server {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    wait_for(
        Duration::from_secs(30),
        &format!("{what} to listen on {port}"),
        || listening(port),
    );
    Server {
        port,
        dir,
        child: Some(child),
        stop: None,
    }
}

pub fn redis() -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    spawn(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(dir.path()),
        port,
        dir,
        "redis-server",
    )
}

pub fn memcached() -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    spawn(
        Command::new("memcached").args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-u",
            "root",
        ]),
        port,
        dir,
        "memcached",
    )
}

pub fn mosquitto() -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    spawn(
        Command::new("mosquitto").arg("-c").arg(&conf),
        port,
        dir,
        "mosquitto",
    )
}

/// dnsmasq answering for `example.test` (A, AAAA, MX, TXT) and NXDOMAIN for the rest of
/// `.test`, on UDP and TCP.
pub fn dnsmasq() -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("dnsmasq");
    cmd.args([
        "--no-daemon",
        "--port",
        &port.to_string(),
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--local=/test/",
        "--address=/www.example.test/10.0.0.1",
        "--host-record=v6.example.test,fd00::1",
        "--mx-host=example.test,mail.example.test,10",
        "--txt-record=example.test,hello",
        "--user=root",
    ]);
    // an optional-argument option: the value must follow '='
    cmd.arg(format!(
        "--pid-file={}",
        dir.path().join("dnsmasq.pid").display()
    ));
    spawn(&mut cmd, port, dir, "dnsmasq")
}

/// PostgreSQL 15 as the `postgres` user, trust authentication on loopback TCP.
pub fn postgres() -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    run(Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir.path()));
    let bin = pg_bin();
    run(Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(&data));
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=off -c fsync=off",
        dir.path().display()
    );
    run(Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .args(["-o", &opts, "-l"])
        .arg(dir.path().join("pg.log"))
        .args(["-w", "start"]));
    let mut stop = Command::new("runuser");
    stop.args(["-u", "postgres", "--"])
        .arg(bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .args(["-m", "immediate", "stop"]);
    wait_for(Duration::from_secs(30), "postgres to listen", || {
        listening(port)
    });
    Server {
        port,
        dir,
        child: None,
        stop: Some(stop),
    }
}

pub fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("postgresql is not installed")
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    versions.sort();
    versions.pop().expect("no postgresql version")
}

/// MariaDB on loopback TCP; root without a password.
pub fn mariadb() -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    run(Command::new("mariadb-install-db")
        .args([
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .arg(format!("--datadir={}", data.display())));
    let mut cmd = Command::new("mariadbd");
    cmd.args([
        "--no-defaults",
        "--user=root",
        "--bind-address=127.0.0.1",
        "--skip-name-resolve",
        "--ssl=0",
    ])
    .arg(format!("--port={port}"))
    .arg(format!("--datadir={}", data.display()))
    .arg(format!(
        "--socket={}",
        dir.path().join("mysqld.sock").display()
    ))
    .arg(format!(
        "--pid-file={}",
        dir.path().join("mysqld.pid").display()
    ));
    spawn(&mut cmd, port, dir, "mariadbd")
}

/// The directory of a server, for sockets and logs.
pub fn path(server: &Server) -> &Path {
    server.dir.path()
}
