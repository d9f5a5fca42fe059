//! `stoke queue`: how many events of each function wait where.

use stoke_proto::GetQueueRequest;

use crate::client::Admin;
use crate::row;

pub async fn queue(admin: &mut Admin, function: Option<String>, by_key: bool) -> anyhow::Result<()> {
    let r = admin
        .client()
        .get_queue(GetQueueRequest {
            function: function.unwrap_or_default(),
            by_key,
        })
        .await
        .map_err(admin.err())?
        .into_inner();
    if admin.out.is_json() {
        return admin.out.list(&r.functions, "", &[], |_| vec![]);
    }
    let mut rows = Vec::new();
    for f in &r.functions {
        rows.push(row![
            f.function, f.queued, f.unacked, f.running, f.waiting, f.retrying, f.deferred
        ]);
        for k in &f.keys {
            rows.push(row![format!("  key {}", k.key), "", "", k.running, k.waiting, "", ""]);
        }
    }
    if rows.is_empty() {
        println!("no functions deployed");
        return Ok(());
    }
    crate::output::emit(&crate::output::table(
        &[
            "FUNCTION", "QUEUED", "UNACKED", "RUNNING", "WAITING", "RETRYING", "DEFERRED",
        ],
        rows,
    ));
    Ok(())
}
