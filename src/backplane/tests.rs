//! The local hub under load: fan-outs wait for each other, never for the runtime's workers.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::value::RawValue;

use super::*;
use crate::identity::DisplayName;
use crate::registry::Settings;

fn hub() -> Hub {
    let settings = Settings {
        max_sessions: 100,
        ..Settings::small()
    };
    let registry = Registry::new(settings, Arc::new(Metrics::default()));
    Hub::local(registry, HubSettings::default())
}

async fn join(hub: &Hub, name: &str) -> Peer {
    let joining = DisplayName::parse(name).unwrap().into();
    let (peer, _) = hub
        .register(joining, vec![RoomName::lobby()], AddressGuard::unlimited())
        .await
        .unwrap();
    peer
}

// The guard stands for a fan-out that takes long; holding it across awaits is the point.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_waiting_for_a_fan_out_hold_no_worker() {
    let hub = hub();
    let ann = join(&hub, "ann").await;
    let bob = join(&hub, "bob").await;
    let long_fan_out = hub.here.registry.hold_fan_outs();
    // More joins than workers, each registered and then waiting to be announced. Run on the
    // workers, they would all block on the fan-out lock, and nothing else would run.
    let joins: Vec<_> = (0..4)
        .map(|n| {
            let hub = hub.clone();
            tokio::spawn(async move { join(&hub, &format!("joiner {n}")).await })
        })
        .collect();
    for _ in 0..500 {
        if hub.stats().sessions == 6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        hub.stats().sessions,
        6,
        "not every join registered: joins waiting for the fan-out lock hold the workers"
    );
    // A direct message meanwhile. Awaited from this thread (not a worker) with a plain
    // channel, so that blocked workers make the test fail instead of hang.
    let (sent, delivered) = mpsc::channel();
    let messenger = hub.clone();
    tokio::spawn(async move {
        let message = RawValue::from_string("\"hi\"".into()).unwrap();
        let _ = sent.send(messenger.deliver(&ann, bob.id, message, None).await.is_ok());
    });
    let delivered = delivered.recv_timeout(Duration::from_secs(5));
    drop(long_fan_out);
    assert_eq!(
        delivered,
        Ok(true),
        "a direct message waited for the fan-outs"
    );
    for joined in joins {
        tokio::time::timeout(Duration::from_secs(5), joined)
            .await
            .expect("the joins finish once the fan-out lock is free")
            .unwrap();
    }
}
