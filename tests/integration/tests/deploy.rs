//! The deployment, run for real: the Ansible roles linted with ansible-lint's production
//! profile, the FreeBSD rc.d scripts checked with `sh -n` and shellcheck, and `site.yml`
//! played over ssh into a booted Debian bookworm (debootstrap, then `systemd-nspawn -b`
//! sharing this machine's network) where a real ssh login must reach the hub's file notifier
//! once, a killed edge must come back with its queue, and a broken config must be refused.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use warren_harness::{WAIT, bin, free_port, is_root, require, venv_tool, wait_for, which};

fn ansible_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ansible")
}

fn rc_scripts() -> [PathBuf; 2] {
    let roles = ansible_dir().join("roles");
    [
        roles.join("edge/files/warren_edge"),
        roles.join("hub/files/warren_hub"),
    ]
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn roles_pass_ansible_lint_production_profile() {
    let Some(lint) = venv_tool("ansible-lint") else {
        require(
            "ansible-lint (pip install -r deploy/ansible/requirements.txt)",
            false,
        );
        return;
    };
    let out = run(Command::new(lint)
        .args(["--offline", "--nocolor", "--profile", "production"])
        .current_dir(ansible_dir()));
    assert!(out.status.success(), "ansible-lint:\n{}", text(&out));
}

#[test]
fn rc_scripts_pass_sh_and_shellcheck() {
    if !require("shellcheck", which("shellcheck").is_some()) {
        return;
    }
    for script in rc_scripts() {
        let out = run(Command::new("sh").arg("-n").arg(&script));
        assert!(
            out.status.success(),
            "sh -n {}: {}",
            script.display(),
            text(&out)
        );
        let out = run(Command::new("shellcheck").args(["-s", "sh"]).arg(&script));
        assert!(
            out.status.success(),
            "shellcheck {}:\n{}",
            script.display(),
            text(&out)
        );
    }
}

/// The Debian root every run starts from, made once per machine (about a minute) and then
/// copied: debootstrap's minbase with systemd, sshd, PAM and the Python that Ansible's modules
/// run with.
fn bookworm_root() -> PathBuf {
    const PACKAGES: &str = "systemd,systemd-sysv,dbus,openssh-server,libpam-modules,python3";
    let cache = Path::new("/var/tmp/warren-deploy-test");
    let root = cache.join("bookworm-1");
    if root.join("usr/sbin/sshd").is_file() {
        return root;
    }
    std::fs::create_dir_all(cache).unwrap();
    let building = cache.join(format!("building-{}", std::process::id()));
    let out = run(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={PACKAGES}"),
            "bookworm",
        ])
        .arg(&building)
        .arg(debian_mirror()));
    assert!(out.status.success(), "debootstrap:\n{}", text(&out));
    // Another test run may have finished first; either root will do.
    if std::fs::rename(&building, &root).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    root
}

/// The Debian mirror this machine's apt uses (the only one it may reach).
fn debian_mirror() -> String {
    let mut sources = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        sources.extend(dir.filter_map(Result::ok).map(|e| e.path()));
    }
    sources
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|s| {
            s.split_whitespace()
                .find(|w| w.starts_with("http") && w.trim_end_matches('/').ends_with("/debian"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

/// A booted copy of the Debian root, reachable over ssh on a loopback port; powered off (or
/// killed, with everything left in it) when dropped.
struct Machine {
    dir: tempfile::TempDir,
    nspawn: Option<Child>,
    port: u16,
}

impl Machine {
    fn boot() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("warren-deploy")
            .tempdir_in("/var/tmp")
            .unwrap();
        let root = dir.path().join("root");
        let out = run(Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(bookworm_root())
            .arg(&root));
        assert!(out.status.success(), "copying the root: {}", text(&out));

        let key = dir.path().join("id");
        let out = run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key));
        assert!(out.status.success(), "ssh-keygen: {}", text(&out));
        let port = free_port().unwrap();
        let etc = root.join("etc");
        std::fs::write(
            etc.join("ssh/sshd_config.d/warren-test.conf"),
            format!("Port {port}\nListenAddress 127.0.0.1\nPasswordAuthentication no\n"),
        )
        .unwrap();
        std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n::1 localhost\n").unwrap();
        std::fs::write(etc.join("hostname"), "warren-test\n").unwrap();
        let ssh_dir = root.join("root/.ssh");
        std::fs::create_dir_all(&ssh_dir).unwrap();
        std::fs::copy(key.with_extension("pub"), ssh_dir.join("authorized_keys")).unwrap();

        // nspawn refuses to start here until this exists.
        let nspawn_run = Path::new("/run/systemd/nspawn");
        std::fs::create_dir_all(nspawn_run).unwrap();
        if !run(Command::new("mountpoint").arg("-q").arg(nspawn_run))
            .status
            .success()
        {
            let out = run(Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(nspawn_run));
            assert!(out.status.success(), "mount tmpfs: {}", text(&out));
        }
        let log = std::fs::File::create(dir.path().join("boot.log")).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "-q",
                "-b",
                "--register=no",
                "--keep-unit",
                "--console=pipe",
                "-D",
            ])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn");
        let machine = Self {
            dir,
            nspawn: Some(nspawn),
            port,
        };
        wait_for("the container's sshd", WAIT, || {
            machine.ssh("root", "true").status.success().then_some(())
        });
        machine
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn ssh(&self, user: &str, command: &str) -> Output {
        run(Command::new("ssh")
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "BatchMode=yes",
            ])
            .arg("-i")
            .arg(self.dir.path().join("id"))
            .args(["-p", &self.port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .arg(command))
    }

    /// `command` as root, which must succeed; its stdout.
    fn root_sh(&self, command: &str) -> String {
        let out = self.ssh("root", command);
        assert!(out.status.success(), "{command}:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn unit(&self, unit: &str, property: &str) -> String {
        self.root_sh(&format!("systemctl show -p {property} --value {unit}"))
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let Some(mut nspawn) = self.nspawn.take() else {
            return;
        };
        // SIGTERM asks the container to power off.
        let _ = Command::new("kill")
            .args(["-TERM", &nspawn.id().to_string()])
            .status();
        let off = warren_harness::wait_until("the container to power off", WAIT, || {
            nspawn.try_wait().ok().flatten()
        });
        if off.is_err() {
            let _ = nspawn.kill();
            let _ = nspawn.wait();
        }
        // Whatever still runs in the root (a container whose nspawn was killed).
        let root = self.root();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if std::fs::read_link(entry.path().join("root")).is_ok_and(|r| r == root) {
                let _ = Command::new("kill")
                    .args(["-KILL", &entry.file_name().to_string_lossy()])
                    .status();
            }
        }
    }
}

