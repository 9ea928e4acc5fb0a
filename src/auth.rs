//! Who may join, and who may call the server API: the [`JoinPolicy`] that `POST /helo` asks
//! (anyone, or holders of a JWT minted by the app's backend) and the [`ApiKey`] of the backend
//! API. It owns key loading and token checks; it knows no HTTP: the edge strips `Bearer ` off
//! the `Authorization` header, passes the rest in, and renders an [`AuthError`] as
//! 401 `{"error":"unauthorized","message":...}` with [`AuthError::reason`].
//!
//! Tokens are checked by `jsonwebtoken`. The algorithm is pinned to the key the server holds
//! (an HMAC secret means HS256; a PEM public key means RS256, ES256, ES384 or EdDSA by its
//! type), and the token's header is compared with it before anything else, so `alg: none` and
//! the HS/RS confusion (an HS256 token "signed" with the public key's bytes) are refused as
//! `wrong_algorithm`. `exp` is required; `nbf` and `iat` may not lie in the future beyond the
//! leeway; `aud` and `iss` are required and checked only when configured.
//!
//! # Config
//! | flag | env | default | meaning |
//! | --- | --- | --- | --- |
//! | `--auth open\|jwt` | `SWITCHBOARD_AUTH` | `open` | `open`: anyone may join (warn at start-up when listening beyond loopback); `jwt`: `/helo` needs a token |
//! | `--jwt-secret-file PATH` | `SWITCHBOARD_JWT_SECRET_FILE` | none | HS256 shared secret (≥ 32 bytes, surrounding whitespace trimmed) |
//! | `--jwt-public-key-file PATH` | `SWITCHBOARD_JWT_PUBLIC_KEY_FILE` | none | PEM public key (RSA, EC P-256/P-384, Ed25519); exactly one of the two key flags with `--auth jwt` |
//! | `--jwt-audience AUD` | `SWITCHBOARD_JWT_AUDIENCE` | none | when set, `aud` must be present and contain it |
//! | `--jwt-issuer ISS` | `SWITCHBOARD_JWT_ISSUER` | none | when set, `iss` must be present and equal it |
//! | `--jwt-leeway DURATION` | `SWITCHBOARD_JWT_LEEWAY` | `30s` | clock skew allowed on `exp`, `nbf`, `iat` |
//! | `--api-key-file PATH` | `SWITCHBOARD_API_KEY_FILE` | none | enables the server API; without it the API answers 404 |
#![cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "wired into helo and the server API after the refactor (issue 10)"
    )
)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as long as the hash.
pub(crate) const MIN_SECRET_BYTES: usize = 32;

/// Shortest API key accepted.
pub(crate) const MIN_API_KEY_BYTES: usize = 16;

/// Who may `POST /helo`.
#[derive(Debug)]
pub(crate) enum JoinPolicy {
    /// Anyone; names are whatever the client sends.
    Open,
    /// Only holders of a valid token; its claims name the user.
    Jwt(Box<Verifier>),
}

impl JoinPolicy {
    /// Admits a joining client. `bearer` is the credential after `Bearer `, if any.
    ///
    /// Returns `None` in open mode (a token sent anyway is ignored) and the token's claims in
    /// JWT mode.
    ///
    /// # Errors
    /// In JWT mode, [`AuthError::Missing`] without a credential, else whatever
    /// [`Verifier::verify`] refuses.
    pub(crate) fn admit(&self, bearer: Option<&str>) -> Result<Option<JoinClaims>, AuthError> {
        match self {
            JoinPolicy::Open => Ok(None),
            JoinPolicy::Jwt(verifier) => verifier.verify(bearer.unwrap_or("")).map(Some),
        }
    }
}

/// Where the verifier's key comes from (`--jwt-secret-file` or `--jwt-public-key-file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JwtKeyFile {
    /// A shared secret: HS256.
    Secret(PathBuf),
    /// A PEM public key; the algorithm follows from the key type.
    PublicKey(PathBuf),
}

/// What a [`Verifier`] checks beyond the signature.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct JwtChecks {
    /// When set, `aud` must be present and contain this value.
    pub(crate) audience: Option<String>,
    /// When set, `iss` must be present and equal this value.
    pub(crate) issuer: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, rounded down to whole seconds.
    pub(crate) leeway: Duration,
}

/// What a valid join token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JoinClaims {
    /// The app's user id (`sub`), shown to others as `user`. Never empty.
    pub(crate) sub: String,
    /// The display name (`name`), authoritative over any name in the request body. Not yet
    /// checked against the name rule: `helo` does that like for any name.
    pub(crate) name: String,
    /// `false` when the token says `"broadcast": false`; absent means allowed.
    pub(crate) broadcast: bool,
}

