//! Credentials: argon2 password hashes, API tokens, and logging a client in as a
//! [`Principal`].

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use chrono::Utc;
use sha2::{Digest, Sha256};
use strata_engine::Principal;
use strata_meta::MetaStore;

use crate::{Error, Result};

/// Prefix of every API token's secret, so that a token given where a password is expected
/// is recognised (and so secret scanners can find leaked ones).
pub const TOKEN_PREFIX: &str = "strata_";

/// An argon2id hash of `password` in PHC format, for [`MetaStore::create_user`].
pub fn hash_password(password: &str) -> Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h: PasswordHash| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

/// Whether `password` matches the PHC `hash`. Constant-time in the password.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A new API token: `(secret, hash)`. Show the secret once; store only the hash.
pub fn new_token() -> Result<(String, String)> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = token_hash(&secret);
    Ok((secret, hash))
}

/// The SHA-256 (hex) under which a token's secret is stored. Tokens are long random
/// strings, so a fast hash is enough (unlike passwords).
pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Base64 as HTTP Basic credentials carry it, padded or not (some clients leave the
/// padding out).
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s.trim_end_matches('=')))
        .ok()
}

/// How a client proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A password.
    Password,
    /// An API token (its id), re-checked while the connection lives.
    Token(strata_meta::TokenId),
}

/// Logs users in against the metadata store.
#[derive(Debug, Clone)]
pub struct Authenticator {
    meta: Arc<MetaStore>,
}

impl Authenticator {
    /// Over `meta`.
    pub fn new(meta: Arc<MetaStore>) -> Self {
        Self { meta }
    }

    /// Checks `secret` (a password, or an API token of `user`) and returns the principal.
    /// Every failure reads the same to the client, so user names cannot be probed.
    pub async fn login(&self, user: &str, secret: &str) -> Result<(Principal, Credential)> {
        let refused = || Error::AuthFailed(user.to_string());
        if secret.starts_with(TOKEN_PREFIX) {
            let token = self
                .meta
                .token_by_hash(&token_hash(secret))
                .await?
                .ok_or_else(refused)?;
            if token.user != user || !token.is_valid_at(Utc::now()) {
                return Err(refused());
            }
            let principal = self.principal(user).await?.ok_or_else(refused)?;
            let _ = self.meta.touch_token(&token.id).await;
            return Ok((principal, Credential::Token(token.id)));
        }
        let record = self.meta.user(user).await?;
        let hash = record
            .as_ref()
            .filter(|u| !u.disabled)
            .and_then(|u| u.password_hash.clone());
        let secret = secret.to_string();
        // Verify even for unknown users (against a dummy hash) so timing does not tell.
        let ok = tokio::task::spawn_blocking(move || match hash {
            Some(h) => verify_password(&h, &secret),
            None => {
                let _ = verify_password(dummy_hash(), &secret);
                false
            }
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Err(refused());
        }
        let principal = self.principal(user).await?.ok_or_else(refused)?;
        Ok((principal, Credential::Password))
    }

    /// Checks an API token on its own (the token names its user), as `Bearer` headers
    /// send it.
    pub async fn login_token(&self, secret: &str) -> Result<(Principal, Credential)> {
        let refused = || Error::AuthFailed(String::new());
        if !secret.starts_with(TOKEN_PREFIX) {
            return Err(refused());
        }
        let token = self
            .meta
            .token_by_hash(&token_hash(secret))
            .await?
            .ok_or_else(refused)?;
        if !token.is_valid_at(Utc::now()) {
            return Err(refused());
        }
        let principal = self.principal(&token.user).await?.ok_or_else(refused)?;
        // Requests come many a second: the last use is kept to the minute.
        if token
            .last_used_at
            .is_none_or(|at| Utc::now() - at > chrono::Duration::seconds(60))
        {
            let _ = self.meta.touch_token(&token.id).await;
        }
        Ok((principal, Credential::Token(token.id)))
    }

    /// Whether a connection logged in with `credential` as `user` may go on (the user was
    /// not disabled or dropped, the token not revoked or expired).
    pub async fn still_valid(&self, user: &str, credential: &Credential) -> Result<bool> {
        let Some(u) = self.meta.user(user).await? else {
            return Ok(false);
        };
        if u.disabled {
            return Ok(false);
        }
        match credential {
            Credential::Password => Ok(true),
            Credential::Token(id) => Ok(self
                .meta
                .tokens(Some(user))
                .await?
                .iter()
                .any(|t| &t.id == id && t.is_valid_at(Utc::now()))),
        }
    }

    /// The principal `user` is now: roles (transitively), attributes, superuser flag.
    pub async fn principal(&self, user: &str) -> Result<Option<Principal>> {
        let Some(u) = self.meta.user(user).await? else {
            return Ok(None);
        };
        if u.disabled {
            return Ok(None);
        }
        Ok(Some(Principal {
            name: u.name.clone(),
            roles: self.meta.roles_of(&u.name).await?,
            attributes: u.attributes.clone(),
            superuser: u.superuser,
        }))
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("strata-dummy-password").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let h = hash_password("s3cret!").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "s3cret!"));
        assert!(!verify_password(&h, "s3cret"));
        assert!(!verify_password("not a hash", "s3cret!"));
    }

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (a, ha) = new_token().unwrap();
        let (b, _) = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 48);
        assert_eq!(ha, token_hash(&a));
        assert_eq!(ha.len(), 64);
    }
}
