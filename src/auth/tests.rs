//! The join policy and the JWT verifier against real tokens: HS256 from a secret, and RS256,
//! ES256 and EdDSA from the key pairs in `tests/fixtures/jwt`; then the API key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};

use super::api_key::ApiKey;
use super::jwt::{JoinClaims, JwtChecks, JwtKeyFile, Verifier};
use super::{AuthError, JoinPolicy, KeyError};

const SECRET: &[u8] = b"test-only-secret-that-is-32-bytes-or-more";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture exists")
}

fn claims(extra: Value) -> Value {
    let now = get_current_timestamp();
    let mut claims = json!({"sub": "user-42", "name": "Ada", "iat": now, "exp": now + 300});
    for (k, v) in extra.as_object().expect("an object") {
        claims[k] = v.clone();
    }
    claims
}

fn hs256(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET).expect("key");
    encode(&Header::new(Algorithm::HS256), claims, &key).expect("signs")
}

fn hs_verifier(checks: JwtChecks) -> Verifier {
    Verifier::from_secret(SECRET, checks).expect("secret is long enough")
}

fn leeway(secs: u64) -> JwtChecks {
    JwtChecks {
        leeway: Duration::from_secs(secs),
        ..JwtChecks::default()
    }
}

#[test]
fn valid_hs256_token_yields_its_claims() {
    let verifier = hs_verifier(JwtChecks::default());
    let exp = get_current_timestamp() + 300;
    let joined = verifier
        .verify(&hs256(&claims(json!({"exp": exp}))))
        .expect("valid");
    assert_eq!(
        joined,
        JoinClaims {
            sub: "user-42".into(),
            name: "Ada".into(),
            broadcast: true,
            rooms: crate::identity::RoomPatterns::lobby(),
            valid_until: exp,
        }
    );
    let lenient = hs_verifier(leeway(30));
    let token = hs256(&claims(json!({"exp": exp})));
    assert_eq!(
        lenient.verify(&token).unwrap().valid_until,
        exp + 30,
        "a session may live until exp plus the leeway"
    );
    let muted = verifier
        .verify(&hs256(&claims(json!({"broadcast": false}))))
        .expect("valid");
    assert!(!muted.broadcast);
    let room = |r| crate::identity::RoomName::parse(r).unwrap();
    let team = verifier
        .verify(&hs256(&claims(json!({"rooms": ["team-7:*", "lobby"]}))))
        .expect("valid");
    assert!(team.rooms.allows(&room("team-7:dev")) && team.rooms.allows(&room("lobby")));
    assert!(!team.rooms.allows(&room("team-8:dev")));
    assert_eq!(
        verifier.verify(&hs256(&claims(json!({"rooms": ["a b"]})))),
        Err(AuthError::Malformed(
            "`rooms` must be room names or prefix* patterns"
        ))
    );
}

