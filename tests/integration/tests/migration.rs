//! Moving from the classic chain. The seed's `mqttwarn.ini`, imported with
//! `hub import-mqttwarn`, makes the hub write the same file line and send the same Pushover
//! request as real mqttwarn does for the same login — and that mqttwarn, on its own
//! mosquitto, gets the login from the hub's `[legacy.external]` republish, as it got it from
//! hared before.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use warren_harness::http::{HttpServer, Reply};
use warren_harness::mosquitto::Mosquitto;
use warren_harness::{Proc, WAIT, bin, require, venv_tool, wait_for};
use warren_integration_tests::{Topology, login};

/// mqttwarn with Pushover's API at a local server: its pushover service has the URL built
/// in, so `requests` is pointed elsewhere before mqttwarn starts.
const MQTTWARN_WITH_LOCAL_PUSHOVER: &str = r"
import sys, requests
base, config = sys.argv[1], sys.argv[2]
send = requests.Session.request
def request(self, method, url, *args, **kwargs):
    return send(self, method, url.replace('https://api.pushover.net', base), *args, **kwargs)
requests.Session.request = request
sys.argv = ['mqttwarn', '--config-file=' + config]
from mqttwarn.commands import run
sys.exit(run())
";

/// The Python of mqttwarn's virtual environment, which can import it; [`require`]d.
fn mqttwarn_python() -> Option<PathBuf> {
    let python = venv_tool("mqttwarn")
        .map(|m| m.with_file_name("python3"))
        .filter(|p| p.is_file());
    require(
        "mqttwarn in a virtual environment (pip install mqttwarn; .ci/run puts it in .venv)",
        python.is_some(),
    );
    python
}

fn pushover_ok() -> Reply {
    Reply::Full(
        200,
        vec![("Content-Type".into(), "application/json".into())],
        r#"{"status":1,"request":"e460b"}"#.into(),
    )
}

/// The seed's ini for a test: its broker on `port` with a login, its file at `file`.
fn seed(dir: &Path, port: u16, file: &Path) -> String {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hub/tests/fixtures/mqttwarn");
    std::fs::copy(fixtures.join("hare_funcs.py"), dir.join("hare_funcs.py")).unwrap();
    let text = std::fs::read_to_string(fixtures.join("seed.ini")).unwrap();
    for original in [
        "hostname  = 'localhost'",
        "port      = 1883",
        "/var/log/sshd-logins.log",
    ] {
        assert!(text.contains(original), "the seed changed: {original}");
    }
    text.replace(
        "hostname  = 'localhost'",
        "hostname  = '127.0.0.1'\nusername  = 'mqttwarn'\npassword  = 'mqttwarn-pw'",
    )
    .replace("port      = 1883", &format!("port      = {port}"))
    .replace("/var/log/sshd-logins.log", &file.display().to_string())
}