/// `site.yml` against the machine with this inventory.
struct Playbook {
    inventory: PathBuf,
    tmp: PathBuf,
}

/// A play's outcome: its exit status and its output.
struct Played {
    ok: bool,
    changed: u32,
    output: String,
}

impl Playbook {
    fn new(machine: &Machine, hub_port: u16, edge_port: u16) -> Self {
        let dir = machine.dir.path();
        // The debug builds this run made, without their debug info (a tenth of the size).
        let binaries = ["hub", "edge", "hare"].map(|name| {
            let stripped = dir.join(name);
            let out = run(Command::new("objcopy")
                .arg("--strip-debug")
                .arg(bin(name))
                .arg(&stripped));
            if !out.status.success() {
                std::fs::copy(bin(name), &stripped).unwrap();
            }
            stripped
        });
        let inventory = dir.join("inventory.yml");
        std::fs::write(
            &inventory,
            format!(
                r#"all:
  vars:
    ansible_host: 127.0.0.1
    ansible_port: {ssh}
    ansible_user: root
    ansible_ssh_private_key_file: {key}
    ansible_ssh_common_args: "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    ansible_python_interpreter: /usr/bin/python3
    hub_binary: {hub}
    edge_binary: {edge}
    hare_binary: {hare}
    hub_listen_tls: "127.0.0.1:{hub_port}"
    edge_hub_address: "127.0.0.1:{hub_port}"
    edge_listen: ["127.0.0.1:{edge_port}"]
    hare_destinations: ["127.0.0.1:{edge_port}"]
    edge_site: test-site
    hub_notifiers:
      logins: {{type: file, path: /var/log/warren/logins.log}}
    hub_routes:
      - match: {{kind: login}}
        notify: [logins]
        format: "{{user}} logged into {{hostname}} from {{rhost}}"
  children:
    warren_hub: {{hosts: {{target: {{}}}}}}
    warren_edges: {{hosts: {{target: {{}}}}}}
    warren_hare: {{hosts: {{target: {{}}}}}}
"#,
                ssh = machine.port,
                key = dir.join("id").display(),
                hub = binaries[0].display(),
                edge = binaries[1].display(),
                hare = binaries[2].display(),
            ),
        )
        .unwrap();
        Self {
            inventory,
            tmp: dir.join("ansible"),
        }
    }

