//! A function written against the official `lambda_runtime` crate, exactly
//! as for AWS Lambda; stoke's worker serves the Runtime API it talks to.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let name = event.payload.get("name").and_then(Value::as_str).unwrap_or("world");
    Ok(json!({
        "message": format!("Hello, {name}!"),
        "runtime": "lambda_runtime",
        "pid": std::process::id(),
        "request_id": event.context.request_id,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
