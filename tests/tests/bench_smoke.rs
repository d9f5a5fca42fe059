//! The benchmark harness works: `bench --smoke` (tiny counts) runs every
//! scenario and writes a report with every figure measured. Not a timed
//! test: nothing here asserts a goal is met, only that each figure is a
//! real measurement and its ratio is stoke ÷ peer.

use std::process::Command;
use std::time::{Duration, Instant};

/// Every figure the harness reports, in report order.
const FIGURES: [&str; 25] = [
    "P1",
    "P1.rate",
    "P1.batched",
    "P2.p50",
    "P2.p99",
    "P3.python.p50",
    "P3.python.p99",
    "P3.rust.p50",
    "P3.rust.p99",
    "P4",
    "P5.idle",
    "P5.memory",
    "P6a",
    "P6b.sqlite.ns-day",
    "P6b.sqlite.fn-day-hourly",
    "P6b.sqlite.month-daily",
    "P6b.postgres.ns-day",
    "P6b.postgres.fn-day-hourly",
    "P6b.postgres.month-daily",
    "P7.event",
    "P7.url",
    "P7.ttfb",
    "P8.cold",
    "P8.first",
    "P8.disk",
];

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
    assert_eq!(ids, FIGURES);
    for f in &figures {
        let [stoke, peer, ratio] = ["stoke", "peer", "ratio"].map(|key| {
            let v = f[key].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "{} {key} = {v}: {f}", f["id"]);
            v
        });
        // The ratio is stoke ÷ peer.
        assert!((ratio - stoke / peer).abs() <= 1e-9 * ratio, "{f}");
        assert!(f["met"].is_boolean() && !f["goal"].as_str().unwrap().is_empty(), "{f}");
    }
    // Every call the scenarios made was answered, and every P3 invoke
    // measured as cold was one: counted, none expected.
    let metric = |scenario: &str, name: &str| {
        let s = json["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == scenario)
            .unwrap_or_else(|| panic!("no scenario {scenario}"));
        s["metrics"][name]
            .as_f64()
            .unwrap_or_else(|| panic!("{scenario} has no metric {name:?}: {s}"))
    };
    assert_eq!(metric("P2", "stoke errors"), 0.0);
    assert_eq!(metric("P3", "measured invokes that were not cold"), 0.0);
    assert_eq!(metric("P4", "stoke errors"), 0.0);
    assert_eq!(metric("P4", "lighttpd errors"), 0.0);
    assert_eq!(metric("P6b", "attempt rows"), 10_000.0);

    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("| figure | stoke | peer | ratio | goal | met? |"), "{md}");
    assert!(md.contains("Smoke mode"), "{md}");
    for id in FIGURES {
        assert!(md.contains(&format!("| {id} ")), "report.md lacks {id}:\n{md}");
    }
    let svg = std::fs::read_to_string(out.path().join("p2-latency-cdf.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{}",
        &svg[..svg.len().min(300)]
    );
    assert!(svg.contains("NATS request/reply") && svg.contains("stoke"));
}
