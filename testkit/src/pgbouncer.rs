//! A throwaway PgBouncer in `pool_mode = transaction` in front of a test database: the
//! transaction-pooling proxy (RDS Proxy in AWS, PgBouncer elsewhere) that lets many
//! function instances share few server connections. Each transaction (or each statement
//! outside one) may run on another server connection, so a session that carries state
//! (a named prepared statement, a session-level `SET`) breaks through it. Debian's
//! PgBouncer 1.18 has no prepared-statement support in this mode: a strict judge.
//! `scripts/stack.sh deps` installs it; the process stops when the value is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, outage::tcp_target, unique_suffix, via_loopback};

pub struct PgBouncer {
    pub port: u16,
    /// The target's login and database, through the pooler.
    pub config: tokio_postgres::Config,
    server_connections: u32,
    child: Child,
    dir: PathBuf,
}

impl PgBouncer {
    /// A PgBouncer on a free port of loopback, in transaction mode, with `server_connections`
    /// server connections to `target`'s database at most, whatever the number of clients.
    /// Authentication is `trust` (the test cluster's own): the auth file names the target's
    /// login, which connects as itself.
    pub async fn in_front_of(target: &tokio_postgres::Config, server_connections: u32) -> PgBouncer {
        let user = target.get_user().expect("the target names its login");
        let dbname = target.get_dbname().expect("the target names its database");
        let (host, port) =
            tcp_target(target).rsplit_once(':').map(|(h, p)| (h.to_owned(), p.to_owned())).unwrap();
        let dir = std::env::temp_dir().join(format!("login-etl-pgbouncer-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let listen_port = free_port();
        let as_root = running_as_root();
        std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")).expect("auth file");
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n\
                 {dbname} = host={host} port={port} dbname={dbname}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {listen_port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {auth}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {server_connections}\n\
                 max_db_connections = {server_connections}\n\
                 min_pool_size = 0\n\
                 reserve_pool_size = 0\n\
                 max_client_conn = 1000\n\
                 server_lifetime = 3600\n\
                 server_idle_timeout = 600\n\
                 query_wait_timeout = 60\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n\
                 {user_line}",
                auth = dir.join("users.txt").display(),
                // PgBouncer refuses to run as root: it drops to `postgres` after reading
                // its files (the stack's cluster runs as that user too).
                user_line = if as_root { "user = postgres\n" } else { "" },
            ),
        )
        .expect("pgbouncer.ini");
        if as_root {
            // Readable by the user it drops to.
            let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&dir).status();
        }
        let log = std::fs::File::create(dir.join("pgbouncer.log")).expect("pgbouncer log");
        let child = Command::new(binary())
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start pgbouncer (scripts/stack.sh deps installs it)");
        let bouncer = PgBouncer {
            port: listen_port,
            config: via_loopback(target, listen_port),
            server_connections,
            child,
            dir,
        };
        bouncer.wait_until_listening().await;
        bouncer
    }

    /// What PgBouncer logged so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    /// Each server connection, as its next client sees it, carries nothing a client left:
    /// no session setting of the bounds and no named prepared statement. One transaction
    /// per server connection, all open at once, so each holds a different one.
    pub async fn assert_server_connections_clean(&self) {
        let mut clients = Vec::new();
        for _ in 0..self.server_connections {
            let client = crate::connect(&self.config).await;
            client.batch_execute("BEGIN").await.expect("begin");
            clients.push(client);
        }
        let mut seen = Vec::new();
        for client in &clients {
            let row = client
                .query_typed_one(
                    "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),
                            (SELECT count(*) FROM pg_prepared_statements), pg_backend_pid()",
                    &[],
                )
                .await
                .expect("what the server connection carries");
            let pid: i32 = row.get(3);
            let left = (row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, i64>(2));
            assert_eq!(
                left,
                ("0".to_owned(), "0".to_owned(), 0),
                "server connection {pid}: (statement_timeout, lock_timeout, prepared statements) left"
            );
            seen.push(pid);
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), clients.len(), "one transaction per server connection");
        for client in clients {
            client.batch_execute("ROLLBACK").await.expect("rollback");
        }
    }

    async fn wait_until_listening(&self) {
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "pgbouncer did not start:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `pgbouncer` on PATH, else where Debian puts it (/usr/sbin is not on every PATH).
fn binary() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("pgbouncer"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| Path::new("/usr/sbin/pgbouncer").to_owned())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}
