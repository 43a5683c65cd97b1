//! A throwaway PostgreSQL cluster for tests: one per test binary, started on first use with the
//! server binaries of this machine (`initdb` into a temporary directory, a free loopback port),
//! a fresh database per test, stopped and removed when the test binary exits — even when it is
//! killed, by a watcher process. Never a shared server.
//!
//! Used by the integration tests and, through `#[path]`, by the journal's unit tests.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    socket_dir: PathBuf,
    port: u16,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(1);

/// A URL to a new, empty database in this binary's cluster, or why there is none (no server
/// binaries on this machine, or the cluster would not start). Tests that get `None` print the
/// reason and pass.
pub fn fresh_database() -> Option<String> {
    match CLUSTER.get_or_init(Cluster::start) {
        Ok(cluster) => match cluster.create_database() {
            Ok(url) => Some(url),
            Err(why) => panic!("cannot create a test database: {why}"),
        },
        Err(why) => {
            eprintln!("PostgreSQL test skipped: {why}");
            None
        }
    }
}

fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    // The newest major version: directory names are numbers.
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a server binary as the `postgres` user when we are root (PostgreSQL refuses to run as
/// root), as ourselves otherwise.
fn server_command(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

fn run(mut command: Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

impl Cluster {
    fn start() -> Result<Self, String> {
        let bin =
            server_bin().ok_or("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")?;
        // Kept, not removed on drop: the watcher below removes it after the cluster stops.
        let root = tempfile::Builder::new()
            .prefix("reissuer-pg-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?
            .keep();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:").arg(&root);
                    c
                },
                "chown to postgres",
            )?;
        }
        let data = root.join("data");
        let mut initdb = server_command(&bin, "initdb");
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "reissuer",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        run(initdb, "initdb")?;
        let port = free_port()?;
        let mut pg_ctl = server_command(&bin, "pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(root.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                root.display()
            ))
            .args(["-w", "start"]);
        run(pg_ctl, "pg_ctl start")?;
        spawn_watcher(&bin, &root, &data)?;
        Ok(Cluster {
            bin,
            socket_dir: root,
            port,
        })
    }

    fn create_database(&self) -> Result<String, String> {
        let name = format!("t_{}", NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
        let mut psql = Command::new(self.bin.join("psql"));
        psql.arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "reissuer",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"));
        run(psql, "CREATE DATABASE")?;
        Ok(format!(
            "postgres://reissuer@127.0.0.1:{}/{name}",
            self.port
        ))
    }
}

/// Stops the cluster and removes its directory once this process is gone, however it ends.
fn spawn_watcher(bin: &Path, root: &Path, data: &Path) -> Result<(), String> {
    let stop = if is_root() {
        format!(
            "runuser -u postgres -- '{}' -D '{}' -m immediate stop",
            bin.join("pg_ctl").display(),
            data.display()
        )
    } else {
        format!(
            "'{}' -D '{}' -m immediate stop",
            bin.join("pg_ctl").display(),
            data.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{root}'",
        pid = std::process::id(),
        root = root.display()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the cluster's watcher: {e}"))
}
