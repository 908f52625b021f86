//! A throwaway TLS-only PostgreSQL cluster, run as the `postgres` user when tests run as root.

use crate::{free_port, unique_suffix};

/// A throwaway PostgreSQL that accepts TLS only (`hostssl` lines alone in `pg_hba.conf`),
/// with a server certificate for `localhost` and `127.0.0.1` signed by a CA of its own;
/// `other_ca` is a CA it has never seen. Stopped and removed on drop.
pub struct TlsCluster {
    pub port: u16,
    /// The CA that signed the server certificate (PEM).
    pub ca: std::path::PathBuf,
    /// Another CA (PEM).
    pub other_ca: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl TlsCluster {
    pub fn start() -> TlsCluster {
        let dir = std::env::temp_dir().join(format!("login-etl-tls-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        make_certificates(&dir);
        let run = |program: &str, args: &[&str]| run_in(&dir, program, args);

        let root = running_as_root();
        let as_postgres = |program: &std::path::Path, args: &[&str]| {
            let mut command = if root {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                std::process::Command::new(program)
            };
            let output = command.args(args).output().expect("postgres tool");
            assert!(
                output.status.success(),
                "{program:?} {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let data = dir.join("data");
        if root {
            run("chown", &["-R", "postgres:", "."]);
        }
        as_postgres(
            &pg_tool("initdb"),
            &["-D", data.to_str().expect("utf-8"), "-U", "postgres", "--auth=trust", "--no-sync"],
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .expect("pg_hba.conf");
        for file in ["server.crt", "server.key"] {
            std::fs::copy(dir.join(file), data.join(file)).expect("certificate into the data dir");
        }
        if root {
            run("chown", &["-R", "postgres:", "."]);
        }
        run("chmod", &["600", "data/server.key"]);
        let port = free_port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c ssl=on -c ssl_cert_file=server.crt \
             -c ssl_key_file=server.key -c fsync=off",
            dir.display()
        );
        let log = dir.join("server.log");
        as_postgres(
            &pg_tool("pg_ctl"),
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-l",
                log.to_str().expect("utf-8"),
                "-w",
                "-t",
                "30",
                "-o",
                &options,
                "start",
            ],
        );
        TlsCluster { port, ca: dir.join("ca.pem"), other_ca: dir.join("other-ca.pem"), dir }
    }

    /// A libpq URL for this cluster (host `localhost`), with extra query parameters.
    pub fn url(&self, params: &str) -> String {
        format!("postgres://postgres@localhost:{}/postgres?{params}", self.port)
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let mut command = if running_as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_tool("pg_ctl"));
            c
        } else {
            std::process::Command::new(pg_tool("pg_ctl"))
        };
        let _ = command.args(["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// In `dir`: `ca.pem`/`ca.key` (a CA of its own), `other-ca.pem` (a CA nobody trusts), and
/// `server.crt`/`server.key` for `localhost` and `127.0.0.1`, signed by the first.
pub fn make_certificates(dir: &std::path::Path) {
    let run = |program: &str, args: &[&str]| run_in(dir, program, args);
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for (name, cn) in [("ca", "login-etl test CA"), ("other-ca", "a CA nobody trusts")] {
        let (key, pem, subject) = (format!("{name}.key"), format!("{name}.pem"), format!("/CN={cn}"));
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject]);
        run("openssl", &args);
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    run("openssl", &args);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

fn run_in(dir: &std::path::Path, program: &str, args: &[&str]) {
    let output = std::process::Command::new(program).args(args).current_dir(dir).output();
    let output = output.unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Whether the tests run as root (then the server runs as `postgres`).
fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A PostgreSQL server tool: on PATH, else the newest under /usr/lib/postgresql.
fn pg_tool(name: &str) -> std::path::PathBuf {
    if let Ok(output) = std::process::Command::new("sh").args(["-c", &format!("command -v {name}")]).output()
        && output.status.success()
    {
        return std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    }
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path().join("bin").join(name))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| panic!("{name} not found: scripts/stack.sh deps installs PostgreSQL"))
}
