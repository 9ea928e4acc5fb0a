//! The README's Rust example ("Use it from Rust"), kept here so that it is compiled with the
//! tests; `tests/docs.rs` checks the two are the same. Run it against a server on port 4000:
//! `cargo run -p switchboard-client --example hello`.

use futures_util::StreamExt;
use serde_json::json;
use switchboard_client::Client;

#[tokio::main]
async fn main() -> Result<(), switchboard_client::Error> {
    let hub = Client::new("http://127.0.0.1:4000");
    let alice = hub.helo("alice").await?; // Session { id, token, name }
    let bob = hub.helo("bob").await?;

    let mut events = hub.attach(&bob, None).await?; // GET /events/{id}: ready first
    let ready = events.next().await.expect("ready")?; // Frame { id, event, data }
    assert_eq!(ready.event, "ready");

    let event_id = hub.send(&alice, &bob.id, &json!("hello there bob")).await?;
    let frame = events.next().await.expect("an event")?;
    assert_eq!(frame.event, "client_response");
    assert_eq!(frame.id, Some(event_id));

    let recipients = hub.broadcast(&bob, &json!({"text": "hi all"})).await?;
    let resume = events.last_event_id(); // after a lost connection: hub.attach(&bob, resume)
    println!("{recipients} got the broadcast; bob would resume after {resume:?}");
    hub.leave(&bob).await?; // DELETE /session
    hub.leave(&alice).await
}
