//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it: verifiers in PostgreSQL's
//! text format, and the server side of the exchange.
//!
//! The server keeps only `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`: neither is the password, and a stolen
//! verifier does not let anyone log in (the client has to prove it knows `ClientKey`).
//! Channel binding (`SCRAM-SHA-256-PLUS`) is not offered; over TLS the server asks for the
//! password itself instead (see `pg.rs`).

use std::fmt;
use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The mechanism name in `AuthenticationSASL`.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// PBKDF2 iterations of new verifiers: PostgreSQL's default.
pub const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// What the server stores for one secret: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
/// (base64), the format of PostgreSQL's `pg_authid.rolpassword`.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier of `secret` with `salt`, or a new random salt.
    pub fn new(secret: &str, salt: Option<&[u8]>) -> Option<Verifier> {
        let salt = match salt {
            Some(s) => s.to_vec(),
            None => {
                let mut s = vec![0u8; SALT_LEN];
                getrandom::fill(&mut s).ok()?;
                s
            }
        };
        let salted = salted_password(secret, &salt, ITERATIONS);
        let client_key = hmac_sha256(&salted, b"Client Key");
        Some(Verifier {
            iterations: ITERATIONS,
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
            salt,
        })
    }

    /// Reads PostgreSQL's text format; `None` if `text` is not a SCRAM-SHA-256 verifier.
    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok().filter(|i| *i > 0)?;
        Some(Verifier {
            iterations,
            salt: STANDARD.decode(salt).ok().filter(|s| !s.is_empty())?,
            stored_key: STANDARD.decode(stored).ok()?.try_into().ok()?,
            server_key: STANDARD.decode(server).ok()?.try_into().ok()?,
        })
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// Why an exchange failed. Clients only ever learn "authentication failed".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// A message that does not follow RFC 5802.
    Malformed(&'static str),
    /// The client asked for channel binding, which is not offered.
    ChannelBinding,
    /// The proof matches no secret of the user.
    WrongProof,
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramError::Malformed(what) => write!(f, "malformed SCRAM message: {what}"),
            ScramError::ChannelBinding => f.write_str(
                "channel binding is not supported; connect with channel_binding=disable or prefer",
            ),
            ScramError::WrongProof => f.write_str("wrong password"),
        }
    }
}

/// The server's state after the client's first message.
#[derive(Debug, Clone)]
pub struct Exchange {
    client_first_bare: String,
    server_first: String,
    gs2_header: String,
    nonce: String,
}

impl Exchange {
    /// Reads the client-first-message and answers with the server-first-message
    /// ([`Exchange::server_first`]), for a user whose verifiers use `salt` and `iterations`.
    pub fn start(
        client_first: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Exchange, ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("unknown channel-binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(ScramError::Malformed("bad authzid"));
        }
        let gs2_header = format!("{flag},{authzid},");
        let mut attrs = bare.split(',');
        // PostgreSQL clients leave the user name empty (it travels in the startup message).
        let user = attrs.next().unwrap_or_default();
        if user.starts_with("m=") {
            return Err(ScramError::Malformed("mandatory extension not supported"));
        }
        if !user.starts_with("n=") {
            return Err(ScramError::Malformed("no user name attribute"));
        }
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("no client nonce"))?;
        let mut server_nonce = [0u8; 18];
        getrandom::fill(&mut server_nonce).map_err(|_| ScramError::Malformed("no randomness"))?;
        let nonce = format!("{client_nonce}{}", STANDARD.encode(server_nonce));
        let server_first = format!("r={nonce},s={},i={iterations}", STANDARD.encode(salt));
        Ok(Exchange {
            client_first_bare: bare.to_string(),
            server_first,
            gs2_header,
            nonce,
        })
    }

    /// The server-first-message to send.
    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks the client-final-message against `candidates` (verifiers sharing the salt and
    /// iterations given to [`Exchange::start`]). Returns which one the client proved it
    /// knows, and the server-final-message that proves the server knew it too.
    pub fn finish(
        &self,
        client_final: &[u8],
        candidates: &[&Verifier],
    ) -> Result<(usize, String), ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding attribute"))?;
        if STANDARD.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed(
                "channel binding does not match the GS2 header",
            ));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof: [u8; KEY_LEN] = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("proof is not 32 bytes of base64"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        // Every candidate is checked, so timing does not tell which one matched.
        let mut matched = None;
        for (i, v) in candidates.iter().enumerate() {
            let signature = hmac_sha256(&v.stored_key, auth_message.as_bytes());
            let mut client_key = [0u8; KEY_LEN];
            for (k, (p, s)) in client_key
                .iter_mut()
                .zip(proof.iter().zip(signature.iter()))
            {
                *k = p ^ s;
            }
            let ok =
                constant_time::verify_slices_are_equal(&sha256(&client_key), &v.stored_key).is_ok();
            if ok && matched.is_none() {
                matched = Some(i);
            }
        }
        let i = matched.ok_or(ScramError::WrongProof)?;
        let server_signature = hmac_sha256(&candidates[i].server_key, auth_message.as_bytes());
        Ok((i, format!("v={}", STANDARD.encode(server_signature))))
    }
}