/// A Pushover request's parameters: mqttwarn sends a form, warren JSON.
fn pushover_params(body: &[u8], json: bool) -> BTreeMap<String, String> {
    if json {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect()
    } else {
        form_urlencoded::parse(body).into_owned().collect()
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_imported_seed_config_notifies_as_mqttwarn_does_and_mqttwarn_stays_fed() {
    let (Some(python), true) = (mqttwarn_python(), Mosquitto::available()) else {
        return;
    };
    let classic = tempfile::tempdir().unwrap();
    let c = classic.path();
    let mosquitto = Mosquitto::start(
        c,
        None,
        &[("mqttwarn", "mqttwarn-pw"), ("warren", "warren-pw")],
    );

    // The classic side: mqttwarn on mosquitto, unchanged but for where things are.
    let mqttwarn_file = c.join("mqttwarn-sshd.log");
    let ini = c.join("mqttwarn.ini");
    std::fs::write(&ini, seed(c, mosquitto.port, &mqttwarn_file)).unwrap();
    let mqttwarn_pushover = HttpServer::start(vec![pushover_ok()]);
    let mqttwarn_log = c.join("mqttwarn.stderr");
    let _mqttwarn = Proc::spawn(
        "mqttwarn",
        Command::new(&python)
            .args([
                "-c",
                MQTTWARN_WITH_LOCAL_PUSHOVER,
                &mqttwarn_pushover.url(""),
            ])
            .arg(&ini)
            .current_dir(c)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&mqttwarn_log).unwrap()),
    );

    // The same ini, imported; only the file it writes differs.
    let warren_file = c.join("warren-sshd.log");
    let imported_ini = c.join("imported.ini");
    std::fs::write(&imported_ini, seed(c, mosquitto.port, &warren_file)).unwrap();
    let out = Command::new(bin("hub"))
        .arg("import-mqttwarn")
        .arg(&imported_ini)
        .arg("--secrets-dir")
        .arg(c.join("secrets"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let fragment = String::from_utf8(out.stdout).unwrap();
    for untranslated in ["filter = hare_filter()", "alldata = moredata()"] {
        assert!(
            fragment.contains(untranslated),
            "not listed: {untranslated}\n{fragment}"
        );
    }
    assert!(
        !fragment.contains("uQiRzpo4"),
        "a secret in the config:\n{fragment}"
    );
    let warren_pushover = HttpServer::start(vec![pushover_ok()]);
    // The one change: Pushover is the local stand-in.
    let fragment = fragment.replacen(
        "type = \"pushover\"\n",
        &format!(
            "type = \"pushover\"\napi_url = \"{}\"\n",
            warren_pushover.url("")
        ),
        1,
    );
    warren_daemon::files::write_private(&c.join("mosquitto.password"), "warren-pw\n", false)
        .unwrap();
    let t = Topology::with_hub_config(&format!(
        "{fragment}\n[legacy.external]\naddress = \"127.0.0.1:{}\"\ntls = false\nusername = \"warren\"\npassword_file = \"{}\"\n",
        mosquitto.port,
        c.join("mosquitto.password").display()
    ));
    let check = Command::new(bin("hub"))
        .arg("check-config")
        .arg(t.path("hub.toml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    // mqttwarn's subscription may still be on its way after it says so: probe through
    // mosquitto until a line shows.
    wait_for("mqttwarn to subscribe", WAIT, || {
        std::fs::read_to_string(&mqttwarn_log)
            .unwrap_or_default()
            .contains("Subscribing to logging/hare")
            .then_some(())
    });
    wait_for("mqttwarn to take a probe", WAIT, || {
        let probe = r#"{"tst":1795708571,"hostname":"web","user":"probe","service":"sshd","rhost":"192.0.2.99","tty":"ssh","remote":"127.0.0.1"}"#;
        let published = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &mosquitto.port.to_string()])
            .args([
                "-u",
                "warren",
                "-P",
                "warren-pw",
                "-q",
                "1",
                "-t",
                "logging/hare",
                "-m",
                probe,
            ])
            .status()
            .unwrap();
        assert!(published.success());
        std::thread::sleep(std::time::Duration::from_millis(200));
        lines(&mqttwarn_file)
            .iter()
            .any(|l| l.starts_with("probe@"))
            .then_some(())
    });

    // One login, through an edge: the hub notifies by the imported config and republishes
    // it to mosquitto, where mqttwarn notifies by the original.
    let edge = t.edge("gw", None);
    edge.send_confirmed(&[login("dan")]);
    let dan = |path: &Path| {
        wait_for("dan's line", WAIT, || {
            let l: Vec<String> = lines(path)
                .into_iter()
                .filter(|l| l.starts_with("dan@"))
                .collect();
            (!l.is_empty()).then_some(l)
        })
    };
    let (classic_lines, warren_lines) = (dan(&mqttwarn_file), dan(&warren_file));
    assert_eq!(warren_lines, classic_lines);
    assert_eq!(warren_lines.len(), 1);
    assert!(
        warren_lines[0].starts_with("dan@web from 192.0.2.10 at 20"),
        "{warren_lines:?}"
    );

    let request = |server: &HttpServer, json: bool| {
        wait_for("dan's Pushover request", WAIT, || {
            server
                .requests()
                .iter()
                .map(|r| pushover_params(&r.body, json))
                .find(|p| p.get("message").is_some_and(|m| m.starts_with("dan@")))
        })
    };
    let (classic_request, warren_request) = (
        request(&mqttwarn_pushover, false),
        request(&warren_pushover, true),
    );
    for key in ["token", "user", "title", "message", "priority"] {
        assert_eq!(
            warren_request.get(key),
            classic_request.get(key),
            "{key}: warren {warren_request:?}, mqttwarn {classic_request:?}"
        );
    }
    assert_eq!(classic_request["token"], "azGDORePK8gMaC0QOYAMyEEuzJnyUi");
    assert_eq!(classic_request["title"], "SSH login on web");

    // `hare test` takes the imported route, but is no login for mqttwarn: not republished.
    let tested = Command::new(bin("hare"))
        .args(["test", "--config", "/dev/null", "--user", "tess"])
        .arg(edge.udp.to_string())
        .env_clear()
        .output()
        .unwrap();
    assert!(tested.status.success(), "{tested:?}");
    wait_for("the test's line", WAIT, || {
        lines(&warren_file)
            .iter()
            .any(|l| l.starts_with("[test] tess@"))
            .then_some(())
    });
    // The republish is a delivery like any other, counted in `hub status`.
    let status = t.hub.status();
    let legacy = &status.notifiers["legacy"];
    assert_eq!((legacy.delivered, legacy.outbox), (1, 0), "{legacy:?}");
    assert!(lines(&mqttwarn_file).iter().all(|l| !l.contains("tess")));
}

/// A target warren has no notifier for — here mqttwarn's `execute` with the message as an
/// argument — is sent by mqttwarn's own plugin, run by the hub through
/// `warren-mqttwarn-service`; and unlike mqttwarn, the hub retries it when it fails.
#[test]
fn mqttwarns_own_plugin_sends_what_warren_cannot_and_is_retried() {
    let Some(python) = mqttwarn_python() else {
        return;
    };
    let classic = tempfile::tempdir().unwrap();
    let c = classic.path();
    let (out, flag) = (c.join("paged.txt"), c.join("failed-once"));
    // Fails the first time (no flag yet), then appends the message it is given as `$0`.
    let script = format!(
        "test -e {flag} || {{ touch {flag}; exit 1; }}; printf '%s\\n' \"$0\" >> {out}",
        flag = flag.display(),
        out = out.display()
    );
    let ini = c.join("mqttwarn.ini");
    std::fs::write(
        &ini,
        format!(
            "[defaults]\nlaunch = execute\n\n[config:execute]\ntargets = {{\n    'page': ['/bin/sh', '-c', {script:?}, '[TEXT]'],\n    }}\n\n\
             [logging/hare]\ntargets = execute:page\nformat = {{user}} on {{hostname}} from {{rhost}}\n"
        ),
    )
    .unwrap();
    let runner = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/mqttwarn/warren-mqttwarn-service")
        .canonicalize()
        .unwrap();
    let imported = Command::new(bin("hub"))
        .arg("import-mqttwarn")
        .arg(&ini)
        .arg("--mqttwarn-python")
        .arg(&python)
        .arg("--runner")
        .arg(&runner)
        .output()
        .unwrap();
    assert!(imported.status.success(), "{imported:?}");
    let fragment = String::from_utf8(imported.stdout).unwrap();
    assert!(fragment.contains("[notifier.execute_page]\n"), "{fragment}");
    assert!(!fragment.contains("NOT IMPORTED"), "{fragment}");

    let t = Topology::with_hub_config(&format!(
        "[delivery]\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n{fragment}"
    ));
    let edge = t.edge("gw", None);
    edge.send_confirmed(&[login("dan")]);
    let paged = wait_for("the page", WAIT, || {
        let l = lines(&out);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(paged, ["dan on web from 192.0.2.10"]);
    let status = wait_for("the delivery recorded", WAIT, || {
        let s = t.hub.status().notifiers["execute_page"].clone();
        (s.delivered == 1).then_some(s)
    });
    assert_eq!((status.failures, status.outbox), (1, 0), "{status:?}");
    assert_eq!(lines(&out).len(), 1);
}
