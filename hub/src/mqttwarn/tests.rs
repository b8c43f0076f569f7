use std::path::Path;

use super::*;
use crate::config::HubConfig;

fn options() -> Options {
    Options {
        source: "mqttwarn.ini".into(),
        secrets_dir: "/etc/warren/mqttwarn".into(),
        ini_dir: "/etc/mqttwarn".into(),
        topic: "logging/hare".into(),
        services: None,
    }
}

fn seed() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mqttwarn/seed.ini");
    std::fs::read_to_string(path).unwrap()
}

/// The fragment as part of a hub config.
fn config(fragment: &str) -> HubConfig {
    let text = format!("[broker]\nlisten_local = \"127.0.0.1:1883\"\n{fragment}");
    HubConfig::parse(Path::new("hub.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn the_seed_config_imports_whole() {
    let im = import(&seed(), &options()).unwrap();
    let cfg = config(&im.toml);
    let names: Vec<&str> = cfg.notifiers.keys().map(|n| n.as_str()).collect();
    assert_eq!(
        names,
        ["file_sshd_log", "log_error", "log_info", "pushover_pam"]
    );
    assert_eq!(cfg.routes.len(), 1);
    assert_eq!(
        cfg.routes[0]
            .notify
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>(),
        ["file_sshd_log", "log_info", "pushover_pam"]
    );
    let text = &im.toml;
    for expected in [
        "title = \"SSH login on {hostname}\"",
        "format = \"{user}@{hostname} from {rhost} at {tstamp}\"",
        "path = \"/var/log/sshd-logins.log\"",
        "level = \"error\"",
        "token_file = \"/etc/warren/mqttwarn/pushover_pam.token\"",
        "user_file = \"/etc/warren/mqttwarn/pushover_pam.user\"",
    ] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }
    // What it could not import is at the top, with its line.
    let (head, _) = text.split_once("\n[notifier").unwrap();
    for expected in [
        "line 7: [defaults] functions = 'hare_funcs.py'",
        "line 33: [logging/hare] filter = hare_filter(): a Python function",
        "line 34: [logging/hare] alldata = moredata(): a Python function",
        "line 3: [defaults] hostname, port, loglevel: how mqttwarn itself runs",
    ] {
        assert!(head.contains(expected), "{expected} in:\n{head}");
    }
    assert_eq!(im.not_imported, 4, "{head}");
    // The secrets are in files, not in the config.
    assert!(!text.contains("uQiRzpo4"), "{text}");
    let files: Vec<(&Path, &str)> = im
        .secrets
        .iter()
        .map(|(p, c)| (p.as_path(), c.as_str()))
        .collect();
    assert_eq!(
        files,
        [
            (
                Path::new("/etc/warren/mqttwarn/pushover_pam.token"),
                "azGDORePK8gMaC0QOYAMyEEuzJnyUi\n"
            ),
            (
                Path::new("/etc/warren/mqttwarn/pushover_pam.user"),
                "uQiRzpo4DXghDmr9QzzfQu27cmVRsG\n"
            ),
        ]
    );
}

#[test]
fn topics_services_and_templates_warren_lacks_are_listed() {
    let ini = "[defaults]\nlaunch = file, slack\n\n\
               [config:file]\ntargets = {'a': ['/x'], 'b': ['/tmp/{user}']}\n\n\
               [config:slack]\ntargets = {'ops': ['#ops']}\n\n\
               [config:ntfy]\ntargets = {'n': 'https://ntfy.sh/x'}\n\n\
               [home/+/temperature]\ntargets = file:a\n\n\
               [logins]\ntopic = logging/#\ntargets = {'logging/#': 'file:b', 'logging/hare': ['file:a', 'slack:ops', 'file:zz']}\n\
               title = {payload}\nformat = {user:>8} {topic}\\n{host}\npriority = 2\nqos = 1\n";
    let im = import(ini, &options()).unwrap();
    let text = &im.toml;
    for expected in [
        "file:b: the file name \"/tmp/{user}\" is made per message",
        "slack:ops: warren has no `slack` notifier",
        "[config:ntfy]: not in `launch`",
        "[home/+/temperature]: topic home/+/temperature is not where hared published logins",
        "[logins] title = {payload}: `{payload}` is the message as it came",
        "`{user:>8}` is Python formatting",
        "[logins] qos = 1: mqttwarn's subscription QoS",
    ] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }
    // The most specific topic of the dict wins; what it names that is missing is said.
    assert!(
        text.contains("# targets not imported: slack:ops (not imported), file:zz (no such target)"),
        "{text}"
    );
    assert!(text.contains("priority = \"2\""), "{text}");
    let cfg = config(text);
    assert_eq!(cfg.routes.len(), 1);
    assert_eq!(cfg.routes[0].notify[0].as_str(), "file_a");
}

