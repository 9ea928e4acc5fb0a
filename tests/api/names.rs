//! The name rule at every door: `POST /helo`'s body, a join token's `name` claim, and its
//! `sub` (shown to everyone as `user`). Names are trimmed; what hides or reorders text is
//! refused with 400 `invalid_name`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::jwt::*;
use crate::support::*;

/// Names that lie about themselves, each refused: a bidi override, a zero-width space alone,
/// whitespace only, a line separator, a byte order mark, a zero-width joiner.
const HIDING: [&str; 6] = [
    "a\u{202e}b",
    "\u{200b}",
    "   ",
    "ab\u{2028}cd",
    "\u{feff}ann",
    "a\u{200d}b",
];

#[tokio::test]
async fn helo_refuses_names_that_hide_or_reorder_text() {
    let app = spawn_app(test_config()).await;

    for name in HIDING {
        let body = assert_error(
            app.helo_response(name).await,
            StatusCode::BAD_REQUEST,
            "invalid_name",
        )
        .await;
        assert!(
            body["message"].as_str().unwrap().starts_with("`name` must"),
            "{name:?}: {body}"
        );
    }
    assert!(app.client_ids().await.is_empty(), "nothing was registered");
}

#[tokio::test]
async fn helo_trims_surrounding_whitespace_and_others_see_the_trimmed_name() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let mut stream = app.attach_ready(&ann).await;

    let response = app.helo_response(" bob ").await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let bob = body_json(response).await;
    assert_eq!(bob["name"], "bob");
    let heard = stream.next_named("new_user").await.data;
    assert_eq!(
        heard,
        json!({"id": bob["id"], "name": "bob", "room": "lobby"})
    );
}

#[tokio::test]
async fn a_join_tokens_name_is_held_to_the_same_rule_and_trimmed() {
    let app = spawn_app(hs256_config()).await;

    for name in HIDING {
        let token = hs256(SECRET, &claims(name));
        refused_for(&app, &token, "the token's `name`", name).await;
    }
    let token = hs256(SECRET, &with(claims("x"), json!({ "name": "  Ada  " })));
    let response = helo_with(&app, &token, "{}").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(body_json(response).await["name"], "Ada");
}

#[tokio::test]
async fn a_join_token_whose_sub_would_mislead_others_is_refused() {
    let app = spawn_app(hs256_config()).await;
    let subs = [
        "user\nadmin",        // a newline
        "\u{1b}[31mroot",     // an escape sequence
        "user-\u{202e}nimda", // a bidi override
        "a\u{2029}b",         // a paragraph separator
        " user-ann",          // surrounding whitespace: ids are matched exactly
    ];

    for sub in subs {
        let token = hs256(SECRET, &with(claims("ann"), json!({ "sub": sub })));
        refused_for(&app, &token, "the token's `sub`", sub).await;
    }
    let listed: Value = body_json(app.get_as_backend("/clients").await).await;
    assert_eq!(listed, json!([]), "nobody joined");
    let fine = hs256(
        SECRET,
        &with(claims("ann"), json!({ "sub": "auth0|ann@example.com" })),
    );
    assert_eq!(
        helo_with(&app, &fine, "{}").await.status(),
        StatusCode::CREATED
    );
}

/// A join with `token` is 400 `invalid_name`, and the message names the claim (`claim`).
async fn refused_for(app: &TestApp, token: &str, claim: &str, value: &str) {
    let body = assert_error(
        helo_with(app, token, "{}").await,
        StatusCode::BAD_REQUEST,
        "invalid_name",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().starts_with(claim),
        "{value:?}: {body}"
    );
}
