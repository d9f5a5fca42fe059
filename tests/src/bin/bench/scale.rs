//! How much work each scenario does: tiny fixed counts in `--smoke` mode,
//! else the defaults below, each overridable by an environment knob.

use stoke_tests::measure::knob;

pub struct Scale {
    pub smoke: bool,
    /// Alternating peer/stoke rounds per scenario (each scenario's setup
    /// says whether it takes the medians or pools the samples).
    pub rounds: usize,
    pub payload_bytes: usize,
    pub p1_events: usize,
    pub p1_warm: usize,
    /// `batch_size` of P1.batched's subscription.
    pub p1_batch: usize,
    pub p1_batched_events: usize,
    pub p2_rate: f64,
    pub p2_requests: usize,
    pub p2_warm: usize,
    /// Cold invokes per function, sandbox mode and round.
    pub p3_cold: usize,
    /// Sequential warm invokes per function and sandbox mode.
    pub p3_warm_calls: usize,
    /// Closed-loop clients (and warm sandboxes) for both sides.
    pub p4_clients: usize,
    /// Requests per round and side.
    pub p4_requests: usize,
    pub p5_functions: usize,
    pub p5_idle_secs: f64,
    /// Warm sandboxes for the memory figure.
    pub p5_sandboxes: usize,
    /// The large backlog, in events.
    pub p6_backlog: usize,
    /// The small backlog, in events (drained whole).
    pub p6_small_backlog: usize,
    /// Completions of the large backlog measured.
    pub p6_window: usize,
    /// Attempt rows for the usage queries.
    pub p6_rows: usize,
    /// Timed runs of each usage query.
    pub p6_queries: usize,
}

impl Scale {
    pub fn new(smoke: bool) -> Scale {
        if smoke {
            return Scale {
                smoke,
                rounds: 1,
                payload_bytes: 128,
                p1_events: 300,
                p1_warm: 2,
                p1_batch: 10,
                p1_batched_events: 600,
                p2_rate: 200.0,
                p2_requests: 200,
                p2_warm: 2,
                p3_cold: 2,
                p3_warm_calls: 10,
                p4_clients: 4,
                p4_requests: 40,
                p5_functions: 4,
                p5_idle_secs: 3.0,
                p5_sandboxes: 8,
                p6_backlog: 3000,
                p6_small_backlog: 300,
                p6_window: 600,
                p6_rows: 10_000,
                p6_queries: 3,
            };
        }
        Scale {
            smoke,
            rounds: knob("BENCH_ROUNDS", 3).max(1),
            payload_bytes: knob("BENCH_PAYLOAD_BYTES", 128),
            p1_events: knob("BENCH_P1_EVENTS", 5000),
            p1_warm: knob("BENCH_P1_WARM", 8).max(1),
            p1_batch: knob("BENCH_P1_BATCH", 100).clamp(2, 1000),
            p1_batched_events: knob("BENCH_P1_BATCHED_EVENTS", 50_000).max(1),
            p2_rate: knob("BENCH_P2_RATE", 200).max(1) as f64,
            p2_requests: knob("BENCH_P2_REQUESTS", 3000),
            p2_warm: knob("BENCH_P2_WARM", 4).max(1),
            p3_cold: knob("BENCH_P3_COLD", 15).max(1),
            p3_warm_calls: knob("BENCH_P3_WARM_CALLS", 200).max(1),
            p4_clients: knob("BENCH_P4_CLIENTS", 8).max(1),
            p4_requests: knob("BENCH_P4_REQUESTS", 1000).max(1),
            p5_functions: knob("BENCH_P5_FUNCTIONS", 100).max(1),
            p5_idle_secs: knob("BENCH_P5_IDLE_SECS", 60).max(1) as f64,
            p5_sandboxes: knob("BENCH_P5_SANDBOXES", 40).max(2),
            p6_backlog: knob("BENCH_P6_BACKLOG", 1_000_000).max(1),
            p6_small_backlog: knob("BENCH_P6_SMALL_BACKLOG", 1000).max(10),
            p6_window: knob("BENCH_P6_WINDOW", 20_000).max(1),
            p6_rows: knob("BENCH_P6_ROWS", 10_000_000).max(1000),
            p6_queries: knob("BENCH_P6_QUERIES", 5).max(1),
        }
    }

    /// A JSON event of exactly `payload_bytes` (at least its fixed part).
    pub fn payload(&self) -> Vec<u8> {
        let fixed = r#"{"name":"bench","pad":""}"#.len();
        let pad = "x".repeat(self.payload_bytes.saturating_sub(fixed));
        format!(r#"{{"name":"bench","pad":"{pad}"}}"#).into_bytes()
    }
}
