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

/// What is stored for a password ([`strata_meta::NewUser::password_hash`]): its argon2id
/// hash in PHC format, a space, and its SCRAM-SHA-256 verifier in PostgreSQL's format (for
/// the Postgres surface, where the password never travels). Neither form contains a space.
pub fn hash_password(password: &str) -> Result<String> {
    hash_password_keeping(password, None)
}

/// [`hash_password`] for a new password of a user whose stored hash was `previous`: the
/// SCRAM salt stays, so that the user's API tokens (whose SCRAM verifiers are made with it)
/// keep logging in by SCRAM.
pub fn hash_password_keeping(password: &str, previous: Option<&str>) -> Result<String> {
    let argon = Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h: PasswordHash| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))?;
    let salt = previous.and_then(scram_verifier).map(|v| v.salt);
    let scram = crate::scram::Verifier::new(password, salt.as_deref())
        .ok_or_else(|| Error::Internal("no randomness for a SCRAM salt".into()))?;
    Ok(format!("{argon} {scram}"))
}

/// Whether `password` matches the stored `hash` (see [`hash_password`]; a bare argon2 PHC
/// string, as stored before SCRAM verifiers, works too). Constant-time in the password.
pub fn verify_password(hash: &str, password: &str) -> bool {
    let argon = hash.split(' ').next().unwrap_or_default();
    PasswordHash::new(argon).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// The SCRAM-SHA-256 verifier in a stored password hash, if it has one.
pub fn scram_verifier(hash: &str) -> Option<crate::scram::Verifier> {
    hash.split(' ')
        .nth(1)
        .and_then(crate::scram::Verifier::parse)
}

/// A new API token: `(secret, hash)`. Show the secret once; store only the hash.
pub fn new_token() -> Result<(String, String)> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = token_hash(&secret);
    Ok((secret, hash))
}

/// The SCRAM-SHA-256 verifier of a token `secret` for [`strata_meta::NewToken::scram_verifier`],
/// made with the SCRAM salt of its user's stored password hash; `None` when the user has no
/// SCRAM verifier (the token then logs in to the Postgres surface by password message).
pub fn token_scram_verifier(secret: &str, user_password_hash: Option<&str>) -> Option<String> {
    let user = user_password_hash.and_then(scram_verifier)?;
    crate::scram::Verifier::new(secret, Some(&user.salt)).map(|v| v.to_string())
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

    /// How the Postgres surface should ask `user` to prove who they are: by SCRAM-SHA-256
    /// when the user has a SCRAM verifier, with the verifiers of their valid tokens beside
    /// their password's; `None` to ask for the password itself (a user stored before SCRAM
    /// verifiers, or one without a password). Unknown and disabled users get a SCRAM
    /// exchange with a salt derived from their name that no proof passes, so the answer does
    /// not tell who exists.
    pub async fn scram_plan(&self, user: &str) -> Result<Option<ScramPlan>> {
        let record = self.meta.user(user).await?;
        let Some(record) = record.filter(|u| !u.disabled) else {
            return Ok(Some(ScramPlan {
                salt: decoy_salt(user),
                iterations: crate::scram::ITERATIONS,
                candidates: Vec::new(),
            }));
        };
        let Some(own) = record.password_hash.as_deref().and_then(scram_verifier) else {
            return Ok(None);
        };
        let mut candidates = vec![(own.clone(), Credential::Password)];
        for (id, text) in self.meta.token_scram_verifiers(user, Utc::now()).await? {
            if let Some(v) = crate::scram::Verifier::parse(&text)
                .filter(|v| v.salt == own.salt && v.iterations == own.iterations)
            {
                candidates.push((v, Credential::Token(id)));
            }
        }
        Ok(Some(ScramPlan {
            salt: own.salt.clone(),
            iterations: own.iterations,
            candidates,
        }))
    }

    /// Completes a SCRAM login of `user` who proved `credential`: the principal, and the
    /// token's last use recorded.
    pub async fn scram_login(
        &self,
        user: &str,
        credential: Credential,
    ) -> Result<(Principal, Credential)> {
        let principal = self
            .principal(user)
            .await?
            .ok_or_else(|| Error::AuthFailed(user.to_string()))?;
        if let Credential::Token(id) = &credential {
            let _ = self.meta.touch_token(id).await;
        }
        Ok((principal, credential))
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

/// The salt and verifiers a SCRAM exchange with one user checks against.
#[derive(Debug, Clone)]
pub struct ScramPlan {
    /// The salt of the user's verifiers (all candidates share it).
    pub salt: Vec<u8>,
    /// Their PBKDF2 iterations.
    pub iterations: u32,
    /// The password's verifier and the valid tokens', with what each proves.
    pub candidates: Vec<(crate::scram::Verifier, Credential)>,
}

/// A salt for a user who does not exist: stable per name within a process, unguessable.
fn decoy_salt(user: &str) -> Vec<u8> {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        let _ = getrandom::fill(&mut k);
        k
    });
    let mut h = Sha256::new();
    h.update(key);
    h.update(user.as_bytes());
    h.finalize()[..16].to_vec()
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
        // Hashes stored before SCRAM verifiers (the PHC string alone) still verify.
        let bare = h.split(' ').next().unwrap();
        assert!(verify_password(bare, "s3cret!"));
        assert!(scram_verifier(bare).is_none());
    }

    #[test]
    fn stored_hashes_carry_a_scram_verifier_whose_salt_survives_a_password_change() {
        let first = hash_password("one").unwrap();
        let v1 = scram_verifier(&first).expect("a SCRAM verifier beside the argon2 hash");
        assert!(
            first
                .split(' ')
                .nth(1)
                .unwrap()
                .starts_with("SCRAM-SHA-256$4096:")
        );
        let second = hash_password_keeping("two", Some(&first)).unwrap();
        let v2 = scram_verifier(&second).unwrap();
        assert_eq!(v1.salt, v2.salt);
        assert_ne!(v1, v2);
        assert!(verify_password(&second, "two") && !verify_password(&second, "one"));
        // A fresh hash gets a fresh salt.
        assert_ne!(
            scram_verifier(&hash_password("one").unwrap()).unwrap().salt,
            v1.salt
        );
        // Token verifiers use the user's salt; no user verifier, no token verifier.
        let tv = token_scram_verifier("strata_x", Some(&second)).unwrap();
        assert_eq!(crate::scram::Verifier::parse(&tv).unwrap().salt, v1.salt);
        assert_eq!(
            token_scram_verifier("strata_x", Some(first.split(' ').next().unwrap())),
            None
        );
        assert_eq!(token_scram_verifier("strata_x", None), None);
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