/// Why a join token was refused; one variant per [`AuthError::reason`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("missing Authorization: Bearer <JWT> header")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf or iat in the future)")]
    NotYetValid,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token must be signed with {expected}")]
    WrongAlgorithm { expected: &'static str },
    #[error("token audience does not match")]
    BadAudience,
    #[error("token issuer does not match")]
    BadIssuer,
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(&'static str),
}

impl AuthError {
    /// The machine-usable reason, snake_case, for the 401 body and the metrics label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSignature => "bad_signature",
            AuthError::WrongAlgorithm { .. } => "wrong_algorithm",
            AuthError::BadAudience => "bad_audience",
            AuthError::BadIssuer => "bad_issuer",
            AuthError::MissingClaim(_) => "missing_claim",
        }
    }
}

/// Why a key or API key file could not be used; reported at start-up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} must be at least {min} bytes")]
    TooShort { what: &'static str, min: usize },
    #[error("the PEM file holds a private key; give the server the public key only")]
    PrivateKey,
    #[error("not a PEM public key of a supported type (RSA, EC P-256 or P-384, Ed25519)")]
    UnsupportedKey,
}

/// Checks join tokens against one key with one pinned algorithm.
pub(crate) struct Verifier {
    key: DecodingKey,
    algorithm: Algorithm,
    /// `algorithm` as written in a JWT header.
    algorithm_name: &'static str,
    validation: Validation,
    leeway_secs: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Reads the key file and builds the verifier.
    ///
    /// # Errors
    /// [`KeyError`] when the file cannot be read or holds no usable key.
    pub(crate) fn load(key: &JwtKeyFile, checks: JwtChecks) -> Result<Self, KeyError> {
        match key {
            JwtKeyFile::Secret(path) => Self::from_secret(&read(path)?, checks),
            JwtKeyFile::PublicKey(path) => Self::from_public_key_pem(&read(path)?, checks),
        }
    }

    /// An HS256 verifier. Surrounding ASCII whitespace is trimmed, since secret files usually
    /// end with a newline the signer does not use.
    ///
    /// # Errors
    /// [`KeyError::TooShort`] below [`MIN_SECRET_BYTES`].
    pub(crate) fn from_secret(secret: &[u8], checks: JwtChecks) -> Result<Self, KeyError> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::TooShort {
                what: "the JWT secret",
                min: MIN_SECRET_BYTES,
            });
        }
        let key = DecodingKey::from_secret(secret).map_err(|_| KeyError::UnsupportedKey)?;
        Ok(Self::new(key, (Algorithm::HS256, "HS256"), checks))
    }

    /// A verifier for a PEM public key (or certificate), its algorithm chosen by the key type:
    /// RSA → RS256, EC P-256 → ES256, EC P-384 → ES384, Ed25519 → EdDSA.
    ///
    /// # Errors
    /// [`KeyError::PrivateKey`] for a private key; [`KeyError::UnsupportedKey`] otherwise.
    pub(crate) fn from_public_key_pem(pem: &[u8], checks: JwtChecks) -> Result<Self, KeyError> {
        if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
            return Err(KeyError::PrivateKey);
        }
        let (key, algorithm) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, (Algorithm::RS256, "RS256"))
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // An uncompressed point is 0x04 || x || y; its length gives the curve.
            let algorithm = match key.kind() {
                DecodingKeyKind::SecretOrDer(point) if point.len() == 65 => {
                    (Algorithm::ES256, "ES256")
                }
                DecodingKeyKind::SecretOrDer(point) if point.len() == 97 => {
                    (Algorithm::ES384, "ES384")
                }
                _ => return Err(KeyError::UnsupportedKey),
            };
            (key, algorithm)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, (Algorithm::EdDSA, "EdDSA"))
        } else {
            return Err(KeyError::UnsupportedKey);
        };
        Ok(Self::new(key, algorithm, checks))
    }

    fn new(
        key: DecodingKey,
        (algorithm, algorithm_name): (Algorithm, &'static str),
        checks: JwtChecks,
    ) -> Self {
        let mut validation = Validation::new(algorithm);
        let mut required = vec!["exp"];
        validation.leeway = checks.leeway.as_secs();
        validation.validate_nbf = true;
        // jsonwebtoken refuses any `aud` when none is expected; we check it only when asked.
        validation.validate_aud = checks.audience.is_some();
        if let Some(audience) = &checks.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        if let Some(issuer) = &checks.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Self {
            key,
            algorithm,
            algorithm_name,
            validation,
            leeway_secs: checks.leeway.as_secs(),
        }
    }

    /// The algorithm tokens must be signed with.
    pub(crate) fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Verifies a compact JWT (the credential after `Bearer `) and returns its claims.
    ///
    /// # Errors
    /// One [`AuthError`] per refusal: an empty `token` is [`AuthError::Missing`]; a header
    /// naming another algorithm (including `none`) is [`AuthError::WrongAlgorithm`], checked
    /// before the signature; then signature, `exp`, `nbf`, `aud`, `iss`, `iat`, and the claims
    /// `sub` and `name`.
    pub(crate) fn verify(&self, token: &str) -> Result<JoinClaims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let expected = self.algorithm_name;
        match header_algorithm(token) {
            Some(alg) if alg == expected => {}
            Some(_) => return Err(AuthError::WrongAlgorithm { expected }),
            None => {
                return Err(AuthError::Malformed(
                    "the header is not base64url JSON with alg",
                ));
            }
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|error| self.refusal(error.into_kind()))?
            .claims;
        if claims.iat.is_some_and(|iat| {
            iat > (jsonwebtoken::get_current_timestamp() + self.leeway_secs) as f64
        }) {
            return Err(AuthError::NotYetValid);
        }
        let sub = claims.sub.filter(|sub| !sub.trim().is_empty());
        Ok(JoinClaims {
            sub: sub.ok_or(AuthError::MissingClaim("sub"))?,
            name: claims.name.ok_or(AuthError::MissingClaim("name"))?,
            broadcast: claims.broadcast.unwrap_or(true),
        })
    }

    fn refusal(&self, kind: ErrorKind) -> AuthError {
        match kind {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::BadAudience,
            ErrorKind::InvalidIssuer => AuthError::BadIssuer,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                AuthError::WrongAlgorithm {
                    expected: self.algorithm_name,
                }
            }
            ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(match &*claim {
                "aud" => "aud",
                "iss" => "iss",
                _ => "exp",
            }),
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                AuthError::Malformed("not a compact JWT")
            }
            ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => {
                AuthError::Malformed("a claim has the wrong type")
            }
            _ => AuthError::BadSignature,
        }
    }
}

