//! The demo's script: write the files, start the processes, send logins, show notifications.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use warren_edge::status::EdgeStatus;
use warren_harness::{Pki, Program, free_port};
use warren_hub::status::HubStatus;

pub const USAGE: &str = "\
usage: warren-demo [--dir DIR] [--offline] [--exit]

    --dir DIR    write configs, certificates, state and logs here and keep them
                 (default: a temporary directory, removed on exit)
    --offline    also show offline tolerance: stop the hub, send logins, start it again
    --exit       exit after the script instead of running until Ctrl-C
";

/// How long any step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Options {
    dir: Option<PathBuf>,
    offline: bool,
    exit: bool,
}

impl Options {
    pub fn parse(args: &[OsString]) -> Result<Self, String> {
        let mut o = Self::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.to_str() {
                Some("--dir") => o.dir = Some(it.next().ok_or("--dir needs a value")?.into()),
                Some("--offline") => o.offline = true,
                Some("--exit") => o.exit = true,
                Some("-h" | "--help") => return Err("help".into()),
                _ => return Err(format!("unknown argument {a:?}")),
            }
        }
        Ok(o)
    }
}

type Hub = warren_harness::Hub<HubStatus>;
type Edge = warren_harness::Edge<EdgeStatus>;

fn wait<T>(what: &str, check: impl FnMut() -> Option<T>) -> Result<T, String> {
    warren_harness::wait_until(what, STEP_TIMEOUT, check)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Removes a temporary demo directory on the way out.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

pub fn run(o: &Options) -> Result<(), String> {
    let (dir, _cleanup) = match &o.dir {
        Some(d) => (d.clone(), TempDir(None)),
        None => {
            let d = std::env::temp_dir().join(format!("warren-demo-{}", std::process::id()));
            (d.clone(), TempDir(Some(d)))
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    let d = |name: &str| dir.join(name);
    let show = |p: &Path| p.display().to_string();
    // This binary is every program: `warren-demo --role hub …`.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let program = |role: &str, log: &str| Program::role(&exe, role).logging_to(d(log));

    println!("warren demo in {}", dir.display());
    let pki = Pki::init(&program("hub", "pki.log"), &d("pki"))?;
    let local_port = free_port().map_err(|e| e.to_string())?;
    let notifications = d("notifications.log");
    let hub_config = d("hub.toml");
    let hub_toml = |tls: &str, web: &str| {
        format!(
            r#"# The demo's hub. For a real deployment: listen_tls = "0.0.0.0:8883", a state_dir under
# /var/lib/warren, and notifiers for your phone (see README.md).
state_dir = "{state}"
[broker]
listen_tls = "{tls}"
listen_local = "127.0.0.1:{local_port}"   # plain MQTT for local tools (mosquitto_sub, mqttwarn); read-only
cert_file = "{pki}/hub.pem"
key_file = "{pki}/hub.key"
client_ca_file = "{pki}/ca.pem"            # edges must present a certificate from this CA
crl_file = "{pki}/crl.pem"                 # `hub pki revoke EDGE_ID` cuts an edge off
[legacy]
republish = true                          # hared format on logging/hare
[web]
listen = "{web}"              # the page: sites, edges, recent logins, notifiers (docs/web.md)
refresh = "2s"
[presence]
events = true                             # an edge that stops reporting is an alert
grace = "5s"
[notifier.console]
type = "file"
path = "{notifications}"
[[route]]
match = {{ kind = ["edge_offline", "edge_online"] }}
notify = ["console"]
format = "EDGE {{message}}"
[[route]]
match = {{ kind = "login", first_seen = true }}
notify = ["console"]
format = "User {{user}} logged into {{hostname}} from {{rhost}} at {{tstamp}} [{{site}}], a source never seen for {{user}}"
[[route]]
match = {{ kind = "login" }}
notify = ["console"]
format = "User {{user}} logged into {{hostname}} from {{rhost}} at {{tstamp}} [{{site}}]"
[[route]]
match = {{ kind = "alert" }}
notify = ["console"]
format = "ALERT {{title}}: {{message}} ({{hostname}}, {{site}})"
"#,
            state = show(&d("hub-state")),
            pki = show(&pki.dir),
            notifications = show(&notifications),
        )
    };
    write(&hub_config, &hub_toml("127.0.0.1:0", "127.0.0.1:0"))?;
    let hub_program = program("hub", "hub.log");
    let mut hub = Hub::launch(&hub_program, &hub_config)?;
    let hub_addr = format!("127.0.0.1:{}", hub.port);
    let page = hub.try_status()?.web.unwrap_or_default();
    // Pin the ports the OS chose, so a restarted hub is where the edges (and the browser)
    // look for it.
    let web_addr = page.trim_start_matches("http://").trim_end_matches('/');
    write(&hub_config, &hub_toml(&hub_addr, web_addr))?;
    println!(
        "hub      listening on {hub_addr} (TLS, client certificates), local MQTT on 127.0.0.1:{local_port}"
    );
    println!("         its page: {page}");

    let mut edges = Vec::new();
    for (id, site) in [("home-gw", "home"), ("remote-gw", "remote")] {
        let (cert, key) = pki.try_client(id)?;
        let config = d(&format!("{id}.toml"));
        write(
            &config,
            &format!(
                r#"# A demo edge. For a real deployment: listen on the address hare sends to (port 8035),
# a state_dir under /var/lib/warren, and the hub's real address.
edge_id = "{id}"
site = "{site}"
state_dir = "{state}"
[ingest]
listen = ["127.0.0.1:0"]
[hub]
address = "{hub_addr}"
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"
max_backoff = "2s"
"#,
                state = show(&d(&format!("{id}-state"))),
                ca = show(&pki.ca()),
                cert = show(&cert),
                key = show(&key),
            ),
        )?;
        let edge = Edge::launch(&program("edge", &format!("{id}.log")), id, &config)?;
        wait(id, || edge.try_status().ok().filter(|s| s.link.connected))?;
        println!(
            "edge     {id} (site {site}) takes hare datagrams on {}",
            edge.udp
        );
        edges.push(edge);
    }

    println!("\nnotifications, as the hub delivers them:");
    let tail = Tail::new(&notifications);
    let user = std::env::var("USER").unwrap_or_else(|_| "demo".into());
    let hare = program("hare", "hare.log");
    for (e, rhost) in edges.iter().zip(["192.0.2.10", "198.51.100.7"]) {
        hare_login(&hare, e.udp, &user, rhost)?;
    }
    tail.wait_for(2)?;

    if o.offline {
        // Let the acks land first, so what the edge holds below is only what the hub missed.
        for e in &edges {
            drained(e)?;
        }
        println!("\n--offline: stopping the hub; the remote edge keeps what it receives.");
        hub.stop();
        let remote = &edges[1];
        for who in ["alice", "bob", "carol"] {
            hare_login(&hare, remote.udp, who, "203.0.113.5")?;
        }
        let st = wait("the edge to queue three logins", || {
            remote.try_status().ok().filter(|s| s.queue_depth >= 3)
        })?;
        println!(
            "edge     {} holds {} events on disk while the hub is down",
            remote.id, st.queue_depth
        );
        println!("starting the hub again…");
        hub = Hub::launch(&hub_program, &hub_config)?;
        tail.wait_for(5)?;
        let st = drained(remote)?;
        println!(
            "each arrived once; {} now holds {} events",
            remote.id, st.queue_depth
        );
    }

    let run = "cargo run -q -p";
    println!(
        r#"
warren is running. Try:
  send a login:   PAM_USER=eve {run} hare -- {home}
  send an alert:  {run} hare -- alert --title "Power" --message "Mains lost" --priority 2 {remote}
  send a test:    {run} hare -- test {home}
  follow it:      {run} warren-hub -- trace --socket {hub_sock} ID
                  {run} warren-edge -- trace --socket {home_sock} ID
  edge status:    {run} warren-edge -- status --socket {home_sock}
  hub status:     {run} warren-hub -- status --socket {hub_sock}
  legacy topic:   mosquitto_sub -p {local_port} -t logging/hare -v
  look at it:     {page} in a browser (or curl {page}api/v1/events)
Files (configs, certificates, state, logs) are in {dir}.{stop}"#,
        home = edges[0].udp,
        remote = edges[1].udp,
        home_sock = edges[0].socket.display(),
        hub_sock = hub.socket.display(),
        dir = dir.display(),
        stop = if o.exit {
            ""
        } else {
            "\nCtrl-C stops everything."
        },
    );
    if !o.exit {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let printer = std::thread::spawn(move || {
            while !token.is_cancelled() {
                tail.print_new();
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(warren_daemon::cancel_on_signal(shutdown.clone()));
        shutdown.cancel();
        let _ = printer.join();
    }
    println!("stopping…");
    for e in &mut edges {
        e.stop();
    }
    hub.stop();
    Ok(())
}

/// Waits until `edge` holds nothing the hub has not acked.
fn drained(edge: &Edge) -> Result<EdgeStatus, String> {
    wait("the edge to be acked", || {
        edge.try_status().ok().filter(|s| s.queue_depth == 0)
    })
}

fn hare_login(hare: &Program, udp: SocketAddr, user: &str, rhost: &str) -> Result<(), String> {
    let status = hare
        .command()?
        .args(["--config", "/dev/null", &udp.to_string()])
        .envs([
            ("PAM_TYPE", "open_session"),
            ("PAM_USER", user),
            ("PAM_SERVICE", "sshd"),
            ("PAM_RHOST", rhost),
            ("PAM_TTY", "ssh"),
        ])
        .status()
        .map_err(|e| format!("running hare: {e}"))?;
    if !status.success() {
        return Err(format!("hare failed: {status}"));
    }
    Ok(())
}

/// Follows the notifier's file and prints new lines.
struct Tail {
    path: PathBuf,
    offset: std::cell::Cell<u64>,
    lines: std::cell::Cell<usize>,
}

impl Tail {
    fn new(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map_or(0, |m| m.len());
        Self {
            path: path.to_owned(),
            offset: offset.into(),
            lines: 0.into(),
        }
    }

    fn print_new(&self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset.get())).is_err() {
            return;
        }
        let mut reader = BufReader::new(f);
        let mut line = String::new();
        while matches!(reader.read_line(&mut line), Ok(n) if n > 0 && line.ends_with('\n')) {
            print!("  >> {line}");
            self.offset.set(self.offset.get() + line.len() as u64);
            self.lines.set(self.lines.get() + 1);
            line.clear();
        }
    }

    fn wait_for(&self, lines: usize) -> Result<(), String> {
        wait("notifications", || {
            self.print_new();
            (self.lines.get() >= lines).then_some(())
        })
    }
}
