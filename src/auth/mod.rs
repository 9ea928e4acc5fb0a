//! Who may join, and who may call the server API: the [`JoinPolicy`] that `POST /helo` asks
//! (anyone, or holders of a JWT minted by the app's backend) and the
//! [`ApiKey`](api_key::ApiKey) of the backend API. It owns key loading and token checks; it
//! knows no HTTP: the edge strips `Bearer ` off the `Authorization` header, passes the rest
//! in, and renders an [`AuthError`] as 401 `{"error":"unauthorized","message":...}` with
//! [`AuthError::reason`].
//!
//! # Layout
//! - this file: the join decision ([`JoinPolicy`]), its refusals ([`AuthError`]) and the
//!   start-up errors of either key ([`KeyError`]).
//! - [`jwt`]: the [`Verifier`] of join tokens, pinned to one key and one algorithm.
//! - [`api_key`]: the `ApiKey` of the server API, kept as a digest.
//! - [`ticket`]: single-use stream tickets (`POST /session/ticket`), for `EventSource`s on
//!   other origins.
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
//! | `--api-key-file PATH` | `SWITCHBOARD_API_KEY_FILE` | none | enables the server API (`/api/*`); without it the API answers 404 |

pub(crate) mod api_key;
pub(crate) mod jwt;
#[cfg(test)]
mod tests;
pub(crate) mod ticket;

use std::path::{Path, PathBuf};

use jwt::{JoinClaims, Verifier};

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

/// The bytes of a key file.
///
/// # Errors
/// [`KeyError::Read`] when it cannot be read.
fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}