/// The claims we read; registered ones jsonwebtoken checks are not repeated here.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    name: Option<String>,
    broadcast: Option<bool>,
    /// Seconds since the epoch; a float, as some signers write fractions.
    iat: Option<f64>,
}

/// The `alg` of a compact JWT's header, read without trusting anything else in it.
fn header_algorithm(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let (header, _) = token.split_once('.')?;
    let json = URL_SAFE_NO_PAD.decode(header).ok()?;
    serde_json::from_slice::<Header>(&json).ok().map(|h| h.alg)
}

/// The bearer key of the server API (`--api-key-file`). Only its SHA-256 digest is kept, and
/// presented keys are hashed and compared in constant time, so neither the key's bytes nor its
/// length leak through timing.
#[derive(Clone)]
pub(crate) struct ApiKey {
    digest: [u8; 32],
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

impl ApiKey {
    /// Reads the key from `path`, trimming surrounding ASCII whitespace.
    ///
    /// # Errors
    /// [`KeyError::Read`] when unreadable; [`KeyError::TooShort`] below [`MIN_API_KEY_BYTES`].
    pub(crate) fn load(path: &Path) -> Result<Self, KeyError> {
        Self::new(&read(path)?)
    }

    /// The key itself, trimmed like [`ApiKey::load`].
    ///
    /// # Errors
    /// [`KeyError::TooShort`] below [`MIN_API_KEY_BYTES`].
    pub(crate) fn new(key: &[u8]) -> Result<Self, KeyError> {
        let key = key.trim_ascii();
        if key.len() < MIN_API_KEY_BYTES {
            return Err(KeyError::TooShort {
                what: "the API key",
                min: MIN_API_KEY_BYTES,
            });
        }
        Ok(Self {
            digest: Sha256::digest(key).into(),
        })
    }

    /// Whether `presented` (the credential after `Bearer `) is this key.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&presented).into()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    use serde_json::{Value, json};

    use super::*;

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
        let joined = verifier.verify(&hs256(&claims(json!({})))).expect("valid");
        assert_eq!(
            joined,
            JoinClaims {
                sub: "user-42".into(),
                name: "Ada".into(),
                broadcast: true
            }
        );
        let muted = verifier
            .verify(&hs256(&claims(json!({"broadcast": false}))))
            .expect("valid");
        assert!(!muted.broadcast);
    }

    #[test]
    fn secret_file_is_trimmed_and_short_secrets_refused() {
        let dir = std::env::temp_dir().join(format!("switchboard-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, [SECRET, b"\n"].concat()).unwrap();
        let verifier =
            Verifier::load(&JwtKeyFile::Secret(path.clone()), JwtChecks::default()).unwrap();
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
        let no_exp = hs256(&json!({"sub": "u", "name": "n"}));
        assert_eq!(
            verifier.verify(&no_exp),
            Err(AuthError::MissingClaim("exp"))
        );
        let mut no_sub = claims(json!({}));
        no_sub.as_object_mut().unwrap().remove("sub");
        assert_eq!(
            verifier.verify(&hs256(&no_sub)),
            Err(AuthError::MissingClaim("sub"))
        );
        let blank_sub = hs256(&claims(json!({"sub": " "})));
        assert_eq!(
            verifier.verify(&blank_sub),
            Err(AuthError::MissingClaim("sub"))
        );
        let mut no_name = claims(json!({}));
        no_name.as_object_mut().unwrap().remove("name");
        assert_eq!(
            verifier.verify(&hs256(&no_name)),
            Err(AuthError::MissingClaim("name"))
        );
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
}
