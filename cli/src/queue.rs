//! `stoke queue`: how many events of each function wait where.

use stoke_proto::GetQueueRequest;

use crate::client::{Admin, rpc_error};

pub async fn queue(admin: &mut Admin, addr: &str, function: Option<String>, by_key: bool) -> anyhow::Result<()> {
    let r = admin
        .client()
        .get_queue(GetQueueRequest {
            function: function.unwrap_or_default(),
            by_key,
        })
        .await
        .map_err(|s| rpc_error(addr, s))?
        .into_inner();
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "FUNCTION", "QUEUED", "UNACKED", "RUNNING", "WAITING", "RETRYING", "DEFERRED"
    );
    for f in r.functions {
        println!(
            "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            f.function, f.queued, f.unacked, f.running, f.waiting, f.retrying, f.deferred
        );
        for k in f.keys {
            println!("  key {:<18} {:>26} {:>8}", k.key, k.running, k.waiting);
        }
    }
    Ok(())
}
