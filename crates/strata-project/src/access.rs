//! `access.yml`: roles, grants, row policies and column masks as code.
//!
//! ```yaml
//! roles:
//!   analysts:
//!     members: [alice, bob]
//! users:                       # optional: attributes of users created with `strata users add`
//!   alice:
//!     attributes: {region: EU}
//! grants:
//!   - privilege: select        # or a list: [select, insert]
//!     on: analytics            # a namespace, or namespace.table
//!     to: analysts             # or a list
//!     columns: [id, region]    # optional, tables only
//! row_policies:
//!   - table: analytics.fct_orders
//!     name: own_region
//!     using: sales_region = current_user_attribute('region')
//!     to: analysts             # default: everyone (`*`)
//! masks:
//!   - column: analytics.dim_customers.email
//!     mask: email              # full, null, hash, email, partial(a,b), expr:<sql>
//!     exempt: [support]
//! ```
//!
//! Each top-level key the file has is managed by it: `strata access apply` makes the
//! metadata store hold exactly those roles, grants, policies and masks. A key the file does
//! not have is left alone. Users are never created with passwords or dropped from here;
//! listed users get the attributes and disabled flag the file gives them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The file name, at the project root.
pub const ACCESS_FILE: &str = "access.yml";

/// One value or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `to: analysts`
    One(String),
    /// `to: [analysts, support]`
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values.
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A role and its direct members (users or roles).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleDecl {
    /// Direct members.
    #[serde(default)]
    pub members: Vec<String>,
    /// What the role is for (documentation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What the file says about a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserDecl {
    /// Attributes row policies read with `current_user_attribute('…')`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// A disabled user cannot log in.
    #[serde(default)]
    pub disabled: bool,
}

/// Privileges on a namespace or table for grantees.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantDecl {
    /// `select`, `insert`, `update`, `delete`, `create`, `usage` or `all`.
    #[serde(alias = "privileges")]
    pub privilege: OneOrMany,
    /// `namespace` or `namespace.table`.
    pub on: String,
    /// Users or roles.
    pub to: OneOrMany,
    /// Only these columns (tables only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

/// A row filter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDecl {
    /// `namespace.table`.
    pub table: String,
    /// Unique per table.
    pub name: String,
    /// A SQL condition over the table's columns.
    pub using: String,
    /// The user or role it applies to; everyone when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// A column mask.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaskDecl {
    /// `namespace.table.column`.
    pub column: String,
    /// The mask spec.
    pub mask: String,
    /// Users or roles who see clear values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt: Vec<String>,
}

/// `access.yml` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessFile {
    /// Where it was read from.
    #[serde(skip)]
    pub path: PathBuf,
    /// Roles (managed when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<BTreeMap<String, RoleDecl>>,
    /// Users' attributes (only the users listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<BTreeMap<String, UserDecl>>,
    /// Grants (managed when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<GrantDecl>>,
    /// Row policies (managed when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_policies: Option<Vec<PolicyDecl>>,
    /// Column masks (managed when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masks: Option<Vec<MaskDecl>>,
}

/// Reads `access.yml` at the project root; `None` when there is none.
pub fn load_access(root: &Path) -> Result<Option<AccessFile>> {
    let path = root.join(ACCESS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Read { path, source }),
    };
    parse_access(&path, &text).map(Some)
}

/// Parses the text of an access file read from `path`.
pub fn parse_access(path: &Path, text: &str) -> Result<AccessFile> {
    if text.trim().is_empty() {
        return Ok(AccessFile {
            path: path.to_path_buf(),
            ..AccessFile::default()
        });
    }
    let mut file: AccessFile =
        serde_saphyr::from_str(text).map_err(|e| crate::config::syntax_error(path, e))?;
    file.path = path.to_path_buf();
    Ok(file)
}

/// The file's text for `file` (what `strata access export` writes).
pub fn render_access(file: &AccessFile) -> Result<String> {
    serde_saphyr::to_string(file).map_err(|e| Error::Invalid {
        path: PathBuf::from(ACCESS_FILE),
        line: 0,
        column: 0,
        message: format!("cannot write YAML: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_reads() {
        let f = parse_access(
            Path::new("access.yml"),
            r#"
roles:
  analysts:
    members: [alice]
users:
  alice:
    attributes: {region: EU}
grants:
  - privilege: [select, insert]
    on: marts.orders
    to: analysts
    columns: [id, amount]
row_policies:
  - table: marts.orders
    name: own_region
    using: region = current_user_attribute('region')
    to: analysts
masks:
  - column: marts.orders.email
    mask: email
    exempt: [support]
"#,
        )
        .unwrap();
        assert_eq!(f.roles.unwrap()["analysts"].members, vec!["alice"]);
        let g = &f.grants.unwrap()[0];
        assert_eq!(g.privilege.values(), vec!["select", "insert"]);
        assert_eq!(g.to.values(), vec!["analysts"]);
        assert_eq!(f.users.unwrap()["alice"].attributes["region"], "EU");
        assert_eq!(f.masks.unwrap()[0].exempt, vec!["support"]);
        assert!(f.row_policies.is_some());
    }

    #[test]
    fn mistakes_name_the_line() {
        let e = parse_access(
            Path::new("access.yml"),
            "grants:\n  - privilege: select\n    on: marts\n    too: analysts\n",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("access.yml:"), "{msg}");
        assert!(msg.contains("too"), "{msg}");
    }
}