#[test]
fn secret_file_is_trimmed_and_short_secrets_refused() {
    let dir = std::env::temp_dir().join(format!("switchboard-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secret");
    std::fs::write(&path, [SECRET, b"\n"].concat()).unwrap();
    let verifier = Verifier::load(&JwtKeyFile::Secret(path.clone()), JwtChecks::default()).unwrap();
    assert!(verifier.verify(&hs256(&claims(json!({})))).is_ok());
    std::fs::write(&path, b"short\n").unwrap();
    assert!(matches!(
        Verifier::load(&JwtKeyFile::Secret(path), JwtChecks::default()),
        Err(KeyError::TooShort { .. })
    ));
    assert!(matches!(
        Verifier::load(
            &JwtKeyFile::Secret(dir.join("absent")),
            JwtChecks::default()
        ),
        Err(KeyError::Read { .. })
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn expired_token_is_refused_beyond_the_leeway_only() {
    let past = get_current_timestamp() - 60;
    let token = hs256(&claims(json!({"exp": past, "iat": past - 60})));
    assert_eq!(
        hs_verifier(leeway(30)).verify(&token),
        Err(AuthError::Expired)
    );
    assert!(hs_verifier(leeway(120)).verify(&token).is_ok());
}

#[test]
fn token_from_the_future_is_refused() {
    let soon = get_current_timestamp() + 120;
    let verifier = hs_verifier(leeway(30));
    let early = hs256(&claims(json!({"nbf": soon})));
    assert_eq!(verifier.verify(&early), Err(AuthError::NotYetValid));
    let issued_later = hs256(&claims(json!({"iat": soon})));
    assert_eq!(verifier.verify(&issued_later), Err(AuthError::NotYetValid));
    let within_leeway = hs256(&claims(json!({"nbf": soon - 100, "iat": soon - 100})));
    assert!(verifier.verify(&within_leeway).is_ok());
}

#[test]
fn missing_exp_sub_or_name_is_refused() {
    let verifier = hs_verifier(JwtChecks::default());
    let without = |claim: &str| {
        let mut claims = claims(json!({}));
        claims.as_object_mut().unwrap().remove(claim);
        hs256(&claims)
    };
    for (token, missing) in [
        (hs256(&json!({"sub": "u", "name": "n"})), "exp"),
        (without("sub"), "sub"),
        (hs256(&claims(json!({"sub": " "}))), "sub"),
        (without("name"), "name"),
    ] {
        assert_eq!(
            verifier.verify(&token),
            Err(AuthError::MissingClaim(missing)),
            "{token}"
        );
    }
}

#[test]
fn wrong_key_is_a_bad_signature() {
    let other = EncodingKey::from_secret(b"another-test-secret-of-32-bytes-or-more").unwrap();
    let token = encode(&Header::new(Algorithm::HS256), &claims(json!({})), &other).unwrap();
    assert_eq!(
        hs_verifier(JwtChecks::default()).verify(&token),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn unsigned_alg_none_token_is_refused() {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
    let verifier = hs_verifier(JwtChecks::default());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        let refused = verifier.verify(&token).unwrap_err();
        assert_eq!(refused.reason(), "wrong_algorithm", "{token}");
    }
}

#[test]
fn hs256_token_signed_with_the_rsa_public_key_is_refused() {
    let public = pem("rsa_public.pem");
    let verifier = Verifier::from_public_key_pem(&public, JwtChecks::default()).unwrap();
    assert_eq!(verifier.algorithm(), Algorithm::RS256);
    let forged_key = EncodingKey::from_secret(&public).unwrap();
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &forged_key,
    );
    assert_eq!(
        verifier.verify(&forged.unwrap()),
        Err(AuthError::WrongAlgorithm { expected: "RS256" })
    );
}

#[test]
fn audience_and_issuer_are_checked_when_configured() {
    let verifier = hs_verifier(JwtChecks {
        audience: Some("switchboard".into()),
        issuer: Some("https://app.example".into()),
        ..JwtChecks::default()
    });
    let good = json!({"aud": "switchboard", "iss": "https://app.example"});
    assert!(verifier.verify(&hs256(&claims(good))).is_ok());
    let listed = json!({"aud": ["other", "switchboard"], "iss": "https://app.example"});
    assert!(verifier.verify(&hs256(&claims(listed))).is_ok());
    let wrong_aud = json!({"aud": "other", "iss": "https://app.example"});
    assert_eq!(
        verifier.verify(&hs256(&claims(wrong_aud))),
        Err(AuthError::BadAudience)
    );
    let wrong_iss = json!({"aud": "switchboard", "iss": "https://evil.example"});
    assert_eq!(
        verifier.verify(&hs256(&claims(wrong_iss))),
        Err(AuthError::BadIssuer)
    );
    let no_aud = json!({"iss": "https://app.example"});
    assert_eq!(
        verifier.verify(&hs256(&claims(no_aud))),
        Err(AuthError::MissingClaim("aud"))
    );
    // Unconfigured checks ignore the claims.
    let lax = hs_verifier(JwtChecks::default());
    assert!(
        lax.verify(&hs256(&claims(json!({"aud": "x", "iss": "y"}))))
            .is_ok()
    );
}

#[test]
fn public_keys_pick_their_algorithm_and_verify_their_tokens() {
    for (public, private, algorithm) in [
        ("rsa_public.pem", "rsa_private.pem", Algorithm::RS256),
        ("ec_public.pem", "ec_private.pem", Algorithm::ES256),
        ("ed_public.pem", "ed_private.pem", Algorithm::EdDSA),
    ] {
        let path = JwtKeyFile::PublicKey(fixture(public));
        let verifier = Verifier::load(&path, JwtChecks::default()).unwrap();
        assert_eq!(verifier.algorithm(), algorithm, "{public}");
        let private = pem(private);
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&private),
            _ => EncodingKey::from_ed_pem(&private),
        }
        .unwrap();
        let token = encode(&Header::new(algorithm), &claims(json!({})), &key).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().sub, "user-42", "{public}");
        // An HMAC token never reaches a public-key verifier.
        let hs = hs256(&claims(json!({})));
        assert_eq!(
            verifier.verify(&hs).unwrap_err().reason(),
            "wrong_algorithm"
        );
    }
}

#[test]
fn es256_token_with_a_tampered_payload_fails_the_signature() {
    let verifier =
        Verifier::from_public_key_pem(&pem("ec_public.pem"), JwtChecks::default()).unwrap();
    let key = EncodingKey::from_ec_pem(&pem("ec_private.pem")).unwrap();
    let token = encode(&Header::new(Algorithm::ES256), &claims(json!({})), &key).unwrap();
    let mut parts: Vec<&str> = token.split('.').collect();
    let tampered = URL_SAFE_NO_PAD.encode(claims(json!({"sub": "admin"})).to_string());
    parts[1] = &tampered;
    assert_eq!(
        verifier.verify(&parts.join(".")),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn private_and_unknown_keys_are_refused_at_load() {
    assert!(matches!(
        Verifier::from_public_key_pem(&pem("rsa_private.pem"), JwtChecks::default()),
        Err(KeyError::PrivateKey)
    ));
    assert!(matches!(
        Verifier::from_public_key_pem(b"not a pem", JwtChecks::default()),
        Err(KeyError::UnsupportedKey)
    ));
}

#[test]
fn missing_and_malformed_tokens_have_their_reasons() {
    let policy = JoinPolicy::Jwt(Box::new(hs_verifier(JwtChecks::default())));
    assert_eq!(policy.admit(None), Err(AuthError::Missing));
    assert_eq!(policy.admit(Some("  ")), Err(AuthError::Missing));
    for garbage in ["abc", "a.b.c", "e30.e30.x"] {
        assert_eq!(
            policy.admit(Some(garbage)).unwrap_err().reason(),
            "malformed",
            "{garbage}"
        );
    }
    assert!(
        policy
            .admit(Some(&hs256(&claims(json!({})))))
            .unwrap()
            .is_some()
    );
    assert_eq!(JoinPolicy::Open.admit(Some("anything")), Ok(None));
}

#[test]
fn api_key_matches_only_itself() {
    let key = ApiKey::new(b"  api-key-for-tests-0123456789\n").unwrap();
    assert!(key.matches("api-key-for-tests-0123456789"));
    assert!(!key.matches("api-key-for-tests-012345678"));
    assert!(!key.matches(""));
    assert!(matches!(
        ApiKey::new(b"short"),
        Err(KeyError::TooShort { .. })
    ));
    assert_eq!(format!("{key:?}"), "ApiKey(..)");
    assert!(matches!(
        ApiKey::load(Path::new("/nonexistent/api-key")),
        Err(KeyError::Read { .. })
    ));
}