/// `Hi(SASLprep(secret), salt, iterations)`; a secret SASLprep refuses is used as it is,
/// as PostgreSQL does.
fn salted_password(secret: &str, salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    let normalized = stringprep::saslprep(secret).unwrap_or(std::borrow::Cow::Borrowed(secret));
    let mut out = [0u8; KEY_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
        salt,
        normalized.as_bytes(),
        &mut out,
    );
    out
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; KEY_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(hmac::sign(&key, message).as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side, as libpq computes it, to drive the server in tests.
    fn client_final(password: &str, exchange: &Exchange, client_first_bare: &str) -> String {
        let server_first = exchange.server_first();
        let mut salt = None;
        let mut iterations = 0;
        let mut nonce = "";
        for attr in server_first.split(',') {
            match attr.split_at(2) {
                ("r=", v) => nonce = v,
                ("s=", v) => salt = Some(STANDARD.decode(v).unwrap()),
                ("i=", v) => iterations = v.parse().unwrap(),
                _ => {}
            }
        }
        let salted = salted_password(password, &salt.unwrap(), iterations);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        format!("{without_proof},p={}", client_proof(&salted, &auth))
    }

    /// `ClientKey XOR HMAC(StoredKey, AuthMessage)`, base64.
    fn client_proof(salted: &[u8], auth_message: &str) -> String {
        let client_key = hmac_sha256(salted, b"Client Key");
        let signature = hmac_sha256(&sha256(&client_key), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(a, b)| a ^ b)
            .collect();
        STANDARD.encode(proof)
    }

    #[test]
    fn verifiers_round_trip_through_postgres_text_format() {
        let v = Verifier::new("pencil", Some(b"saltsaltsaltsalt")).unwrap();
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$"));
        assert_eq!(Verifier::parse(&text), Some(v));
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$0:c2FsdA==$AA==:AA==",
            "SCRAM-SHA-256$4096:$a:b",
        ] {
            assert_eq!(Verifier::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc7677_test_vector() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password("pencil", &salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        assert_eq!(
            client_proof(&salted, &auth),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_key = hmac_sha256(&salted, b"Server Key");
        assert_eq!(
            STANDARD.encode(hmac_sha256(&server_key, auth.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn exchange_accepts_the_right_secret_and_names_it() {
        let salt = b"0123456789abcdef";
        let password = Verifier::new("correct horse", Some(salt)).unwrap();
        let token = Verifier::new("strata_abc", Some(salt)).unwrap();
        let first = "n,,n=,r=fyko+d2lbbFgONRv9qkxdawL";
        for (secret, expect) in [("correct horse", 0), ("strata_abc", 1)] {
            let ex = Exchange::start(first.as_bytes(), salt, ITERATIONS).unwrap();
            let fin = client_final(secret, &ex, "n=,r=fyko+d2lbbFgONRv9qkxdawL");
            let (which, server_final) = ex.finish(fin.as_bytes(), &[&password, &token]).unwrap();
            assert_eq!(which, expect);
            assert!(server_final.starts_with("v="));
        }
        let ex = Exchange::start(first.as_bytes(), salt, ITERATIONS).unwrap();
        let fin = client_final("wrong", &ex, "n=,r=fyko+d2lbbFgONRv9qkxdawL");
        assert_eq!(
            ex.finish(fin.as_bytes(), &[&password, &token]),
            Err(ScramError::WrongProof)
        );
        // A replayed final message fails against a new exchange (new server nonce).
        let ex2 = Exchange::start(first.as_bytes(), salt, ITERATIONS).unwrap();
        let old = client_final("correct horse", &ex, "n=,r=fyko+d2lbbFgONRv9qkxdawL");
        assert!(ex2.finish(old.as_bytes(), &[&password]).is_err());
    }

    #[test]
    fn malformed_messages_are_refused_without_panicking() {
        let salt = b"0123456789abcdef";
        for bad in [
            &b""[..],
            b"n",
            b"x,,n=,r=abc",
            b"p=tls-server-end-point,,n=,r=abc",
            b"n,,r=abc",
            b"n,,n=,r=",
            b"n,,m=ext,n=,r=abc",
            b"n,b,n=,r=abc",
            b"\xff\xfe",
        ] {
            assert!(Exchange::start(bad, salt, ITERATIONS).is_err(), "{bad:?}");
        }
        let ex = Exchange::start(b"n,,n=,r=abc", salt, ITERATIONS).unwrap();
        let v = Verifier::new("x", Some(salt)).unwrap();
        for bad in [
            &b""[..],
            b"c=biws,r=abc,p=AAAA",
            b"c=eSws,r=abc,p=AAAA",
            b"c=biws",
            b",p=",
            b"c=biws,r=wrongnonce,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        ] {
            assert!(ex.finish(bad, &[&v]).is_err(), "{bad:?}");
        }
    }
}