#[test]
fn templates_convert_or_say_why_not() {
    for (python, warren) in [
        ("{user} on {topic}", "{user} on logging/hare"),
        ("a\\nb {{x}}", "a\nb {{x}}"),
    ] {
        assert_eq!(convert(python, "logging/hare").unwrap().0, warren);
    }
    for python in ["f()", "{0}", "{}", "{a.b}", "{a[0]}", "{a!r}", "{unclosed"] {
        assert!(convert(python, "t").is_err(), "{python}");
    }
}

#[test]
fn topic_filters_match_as_mqtt_does() {
    for (filter, yes) in [
        ("logging/hare", true),
        ("logging/+", true),
        ("#", true),
        ("logging/#", true),
        ("+/+/x", false),
        ("logging", false),
        ("logging/hare/x", false),
    ] {
        assert_eq!(topic_matches(filter, "logging/hare"), yes, "{filter}");
    }
}

#[test]
fn a_file_python_cannot_read_is_an_error_with_its_line() {
    let err = import("[a]\nk = 1\nk = 2\n", &options()).unwrap_err();
    assert!(err.starts_with("line 3:"), "{err}");
}

#[test]
fn mqttwarns_own_plugins_send_what_warren_cannot() {
    let ini = "[defaults]\nlaunch = slack, file\n\
               [config:slack]\ntoken = 'xoxb-1'\ntargets = {'ops': ['#ops']}\n\
               [config:file]\ntargets = {'a': ['/x'], 'per': ['/tmp/{user}']}\n\
               [logging/hare]\ntargets = slack:ops, file:a, file:per\nformat = {user}\n";
    let opts = Options {
        services: Some(ServiceRunner {
            python: "/opt/mqttwarn/bin/python3".into(),
            script: "/usr/local/bin/warren-mqttwarn-service".into(),
            ini: "/etc/mqttwarn/mqttwarn.ini".into(),
        }),
        ..options()
    };
    let im = import(ini, &opts).unwrap();
    let text = &im.toml;
    assert_eq!(im.not_imported, 0, "{text}");
    assert!(
        text.contains("command = [\"/opt/mqttwarn/bin/python3\", \"/usr/local/bin/warren-mqttwarn-service\", \"--ini\", \"/etc/mqttwarn/mqttwarn.ini\", \"--service\", \"slack\", \"--target\", \"ops\"]"),
        "{text}"
    );
    assert!(text.contains("#   slack_ops, file_per"), "{text}");
    // The token stays in the ini, which the plugin reads: no secret file for it.
    assert!(im.secrets.is_empty());
    let cfg = config(text);
    let notify: Vec<&str> = cfg.routes[0].notify.iter().map(|n| n.as_str()).collect();
    assert_eq!(notify, ["slack_ops", "file_a", "file_per"]);
}

#[test]
fn nothing_from_the_ini_escapes_a_comment() {
    // A name and a value with line breaks, which would end a comment and become config.
    let ini = "[defaults]\nlaunch = file\n\
               [config:file]\ntargets = {'a\\n[notifier.evil]\\ntype = \"exec\"': ['/x'], 'b': ['/y']}\n\
               [logging/hare]\ntargets = file:b\nformat = {user}\nweird = one\n  [notifier.evil2]\n  type = \"log\"\n";
    let im = import(ini, &options()).unwrap();
    let cfg = config(&im.toml);
    let names: Vec<&str> = cfg.notifiers.keys().map(|n| n.as_str()).collect();
    assert_eq!(
        names,
        ["file_a__notifier_evil__type____exec_", "file_b"],
        "{}",
        im.toml
    );
    assert!(
        im.toml.contains("weird = one [notifier.evil2]"),
        "{}",
        im.toml
    );
}

#[test]
fn secret_files_are_new_private_and_never_through_a_link() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("secrets");
    let file = dir.join("pushover_pam.token");
    let files = vec![(file.clone(), "t0ken\n".to_owned())];
    write_secrets(&dir, &files, false).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "t0ken\n");
    // Not replaced unless asked.
    let again = write_secrets(&dir, &files, false).unwrap_err();
    assert!(again.contains("--force"), "{again}");
    write_secrets(&dir, &files, true).unwrap();
    // A link planted where a secret goes is not followed, even with --force.
    let elsewhere = tmp.path().join("readable-by-all");
    std::fs::write(&elsewhere, "").unwrap();
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    assert!(write_secrets(&dir, &files, true).is_err());
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "");
    // A directory others can enter is refused, not changed.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let files = vec![(open.join("x"), "s\n".to_owned())];
    assert!(
        write_secrets(&open, &files, false)
            .unwrap_err()
            .contains("0700")
    );
    assert_eq!(mode(&open), 0o755);
}
