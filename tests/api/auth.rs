//! `--auth jwt`: `POST /helo` admits holders of a token from the app's backend, names them
//! after its claims, shows its `sub` to the others as `user`, and refuses every bad token with
//! 401 and the reason; `"broadcast": false` makes `/broadcast` 403. Tokens are minted here with
//! `jsonwebtoken`, HS256 from a secret and RS256/EdDSA from the pairs in `tests/fixtures/jwt`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, get_current_timestamp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::AuthMode;

use crate::support::jwt::*;
use crate::support::*;

/// Asserts a 401 `unauthorized` whose message starts with `reason`.
async fn assert_refused(response: reqwest::Response, reason: &str) {
    let body = assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{reason}: ")),
        "expected reason {reason}, got {message:?}"
    );
}

/// `GET /clients` as the raw JSON values, by id.
async fn clients(app: &Endpoint) -> Vec<Value> {
    let response = app.get_as_backend("/clients").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut list: Vec<Value> = serde_json::from_value(body_json(response).await).unwrap();
    list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    list
}

#[tokio::test]
async fn a_valid_token_names_the_session_and_others_see_its_user() {
    let app = spawn_app(hs256_config()).await;
    // The body's name is ignored: the token's `name` claim is authoritative.
    let response = helo_with(
        &app,
        &hs256(SECRET, &claims("Ada")),
        r#"{"name":"Mallory"}"#,
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let ada: Session = serde_json::from_value(body_json(response).await).unwrap();
    assert_eq!(ada.name, "Ada");
    let mut ada_stream = app.attach_ready(&ada).await;

    let grace = join(&app, &hs256(SECRET, &claims("Grace"))).await;
    assert_eq!(grace.name, "Grace");

    let grace_json = json!({ "id": grace.id, "name": "Grace", "user": "user-Grace" });
    let mut grace_in_lobby = grace_json.clone();
    grace_in_lobby["room"] = "lobby".into();
    assert_eq!(ada_stream.next_named("new_user").await.data, grace_in_lobby);
    let mut grace_stream = app.attach(&grace, None).await;
    let ready = grace_stream.ready().await;
    assert_eq!(
        ready["clients"],
        json!([{ "id": ada.id, "name": "Ada", "user": "user-Ada" }])
    );
    let mut expected = vec![
        json!({ "id": ada.id, "name": "Ada", "user": "user-Ada" }),
        grace_json.clone(),
    ];
    expected.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    assert_eq!(clients(&app).await, expected);

    assert_eq!(
        app.delete(&grace.token).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        ada_stream.next_named("user_left").await.data,
        grace_in_lobby
    );
}

#[tokio::test]
async fn every_bad_join_token_is_401_with_its_reason() {
    let app = spawn_app(hs256_config()).await;
    let now = get_current_timestamp();

    assert_refused(
        app.post_raw("/helo", None, r#"{"name":"ann"}"#).await,
        "missing",
    )
    .await;
    assert_refused(helo_with(&app, "", "{}").await, "missing").await;
    assert_refused(helo_with(&app, "not.a.jwt", "{}").await, "malformed").await;
    let expired = with(
        claims("ann"),
        json!({ "iat": now - 7200, "exp": now - 3600 }),
    );
    assert_refused(
        helo_with(&app, &hs256(SECRET, &expired), "{}").await,
        "expired",
    )
    .await;
    let early = with(claims("ann"), json!({ "nbf": now + 3600 }));
    assert_refused(
        helo_with(&app, &hs256(SECRET, &early), "{}").await,
        "not_yet_valid",
    )
    .await;
    let other_key = hs256(b"another-secret-that-is-32-bytes-long!", &claims("ann"));
    assert_refused(helo_with(&app, &other_key, "{}").await, "bad_signature").await;
    let no_exp = with(claims("ann"), json!({ "exp": null }));
    assert_refused(
        helo_with(&app, &hs256(SECRET, &no_exp), "{}").await,
        "missing_claim",
    )
    .await;
    let no_sub = with(claims("ann"), json!({ "sub": null }));
    assert_refused(
        helo_with(&app, &hs256(SECRET, &no_sub), "{}").await,
        "missing_claim",
    )
    .await;

    // `alg: none`, unsigned: refused for its algorithm before anything else.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims("ann").to_string());
    let unsigned = format!("{header}.{payload}.");
    assert_refused(helo_with(&app, &unsigned, "{}").await, "wrong_algorithm").await;

    // A refused token registers nobody, and a name that breaks the rule is still a bad name.
    assert!(clients(&app).await.is_empty());
    let long = hs256(SECRET, &claims(&"x".repeat(65)));
    assert_error(
        helo_with(&app, &long, "{}").await,
        StatusCode::BAD_REQUEST,
        "invalid_name",
    )
    .await;
    // The body must still be a JSON object.
    let good = hs256(SECRET, &claims("ann"));
    assert_error(
        helo_with(&app, &good, "[]").await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
}

#[tokio::test]
async fn audience_and_issuer_are_checked_when_configured() {
    let app = spawn_app(Config {
        jwt_audience: Some("chat".into()),
        jwt_issuer: Some("https://app.example".into()),
        ..hs256_config()
    })
    .await;
    let good = with(
        claims("ann"),
        json!({ "aud": ["other", "chat"], "iss": "https://app.example" }),
    );
    join(&app, &hs256(SECRET, &good)).await;

    let wrong_aud = with(good.clone(), json!({ "aud": "other" }));
    assert_refused(
        helo_with(&app, &hs256(SECRET, &wrong_aud), "{}").await,
        "bad_audience",
    )
    .await;
    let wrong_iss = with(good.clone(), json!({ "iss": "https://evil.example" }));
    assert_refused(
        helo_with(&app, &hs256(SECRET, &wrong_iss), "{}").await,
        "bad_issuer",
    )
    .await;
    let no_aud = with(good, json!({ "aud": null }));
    assert_refused(
        helo_with(&app, &hs256(SECRET, &no_aud), "{}").await,
        "missing_claim",
    )
    .await;
}

#[tokio::test]
async fn public_keys_verify_their_own_algorithm_and_refuse_hs256_made_with_them() {
    for (public, private, algorithm) in [
        ("rsa_public.pem", "rsa_private.pem", Algorithm::RS256),
        ("ed_public.pem", "ed_private.pem", Algorithm::EdDSA),
    ] {
        let mut app = spawn_app(Config {
            auth: AuthMode::Jwt,
            jwt_public_key_file: Some(fixture(public)),
            ..test_config()
        })
        .await;
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .expect("a private key");
        let ann = join(&app, &sign(algorithm, &key, &claims("ann"))).await;
        assert_eq!(ann.name, "ann", "{algorithm:?}");

        // The HS/RS confusion: an HS256 token whose "secret" is the public key file.
        let public_bytes = std::fs::read(fixture(public)).unwrap();
        let confused = hs256(&public_bytes, &claims("mallory"));
        assert_refused(helo_with(&app, &confused, "{}").await, "wrong_algorithm").await;
        app.stop(WAIT).await.expect("server stops");
    }
}

#[tokio::test]
async fn a_token_saying_broadcast_false_may_message_but_not_broadcast() {
    let app = spawn_app(hs256_config()).await;
    let muted = hs256(
        SECRET,
        &with(claims("quiet"), json!({ "broadcast": false })),
    );
    let quiet = join(&app, &muted).await;
    let loud = join(&app, &hs256(SECRET, &claims("loud"))).await;
    let mut loud_stream = app.attach_ready(&loud).await;

    let body = assert_error(
        app.broadcast(&quiet, "hello all").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("broadcast"),
        "{body}"
    );
    // Direct messages still go through, and the others may broadcast.
    let id = app.respond(&quiet, &loud, "just to you").await;
    let direct = loud_stream.next_named("client_response").await;
    assert_eq!(
        (direct.id, &direct.data["message"]),
        (Some(id), &json!("just to you"))
    );
    assert_eq!(app.broadcast_ok(&loud, "hello all").await, 1);
    // The refused broadcast never reached anyone: the next event loud sees is quiet's leave.
    assert_eq!(
        app.delete(&quiet.token).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(loud_stream.next().await.event, "user_left");
}

#[tokio::test]
async fn an_open_server_ignores_a_join_token_and_shows_no_user() {
    let app = spawn_app(test_config()).await;
    let token = hs256(SECRET, &claims("Ada"));
    let response = helo_with(&app, &token, r#"{"name":"ann"}"#).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let ann: Session = serde_json::from_value(body_json(response).await).unwrap();
    assert_eq!(ann.name, "ann");
    assert_eq!(
        clients(&app).await,
        [json!({ "id": ann.id, "name": "ann" })]
    );
    // Without a token the name is required.
    assert_error(
        app.post_raw("/helo", None, "{}").await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
}

#[test]
fn the_binary_refuses_jwt_without_a_key_in_one_line() {
    let public_key = fixture("rsa_public.pem");
    let private_key = fixture("rsa_private.pem");
    for (args, needle) in [
        (&["--auth", "jwt"][..], "error: --auth jwt needs a key"),
        (
            &["--jwt-public-key-file", public_key.to_str().unwrap()],
            "error: --jwt-public-key-file is only used with --auth jwt",
        ),
        (
            &[
                "--auth",
                "jwt",
                "--jwt-public-key-file",
                private_key.to_str().unwrap(),
            ],
            "error: --jwt-public-key-file: the PEM file holds a private key",
        ),
    ] {
        let args: Vec<&str> = ["--listen", "127.0.0.1:0"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        let (code, stderr) = refused(&args);
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with(needle), "{stderr}");
    }
}
