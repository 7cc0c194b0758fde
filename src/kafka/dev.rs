//! The development broker: librdkafka's in-process mock cluster (real Kafka protocol over TCP
//! on loopback), with leadflow's topics created through the mock's own API (it does not
//! implement CreateTopics).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::thread;

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::config::Topics;

pub struct DevBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
}

impl DevBroker {
    /// Starts a one-broker mock cluster with every topic of `topics` at `partitions`
    /// partitions. With `port`, a loopback forwarder on that port serves as the bootstrap
    /// address (the mock itself listens on a random port).
    pub fn start(topics: &Topics, partitions: i32, port: Option<u16>) -> anyhow::Result<DevBroker> {
        let cluster = MockCluster::new(1).context("starting the mock Kafka cluster")?;
        for t in topics.all() {
            cluster
                .create_topic(t, partitions, 1)
                .with_context(|| format!("creating topic {t}"))?;
        }
        let mut bootstrap = cluster.bootstrap_servers();
        if let Some(port) = port {
            bootstrap = forward(port, &bootstrap)?;
        }
        Ok(DevBroker { cluster, bootstrap })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The mock cluster itself, e.g. to inject request errors in tests.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }

    /// Creates one more topic (tests).
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        self.cluster
            .create_topic(name, partitions, 1)
            .with_context(|| format!("creating topic {name}"))
    }
}

/// Listens on 127.0.0.1:`port` and pipes each connection to `target` (the first bootstrap
/// address). Clients then follow the advertised listener, also on loopback.
fn forward(port: u16, target: &str) -> anyhow::Result<String> {
    let target = target.split(',').next().unwrap_or(target).to_string();
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            pipe(client, server);
        }
    });
    Ok(addr.to_string())
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    copy(a, b2);
    copy(b, a2);
}
