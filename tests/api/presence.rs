//! `presence: false`: no `new_user`, no `user_left`, an empty roster; messages still flow.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn without_presence_there_are_no_join_or_leave_events_and_the_roster_is_empty() {
    let app = spawn_app(Config {
        presence: false,
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut ann_stream = app.attach(&ann, None).await;
    assert_eq!(
        ann_stream.ready().await,
        json!({"id": ann.id, "name": "ann", "clients": [], "rooms": {"lobby": {"members": 2}}})
    );

    // Bob joined before ann attached and cat joins now: ann's first event is still bob's
    // broadcast, so neither join was announced.
    let cat = app.helo("cat").await;
    app.broadcast_ok(&bob, json!("first")).await;
    let first = ann_stream.next_named("client_broadcast").await;
    assert_eq!(
        (first.id, &first.data["message"]),
        (Some(1), &json!("first"))
    );

    // Bob leaves; the next thing ann sees is cat's broadcast, not user_left.
    assert_eq!(
        app.delete(&bob.token).await.status(),
        StatusCode::NO_CONTENT
    );
    app.broadcast_ok(&cat, json!("second")).await;
    let second = ann_stream.next_named("client_broadcast").await;
    assert_eq!(
        (second.id, &second.data["message"]),
        (Some(2), &json!("second"))
    );

    // The registry still knows everyone; only the announcements are off.
    assert_eq!(
        app.client_ids().await,
        [ann.id.clone(), cat.id.clone()].into()
    );
    let mut cat_stream = app.attach(&cat, None).await;
    assert_eq!(cat_stream.ready().await["clients"], json!([]));
}
