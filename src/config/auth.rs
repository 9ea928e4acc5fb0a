//! Who may join and who may use the server API: `--auth` with its `--jwt-*` flags, and
//! `--api-key-file`, turned into what the server checks.

use clap::ValueEnum;

use super::Config;
use crate::auth::JoinPolicy;
use crate::auth::api_key::ApiKey;
use crate::auth::jwt::{JwtChecks, JwtKeyFile, Verifier};

/// Who may join (`--auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Anyone may join, under the name it sends.
    #[default]
    Open,
    /// `POST /helo` needs `Authorization: Bearer <JWT>` from the app's backend.
    Jwt,
}

impl Config {
    /// The join policy `--auth` and the `--jwt-*` flags ask for, its key loaded.
    ///
    /// # Errors
    /// One line naming the flag: `--auth jwt` without exactly one key file, a key file that
    /// cannot be read or holds no usable key, or a key file given with `--auth open`.
    pub(crate) fn join_policy(&self) -> Result<JoinPolicy, String> {
        let key = match (&self.jwt_secret_file, &self.jwt_public_key_file) {
            (Some(path), None) => Some(("--jwt-secret-file", JwtKeyFile::Secret(path.clone()))),
            (None, Some(path)) => {
                Some(("--jwt-public-key-file", JwtKeyFile::PublicKey(path.clone())))
            }
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(
                    "--jwt-secret-file and --jwt-public-key-file exclude each other: give one key"
                        .to_owned(),
                );
            }
        };
        match (self.auth, key) {
            (AuthMode::Open, None) => Ok(JoinPolicy::Open),
            (AuthMode::Open, Some((flag, _))) => Err(format!(
                "{flag} is only used with --auth jwt; add --auth jwt, or drop the key file"
            )),
            (AuthMode::Jwt, None) => Err(
                "--auth jwt needs a key: --jwt-secret-file (HS256) or --jwt-public-key-file (PEM)"
                    .to_owned(),
            ),
            (AuthMode::Jwt, Some((flag, key))) => {
                let checks = JwtChecks {
                    audience: self.jwt_audience.clone(),
                    issuer: self.jwt_issuer.clone(),
                    leeway: self.jwt_leeway,
                };
                Verifier::load(&key, checks)
                    .map(|verifier| JoinPolicy::Jwt(Box::new(verifier)))
                    .map_err(|err| format!("{flag}: {err}"))
            }
        }
    }

    /// The server API's key, when `--api-key-file` enables the API.
    ///
    /// # Errors
    /// One line naming the flag: the file cannot be read or holds too short a key.
    pub(crate) fn api_key(&self) -> Result<Option<ApiKey>, String> {
        self.api_key_file
            .as_deref()
            .map(|path| ApiKey::load(path).map_err(|err| format!("--api-key-file: {err}")))
            .transpose()
    }
}