    fn play(&self, extra: &[&str]) -> Played {
        let out = run(Command::new(venv_tool("ansible-playbook").unwrap())
            .arg("-i")
            .arg(&self.inventory)
            .arg(ansible_dir().join("site.yml"))
            .args(extra)
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_PIPELINING", "True")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
            .env("ANSIBLE_LOCAL_TEMP", &self.tmp)
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", &self.tmp));
        let output = text(&out);
        let recap = output
            .lines()
            .skip_while(|l| !l.starts_with("PLAY RECAP"))
            .find(|l| l.starts_with("target"))
            .unwrap_or_else(|| panic!("no recap in:\n{output}"));
        let count = |key: &str| -> u32 {
            recap
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {recap}"))
        };
        Played {
            ok: out.status.success() && count("failed=") == 0 && count("unreachable=") == 0,
            changed: count("changed="),
            output,
        }
    }
}

/// The lines of the hub's file notifier about `user`.
fn logins(machine: &Machine, user: &str) -> usize {
    let out = machine.ssh("root", "cat /var/log/warren/logins.log");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{user} logged into")))
        .count()
}

fn edge_status(machine: &Machine) -> serde_json::Value {
    serde_json::from_str(&machine.root_sh("edge status --json")).unwrap()
}

fn login_as_alice(machine: &Machine) {
    let out = machine.ssh("alice", "true");
    assert!(out.status.success(), "ssh alice@: {}", text(&out));
}

#[test]
fn site_playbook_deploys_into_a_booted_systemd() {
    let tools = ["debootstrap", "systemd-nspawn", "ssh", "ssh-keygen"];
    if !require("root", is_root())
        || !require(
            "debootstrap, systemd-container and openssh-client",
            tools.iter().all(|t| which(t).is_some()),
        )
        || !require("ansible-playbook", venv_tool("ansible-playbook").is_some())
    {
        return;
    }
    let machine = Machine::boot();
    let hub_port = free_port().unwrap();
    let edge_port = free_port().unwrap();
    let playbook = Playbook::new(&machine, hub_port, edge_port);

    let first = playbook.play(&[]);
    assert!(first.ok, "first run:\n{}", first.output);
    let again = playbook.play(&[]);
    assert!(
        again.ok && again.changed == 0,
        "second run:\n{}",
        again.output
    );
    let check = playbook.play(&["--check", "--diff"]);
    assert!(
        check.ok && check.changed == 0,
        "--check --diff:\n{}",
        check.output
    );

    // Type=notify: systemd has the hub's READY=1 and the status it sent with it.
    assert_eq!(machine.unit("warren-hub", "StatusText"), "embedded broker");
    assert_eq!(machine.unit("warren-edge", "ActiveState"), "active");
    for unit in ["warren-hub", "warren-edge"] {
        let report = machine.root_sh(&format!("systemd-analyze security --no-pager {unit}"));
        let exposure: f64 = report
            .lines()
            .find_map(|l| l.split_once(&format!("{unit}.service: ")))
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
        eprintln!("{unit}: exposure {exposure}");
        assert!(exposure <= 2.0, "{unit}: exposure {exposure}:\n{report}");
    }

    // A real ssh login through the PAM line the role added: one notification. Ansible's own
    // logins (as root, the deploy user) are ignored.
    machine.root_sh(
        "useradd -m alice && install -d -o alice -m 700 ~alice/.ssh && \
         install -o alice -m 600 /root/.ssh/authorized_keys ~alice/.ssh/",
    );
    login_as_alice(&machine);
    wait_for("alice's login in the notifier's file", WAIT, || {
        (logins(&machine, "alice") >= 1).then_some(())
    });
    let status = machine.ssh("root", "edge status --crit-age 1h");
    assert!(
        status.status.success() && String::from_utf8_lossy(&status.stdout).starts_with("EDGE OK"),
        "edge status: {}",
        text(&status)
    );
    assert_eq!(logins(&machine, "alice"), 1);
    assert_eq!(
        logins(&machine, "root"),
        0,
        "the deploy user's logins are ignored"
    );

    // The edge killed while it holds a queue: systemd restarts it, and the queue goes on.
    machine.root_sh("systemctl stop warren-hub");
    login_as_alice(&machine);
    login_as_alice(&machine);
    wait_for("two logins queued", WAIT, || {
        (edge_status(&machine)["queue_depth"] == 2).then_some(())
    });
    let before = machine.unit("warren-edge", "MainPID");
    machine.root_sh("systemctl kill -s KILL warren-edge");
    wait_for("systemd to restart the edge", WAIT, || {
        let pid = machine.unit("warren-edge", "MainPID");
        (pid != before && pid != "0" && machine.unit("warren-edge", "ActiveState") == "active")
            .then_some(())
    });
    assert_eq!(machine.unit("warren-edge", "NRestarts"), "1");
    assert_eq!(edge_status(&machine)["queue_depth"], 2, "queue kept");
    machine.root_sh("systemctl start warren-hub");
    wait_for("the queued logins delivered", WAIT, || {
        (edge_status(&machine)["queue_depth"] == 0 && logins(&machine, "alice") >= 3).then_some(())
    });
    assert_eq!(logins(&machine, "alice"), 3, "each queued login once");

    // A config `edge check-config` refuses is not installed; the running edge goes on.
    let config = machine.root_sh("cat /etc/warren/edge.toml");
    let pid = machine.unit("warren-edge", "MainPID");
    let broken = playbook.play(&["-e", r#"{"edge_listen": []}"#]);
    assert!(
        !broken.ok,
        "a broken config was deployed:\n{}",
        broken.output
    );
    assert!(
        broken.output.contains("ingest.listen"),
        "refused for another reason:\n{}",
        broken.output
    );
    assert_eq!(machine.root_sh("cat /etc/warren/edge.toml"), config);
    assert_eq!(machine.unit("warren-edge", "MainPID"), pid);
    assert_eq!(machine.unit("warren-edge", "ActiveState"), "active");
}
