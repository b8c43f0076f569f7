//! The comparison with the classic chain (`bench/compare.py`) in smoke mode: a handful of
//! events through warren and through hared → mosquitto → mqttwarn, so that the bench cannot
//! rot. Its figures are not checked against targets here (speed is for the bench to report,
//! not for a test to time); only that both chains delivered everything and were measured.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::path::Path;
use std::process::Command;

use warren_harness::mosquitto::Mosquitto;
use warren_harness::{bin, require, venv_tool, which};

#[test]
fn the_comparison_with_the_classic_chain_runs_in_smoke_mode() {
    // compare.py takes one virtual environment holding both.
    let venv = venv_tool("hared")
        .zip(venv_tool("mqttwarn"))
        .filter(|(h, m)| h.parent() == m.parent())
        .and_then(|(h, _)| Some(h.parent()?.parent()?.to_owned()));
    let tools =
        Mosquitto::available() && which("mosquitto_pub").is_some() && which("gcc").is_some();
    if !require(
        "hared and mqttwarn in a virtual environment (.ci/run puts them in .venv)",
        venv.is_some(),
    ) || !require("mosquitto, mosquitto_pub and gcc", tools)
    {
        return;
    }
    let venv = venv.unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("results");
    let run = Command::new("python3")
        .arg(root.join("bench/compare.py"))
        .args(["--smoke", "--venv"])
        .arg(&venv)
        .arg("--out")
        .arg(&out)
        .env("BIN", bin("hub").parent().unwrap())
        .env("BENCH_DIR", work.path())
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "compare.py --smoke failed:\n{log}");

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for chain in ["warren", "classic"] {
        let round = &doc["rounds"][0][chain];
        assert_eq!(round["latency"]["n"], 10, "{chain}: {round}");
        assert!(
            round["latency"]["p50_ms"].as_f64().unwrap() > 0.0,
            "{chain}: {round}"
        );
        assert!(
            round["drain"]["per_s"].as_f64().unwrap() > 0.0,
            "{chain}: {round}"
        );
        let steady = round["steady"].as_object().unwrap();
        assert!(
            steady.values().all(|p| p["rss_kib"].as_u64().unwrap() > 0),
            "{chain}: every process measured: {round}"
        );
        let settled = round["drain"]["rss_settled_kib"].as_object().unwrap();
        assert!(
            settled.len() == 2 && settled.values().all(|kib| kib.as_u64().unwrap() > 0),
            "{chain}: RSS once idle after the drain: {round}"
        );
        assert!(doc["summary"][chain]["drain_per_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        doc["rounds"][0]["warren"]["steady"]
            .as_object()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        doc["rounds"][0]["classic"]["steady"]
            .as_object()
            .unwrap()
            .len(),
        3
    );
    let chart = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(
        chart.starts_with("<svg") && chart.contains("classic"),
        "{chart}"
    );
    assert!(
        log.contains("| drain of 200 events"),
        "the table is printed:\n{log}"
    );
}
