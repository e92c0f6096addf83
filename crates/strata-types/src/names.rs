use std::fmt;
use std::str::FromStr;

/// A table inside the lake: `namespace.name`.
///
/// Both parts are lower-case identifiers (`[a-z_][a-z0-9_]*`, at most 63 characters) so
/// that they map one to one onto folder names on any object store and onto SQL identifiers
/// without quoting.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TableName {
    /// The namespace (a folder in the lake, a schema in SQL).
    pub namespace: String,
    /// The table's name inside its namespace.
    pub name: String,
}

/// A name that cannot be used for a namespace or a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The identifier is empty, too long or uses characters outside `[a-z0-9_]`.
    #[error(
        "`{0}` is not a valid name: use lower-case letters, digits and `_`, starting with a letter or `_` (at most 63 characters)"
    )]
    Invalid(String),
    /// A table name without a namespace where one is required.
    #[error("`{0}` needs a namespace: write it as `namespace.table`, for example `raw.{0}`")]
    MissingNamespace(String),
}

/// Checks one identifier (namespace or table name).
pub fn validate_identifier(s: &str) -> Result<(), NameError> {
    let mut chars = s.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_lowercase() || c == '_' => {
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }
        _ => false,
    };
    if ok && s.len() <= 63 {
        Ok(())
    } else {
        Err(NameError::Invalid(s.to_string()))
    }
}

impl TableName {
    /// Builds a validated name.
    pub fn new(namespace: &str, name: &str) -> Result<Self, NameError> {
        validate_identifier(namespace)?;
        validate_identifier(name)?;
        Ok(Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// Parses `ns.table`, or `table` with `default_namespace`.
    pub fn parse_with_default(s: &str, default_namespace: &str) -> Result<Self, NameError> {
        match s.split_once('.') {
            Some((ns, t)) => Self::new(ns, t),
            None => Self::new(default_namespace, s),
        }
    }
}

impl FromStr for TableName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('.') {
            Some((ns, t)) => Self::new(ns, t),
            None => Err(NameError::MissingNamespace(s.to_string())),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qualified_names() {
        let t: TableName = "raw.orders".parse().unwrap();
        assert_eq!(t.to_string(), "raw.orders");
        assert_eq!(
            "orders".parse::<TableName>().unwrap_err(),
            NameError::MissingNamespace("orders".into())
        );
        assert_eq!(
            TableName::parse_with_default("orders", "public")
                .unwrap()
                .to_string(),
            "public.orders"
        );
    }

    #[test]
    fn rejects_names_that_are_not_folders() {
        for bad in ["", "Raw", "1x", "a-b", "a/b", "..", "a.b.c"] {
            assert!(TableName::parse_with_default(bad, "x").is_err(), "{bad}");
        }
        assert!(validate_identifier(&"a".repeat(64)).is_err());
        assert!(validate_identifier("_tmp9").is_ok());
    }
}
