//! The benchmark harness works: `bench --smoke` (tiny counts) writes a
//! report with every figure measured. Not a timed test: nothing here
//! asserts a goal is met, only that each figure is a real measurement.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn bench_smoke_writes_a_complete_report() {
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--smoke", "--out"])
        .arg(out.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run bench");
    let took = started.elapsed();
    assert!(
        run.status.success(),
        "bench --smoke failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    println!("bench --smoke took {took:?}");
    assert!(took < Duration::from_secs(60), "smoke mode must stay fast: {took:?}");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["smoke"], true);
    let figures: Vec<&serde_json::Value> = json["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["figures"].as_array().unwrap())
        .collect();
    let ids: Vec<&str> = figures.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["P1", "P2.p50", "P2.p99"]);
    for f in &figures {
        for key in ["stoke", "peer", "ratio"] {
            let v = f[key].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "{} {key} = {v}: {f}", f["id"]);
        }
        assert!(f["met"].is_boolean() && !f["goal"].as_str().unwrap().is_empty(), "{f}");
    }
    // The ratio is stoke ÷ peer.
    let p1 = figures[0];
    let ratio = p1["stoke"].as_f64().unwrap() / p1["peer"].as_f64().unwrap();
    assert!((p1["ratio"].as_f64().unwrap() - ratio).abs() < 1e-9 * ratio);
    // Every P2 request was answered: stoke's errors are counted, none expected.
    let p2 = &json["scenarios"][1];
    assert_eq!(p2["metrics"]["stoke errors"], 0.0, "{p2}");

    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    for needle in [
        "| figure | stoke | peer | ratio | goal | met? |",
        "| P1 ",
        "| P2.p50 ",
        "| P2.p99 ",
        "Smoke mode",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    let svg = std::fs::read_to_string(out.path().join("p2-latency-cdf.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{}",
        &svg[..svg.len().min(300)]
    );
    assert!(svg.contains("NATS request/reply") && svg.contains("stoke"));
}
