//! The report: one record per figure (stoke's value, the peer's, their
//! ratio, the goal and whether it was met), written as a markdown table
//! and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

/// One measured figure against its peer.
#[derive(Serialize)]
pub struct Figure {
    /// "P1", "P2.p50", ...
    pub id: String,
    pub name: String,
    pub unit: String,
    pub stoke: f64,
    /// What the peer is ("raw JetStream publish → pull → ack", ...).
    pub peer_name: String,
    pub peer: f64,
    /// stoke ÷ peer.
    pub ratio: f64,
    /// The goal in words ("ratio ≥ 0.30", "≤ 1 ms, ratio ≤ 5").
    pub goal: String,
    pub met: bool,
}

impl Figure {
    pub fn new(id: &str, name: &str, unit: &str, stoke: f64, peer_name: &str, peer: f64) -> Figure {
        Figure {
            id: id.into(),
            name: name.into(),
            unit: unit.into(),
            stoke,
            peer_name: peer_name.into(),
            peer,
            ratio: stoke / peer,
            goal: String::new(),
            met: true,
        }
    }

    /// Add a goal in words and whether it was met.
    pub fn require(mut self, text: impl Into<String>, met: bool) -> Figure {
        let text = text.into();
        if !self.goal.is_empty() {
            self.goal.push_str(", ");
        }
        self.goal.push_str(&text);
        self.met &= met;
        self
    }

    pub fn ratio_at_least(self, goal: f64) -> Figure {
        let met = self.ratio >= goal;
        self.require(format!("ratio ≥ {goal:.2}"), met)
    }

    pub fn ratio_at_most(self, goal: f64) -> Figure {
        let met = self.ratio <= goal;
        self.require(format!("ratio ≤ {goal}"), met)
    }

    /// At most `goal` more than the peer (in the figure's unit).
    pub fn over_peer_at_most(self, goal: f64) -> Figure {
        let over = self.stoke - self.peer;
        let met = over <= goal;
        let text = format!("≤ {goal} {} over the peer (is {over:.3})", self.unit);
        self.require(text, met)
    }

    pub fn at_most(self, goal: f64) -> Figure {
        let met = self.stoke <= goal;
        let text = format!("≤ {goal} {}", self.unit);
        self.require(text, met)
    }
}

/// One scenario's figures and its other measurements.
#[derive(Serialize)]
pub struct Scenario {
    pub id: String,
    pub name: String,
    /// How the scenario was run, in a sentence or two.
    pub setup: String,
    pub figures: Vec<Figure>,
    /// Counts, CPU per invocation, errors, ... by name.
    pub metrics: BTreeMap<String, f64>,
    /// Plot files written next to the report.
    pub plots: Vec<String>,
}

#[derive(Serialize)]
pub struct Report {
    pub smoke: bool,
    pub generated_unix: u64,
    pub duration_secs: f64,
    pub cores: usize,
    pub nats_server: String,
    pub payload_bytes: usize,
    pub rounds: usize,
    pub scenarios: Vec<Scenario>,
}

/// A value with about 3 significant digits.
fn num(v: f64) -> String {
    match v.abs() {
        _ if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut md = String::from("# stoke benchmark report\n\n");
        if self.smoke {
            md.push_str("**Smoke mode**: tiny counts; these figures only show that the harness works.\n\n");
        }
        let _ = writeln!(
            md,
            "{} cores, {}, payload {} bytes, {} round(s) per scenario, {:.0} s in all.\n",
            self.cores, self.nats_server, self.payload_bytes, self.rounds, self.duration_secs
        );
        md.push_str("| figure | stoke | peer | ratio | goal | met? |\n|---|---|---|---|---|---|\n");
        for f in self.scenarios.iter().flat_map(|s| &s.figures) {
            let _ = writeln!(
                md,
                "| {} {} | {} {} | {} {} ({}) | {} | {} | {} |",
                f.id,
                f.name,
                num(f.stoke),
                f.unit,
                num(f.peer),
                f.unit,
                f.peer_name,
                num(f.ratio),
                f.goal,
                if f.met { "yes" } else { "**no**" }
            );
        }
        for s in &self.scenarios {
            let _ = writeln!(md, "\n## {} {}\n\n{}\n", s.id, s.name, s.setup);
            for (k, v) in &s.metrics {
                let _ = writeln!(md, "- {k}: {}", num(*v));
            }
            for p in &s.plots {
                let _ = writeln!(md, "\n![{} latency distribution]({p})", s.id);
            }
        }
        md
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(dir.join("report.md"), self.markdown()).context("write report.md")?;
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("report.json"), json + "\n").context("write report.json")?;
        Ok(())
    }
}
