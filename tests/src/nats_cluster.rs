//! A real three-node (or N-node) nats-server cluster with JetStream on
//! loopback ports, for the scale-out tests: each node has its own store
//! dir, client port and route port, and any node can be SIGKILLed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::{eventually, free_port, nats_server_bin};

struct Node {
    child: Option<Child>,
    port: u16,
}

pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Start `n` nodes routed to each other and wait until JetStream has a
    /// meta leader (streams can be created).
    pub async fn start(n: usize) -> anyhow::Result<NatsCluster> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, (port, route)) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .filter(|(_, r)| r != route)
                .map(|(_, r)| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let conf = dir.path().join(format!("n{i}.conf"));
            let store = dir.path().join(format!("n{i}"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{port}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{\n  name: stoke-test\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    store.display(),
                    routes.join(", ")
                ),
            )?;
            nodes.push(Node {
                child: Some(spawn(&conf, &dir.path().join(format!("n{i}.log")))?),
                port: *port,
            });
        }
        let cluster = NatsCluster { nodes, _dir: dir };
        let url = cluster.url();
        // Ready once a stream replicated on every node can be made (a
        // JetStream meta leader exists and every node has joined).
        let replicas = n;
        eventually(
            Duration::from_secs(30),
            "the JetStream cluster to elect a leader",
            || {
                let url = url.clone();
                async move {
                    let servers: Vec<async_nats::ServerAddr> = url.split(',').filter_map(|u| u.parse().ok()).collect();
                    let client = async_nats::connect(servers).await.ok()?;
                    let js = async_nats::jetstream::new(client);
                    let probe = async_nats::jetstream::stream::Config {
                        name: "CLUSTER_READY".into(),
                        subjects: vec!["cluster.ready".into()],
                        num_replicas: replicas,
                        ..Default::default()
                    };
                    js.create_stream(probe).await.ok()?;
                    js.delete_stream("CLUSTER_READY").await.ok().map(|_| ())
                }
            },
        )
        .await;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated (what `--nats-url` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(conf: &Path, log: &Path) -> anyhow::Result<Child> {
    Command::new(nats_server_bin())
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("cannot start nats-server (apt-get install nats-server)")
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
