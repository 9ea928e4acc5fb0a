//! Join tokens: the [`Verifier`] that checks a JWT against the one key the server holds, and
//! what it reads from a valid one ([`JoinClaims`]).
//!
//! Tokens are checked by `jsonwebtoken`. The algorithm is pinned to the key the server holds
//! (an HMAC secret means HS256; a PEM public key means RS256, ES256, ES384 or EdDSA by its
//! type), and the token's header is compared with it before anything else, so `alg: none` and
//! the HS/RS confusion (an HS256 token "signed" with the public key's bytes) are refused as
//! `wrong_algorithm`. `exp` is required; `nbf` and `iat` may not lie in the future beyond the
//! leeway; `aud` and `iss` are required and checked only when configured.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};
use serde::Deserialize;

use super::{AuthError, KeyError, read};
use crate::identity::RoomPatterns;

/// Shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as long as the hash.
pub(crate) const MIN_SECRET_BYTES: usize = 32;

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
    /// The app's user id (`sub`), shown to others as `user`. Never empty; `helo` holds it to
    /// the characters of the name rule (`identity::check_user`).
    pub(crate) sub: String,
    /// The display name (`name`), authoritative over any name in the request body. Not yet
    /// checked against the name rule: `helo` does that like for any name.
    pub(crate) name: String,
    /// `false` when the token says `"broadcast": false`; absent means allowed.
    pub(crate) broadcast: bool,
    /// The rooms the session may be in (`rooms`: names or `prefix*` patterns); absent means
    /// `lobby` alone.
    pub(crate) rooms: RoomPatterns,
    /// Until when the token counts: its `exp` plus the leeway, in seconds since the epoch.
    /// A session joined (or refreshed) with it ends then.
    pub(crate) valid_until: u64,
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
        let rooms = match claims.rooms {
            None => RoomPatterns::lobby(),
            Some(rooms) => RoomPatterns::parse(&rooms).map_err(|_| {
                AuthError::Malformed("`rooms` must be room names or prefix* patterns")
            })?,
        };
        Ok(JoinClaims {
            sub: sub.ok_or(AuthError::MissingClaim("sub"))?,
            name: claims.name.ok_or(AuthError::MissingClaim("name"))?,
            broadcast: claims.broadcast.unwrap_or(true),
            rooms,
            // A fraction of a second counts as the whole second.
            valid_until: (claims.exp.ok_or(AuthError::MissingClaim("exp"))?.max(0.0) as u64)
                .saturating_add(self.leeway_secs),
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
    rooms: Option<Vec<String>>,
    /// Seconds since the epoch; a float, as some signers write fractions.
    iat: Option<f64>,
    /// Seconds since the epoch (required, and checked by jsonwebtoken; optional here so that
    /// a missing one is reported as such).
    exp: Option<f64>,
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
