//! Database outages on demand: a TCP proxy in front of the test server that passes
//! traffic, refuses it (every connection cut at once, as a stopped server's host does), or
//! swallows it (connections accepted, nothing ever answered: a hung server or a black-holed
//! network path). Switching away from passing cuts the sessions already open.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Pass = 0,
    Refuse = 1,
    Swallow = 2,
}

pub struct DatabaseProxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    /// Bumped on every switch: open sessions end when it changes.
    generation: watch::Sender<u64>,
}

impl DatabaseProxy {
    /// A proxy to `target` (host:port of the test server), passing traffic.
    pub async fn start(target: String) -> DatabaseProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let (generation, _) = watch::channel(0u64);
        let (accept_mode, accept_generation) = (mode.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = accept_mode.load(Ordering::SeqCst);
                let ended = accept_generation.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    match mode {
                        m if m == Mode::Pass as u8 => pass(client, &target, ended).await,
                        m if m == Mode::Swallow as u8 => swallow(client, ended).await,
                        _ => drop(client),
                    }
                });
            }
        });
        DatabaseProxy { port, mode, generation }
    }

    /// A proxy in front of `config`'s server, and `config` pointed at it.
    pub async fn in_front_of(config: &tokio_postgres::Config) -> (DatabaseProxy, tokio_postgres::Config) {
        let proxy = DatabaseProxy::start(tcp_target(config)).await;
        let proxied = via_loopback(config, proxy.port);
        (proxy, proxied)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }
}

/// `host:port` of a TCP config of the test server.
pub fn tcp_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("the test server must be reached over TCP, not {other:?}"),
    };
    format!("{host}:{}", config.get_ports().first().copied().unwrap_or(5432))
}

/// `config`'s login and database on `port` of loopback (where a proxy listens). A new
/// config: `host` and `port` of an existing one add to its lists.
pub fn via_loopback(config: &tokio_postgres::Config, port: u16) -> tokio_postgres::Config {
    let mut proxied = tokio_postgres::Config::new();
    proxied.host("127.0.0.1").port(port).ssl_mode(config.get_ssl_mode());
    if let Some(user) = config.get_user() {
        proxied.user(user);
    }
    if let Some(password) = config.get_password() {
        proxied.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        proxied.dbname(dbname);
    }
    proxied
}

async fn pass(mut client: TcpStream, target: &str, mut ended: watch::Receiver<u64>) {
    let Ok(mut server) = TcpStream::connect(target).await else { return };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = ended.changed() => {}
    }
}

async fn swallow(mut client: TcpStream, mut ended: watch::Receiver<u64>) {
    let mut sink = [0u8; 4096];
    loop {
        tokio::select! {
            read = client.read(&mut sink) => if matches!(read, Ok(0) | Err(_)) { return },
            _ = ended.changed() => {
                let _ = client.shutdown().await;
                return;
            }
        }
    }
}
