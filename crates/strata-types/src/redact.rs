use std::sync::{Arc, RwLock};

/// Replaces secret values with `***` in any text before it is shown or logged.
///
/// Secrets enter Strata through `${env:VAR}` references in project files; every value
/// resolved that way is registered here, and every message that leaves the process (errors,
/// logs, run records) passes through [`Redactor::redact`].
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    /// A redactor with no secrets yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret value. Values shorter than 4 characters are ignored: replacing
    /// them everywhere would garble messages without protecting anything.
    pub fn add(&self, secret: impl Into<String>) {
        let secret = secret.into();
        if secret.len() < 4 {
            return;
        }
        let mut guard = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        if !guard.contains(&secret) {
            guard.push(secret);
            // Longest first so that a secret containing another is replaced whole.
            guard.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Returns `text` with every registered secret and every URL password replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_url_password(text);
        let guard = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        for s in guard.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// Replaces the password part of every `scheme://user:password@host` in `text` with `***`.
pub fn redact_url_password(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'' || c == '`')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_passwords() {
        assert_eq!(
            redact_url_password("cannot connect to postgres://bob:s3cret@db:5432/x (refused)"),
            "cannot connect to postgres://bob:***@db:5432/x (refused)"
        );
        assert_eq!(
            redact_url_password("s3://bucket/path and file:///tmp/x"),
            "s3://bucket/path and file:///tmp/x"
        );
        assert_eq!(
            redact_url_password("http://host:8080/x"),
            "http://host:8080/x"
        );
    }

    #[test]
    fn redacts_registered_secrets() {
        let r = Redactor::new();
        r.add("hunter22");
        r.add("ab");
        assert_eq!(r.redact("token hunter22 ab"), "token *** ab");
        let clone = r.clone();
        clone.add("other-secret");
        assert_eq!(r.redact("other-secret"), "***");
    }
}
