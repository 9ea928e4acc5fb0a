//! Join tokens for servers running `--auth jwt`: a test secret and its file, claims, signing
//! with `jsonwebtoken`, and joining with a token.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use reqwest::StatusCode;
use serde_json::{Value, json};

use switchboard::{AuthMode, Config};

use super::{Endpoint, Session, body_json};

/// The HS256 secret of test servers (at least 32 bytes, as the server requires).
pub const SECRET: &[u8] = b"test-secret-of-at-least-thirty-two-bytes";

/// Writes [`SECRET`], with the trailing newline secret files usually have, into a new file
/// in `dir`; its path, for `--jwt-secret-file`.
pub fn secret_file(dir: &Path) -> PathBuf {
    let path = dir.join(format!("jwt-secret-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, [SECRET, b"\n"].concat()).expect("write the secret");
    path
}

/// The test configuration with `--auth jwt` and `--jwt-secret-file` holding [`SECRET`].
pub fn hs256_config() -> Config {
    Config {
        auth: AuthMode::Jwt,
        jwt_secret_file: Some(secret_file(Path::new(env!("CARGO_TARGET_TMPDIR")))),
        ..super::test_config()
    }
}

/// A key pair of `tests/fixtures/jwt` (throwaway keys for tests only).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

/// The claims of a valid token for `name`: `sub` is `user-<name>`, valid for five minutes.
pub fn claims(name: &str) -> Value {
    let now = get_current_timestamp();
    json!({ "sub": format!("user-{name}"), "name": name, "iat": now, "exp": now + 300 })
}

/// `claims` with `changes` written over them; a `null` removes the claim.
pub fn with(mut claims: Value, changes: Value) -> Value {
    let map = claims.as_object_mut().expect("claims are an object");
    for (key, value) in changes.as_object().expect("changes are an object") {
        match value {
            Value::Null => map.remove(key),
            _ => map.insert(key.clone(), value.clone()),
        };
    }
    claims
}

pub fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(algorithm), claims, key).expect("sign the token")
}

/// `claims` signed with HS256 and `secret`.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret).expect("an HMAC key");
    sign(Algorithm::HS256, &key, claims)
}

/// `POST /helo` with `Authorization: Bearer <token>` and `body`; the raw response.
pub async fn helo_with(server: &Endpoint, token: &str, body: &str) -> reqwest::Response {
    server.post_raw("/helo", Some(token), body).await
}

/// Joins with `token`, which must be accepted (201); the session.
pub async fn join(server: &Endpoint, token: &str) -> Session {
    let response = helo_with(server, token, "{}").await;
    assert_eq!(response.status(), StatusCode::CREATED, "join with a token");
    serde_json::from_value(body_json(response).await).expect("a session")
}
