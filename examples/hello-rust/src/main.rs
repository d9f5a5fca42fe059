//! A function written against the official `lambda_runtime` crate, exactly
//! as for AWS Lambda; stoke's worker serves the Runtime API it talks to.

use std::sync::OnceLock;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

/// Which process answered (its pid is 1 inside the sandbox's pid namespace).
fn instance() -> &'static str {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{:x}", now.as_nanos())
    })
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    // A message on a subscribed NATS subject arrives wrapped; its payload is "data".
    // A function URL request (Lambda's payload 2.0): the input is its JSON
    // body. A subject message: its data. Anything else: the event itself.
    let body = (event.payload.get("version").and_then(Value::as_str) == Some("2.0"))
        .then(|| event.payload.get("body").and_then(Value::as_str))
        .flatten()
        .and_then(|b| serde_json::from_str::<Value>(b).ok());
    let input = match (&body, event.payload.get("source").and_then(Value::as_str)) {
        (Some(body), _) => body,
        (None, Some("nats")) => event.payload.get("data").unwrap_or(&Value::Null),
        (None, _) => &event.payload,
    };
    // {"sleep": seconds} answers after that long (for the benchmarks). A
    // thread sleep (the runtime runs one event at a time): tokio's timer
    // rounds up to whole milliseconds, so its 100 ms took ~101 ms.
    if let Some(secs) = input.get("sleep").and_then(Value::as_f64) {
        std::thread::sleep(std::time::Duration::from_secs_f64(secs.clamp(0.0, 900.0)));
    }
    let name = input.get("name").and_then(Value::as_str).unwrap_or("world");
    Ok(json!({
        "message": format!("Hello, {name}!"),
        "runtime": "lambda_runtime",
        "pid": std::process::id(),
        "instance": instance(),
        "request_id": event.context.request_id,
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    instance();
    lambda_runtime::run(service_fn(handler)).await
}
