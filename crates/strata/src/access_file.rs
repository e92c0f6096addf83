//! `strata access plan|apply|export`: `access.yml` against the metadata store.
//!
//! `plan` lists what `apply` would change, `apply` changes it, `export` writes the store's
//! state as an `access.yml` (to start managing an existing setup as code). Each top-level
//! key the file has is managed by it; keys it does not have are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use strata_meta::{ColumnMask, Grant, MetaStore, NewUser, ObjectKind, Privilege, RowPolicy};
use strata_project::access::{
    ACCESS_FILE, AccessFile, GrantDecl, MaskDecl, OneOrMany, PolicyDecl, RoleDecl, UserDecl,
};

/// Who grants made from the file are recorded as granted by.
const GRANTED_BY: &str = "access.yml";

/// Sub-commands of `strata access`.
#[derive(clap::Subcommand, Debug, Clone)]
#[command(after_help = "\
access.yml at the project root declares roles, grants, row policies and masks:

  roles:
    analysts: {members: [alice]}
  grants:
    - {privilege: select, on: analytics, to: analysts}
  row_policies:
    - {table: analytics.fct_orders, name: own_region, to: analysts,
       using: \"sales_region = current_user_attribute('region')\"}
  masks:
    - {column: analytics.dim_customers.email, mask: email}

Each top-level key the file has is managed by it: apply makes the store hold exactly that.
Users are created (without a password) and given attributes, never dropped from here.")]
pub(crate) enum AccessCommand {
    /// Show what `apply` would change, without changing anything.
    Plan,
    /// Make the metadata store match access.yml.
    Apply,
    /// Write the store's roles, grants, policies and masks as access.yml (to stdout, or
    /// --output FILE).
    Export {
        /// Where to write; `-` for standard output.
        #[arg(long, short, default_value = "-")]
        output: String,
    },
}

/// One difference between the file and the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    CreateRole(String),
    DropRole(String),
    AddMember {
        role: String,
        member: String,
    },
    RemoveMember {
        role: String,
        member: String,
    },
    CreateUser(String),
    SetAttributes {
        user: String,
        attributes: BTreeMap<String, String>,
    },
    SetDisabled {
        user: String,
        disabled: bool,
    },
    Grant(Grant),
    Revoke(Grant),
    PutPolicy {
        policy: RowPolicy,
        replaces: bool,
    },
    DropPolicy(RowPolicy),
    PutMask {
        mask: ColumnMask,
        replaces: bool,
    },
    DropMask(ColumnMask),
}

impl Change {
    fn sign(&self) -> char {
        match self {
            Change::CreateRole(_)
            | Change::AddMember { .. }
            | Change::CreateUser(_)
            | Change::Grant(_)
            | Change::PutPolicy {
                replaces: false, ..
            }
            | Change::PutMask {
                replaces: false, ..
            } => '+',
            Change::DropRole(_)
            | Change::RemoveMember { .. }
            | Change::Revoke(_)
            | Change::DropPolicy(_)
            | Change::DropMask(_) => '-',
            Change::SetAttributes { .. }
            | Change::SetDisabled { .. }
            | Change::PutPolicy { replaces: true, .. }
            | Change::PutMask { replaces: true, .. } => '~',
        }
    }
}

fn describe_grant(g: &Grant) -> String {
    let cols = g
        .columns
        .as_ref()
        .map(|c| format!(" ({})", c.join(", ")))
        .unwrap_or_default();
    format!(
        "{} on {} {}{cols} to {}",
        g.privilege, g.object_kind, g.object, g.grantee
    )
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.sign())?;
        match self {
            Change::CreateRole(r) => write!(f, "role {r}"),
            Change::DropRole(r) => write!(f, "role {r}"),
            Change::AddMember { role, member } | Change::RemoveMember { role, member } => {
                write!(f, "member {member} of role {role}")
            }
            Change::CreateUser(u) => write!(
                f,
                "user {u} (no password: set one with `strata users passwd {u}` or create a token)"
            ),
            Change::SetAttributes { user, attributes } => {
                let attrs: Vec<String> =
                    attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(
                    f,
                    "attributes of {user}: {}",
                    if attrs.is_empty() {
                        "none".into()
                    } else {
                        attrs.join(", ")
                    }
                )
            }
            Change::SetDisabled { user, disabled } => {
                write!(
                    f,
                    "user {user} {}",
                    if *disabled { "disabled" } else { "enabled" }
                )
            }
            Change::Grant(g) | Change::Revoke(g) => write!(f, "grant {}", describe_grant(g)),
            Change::PutPolicy { policy: p, .. } | Change::DropPolicy(p) => write!(
                f,
                "row policy {} on {} for {}: {}",
                p.name, p.table, p.applies_to, p.predicate
            ),
            Change::PutMask { mask: m, .. } | Change::DropMask(m) => {
                write!(f, "mask {} on {}.{}", m.mask, m.table, m.column)?;
                if !m.exempt.is_empty() {
                    write!(f, " (exempt: {})", m.exempt.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

/// `ns.table`, lower-cased and validated.
fn table(s: &str) -> Result<String> {
    let name = s.trim().to_lowercase();
    let t: strata_types::TableName = name
        .parse()
        .map_err(|e: strata_types::NameError| anyhow!("{e}"))?;
    Ok(t.to_string())
}

fn object(s: &str) -> Result<(ObjectKind, String)> {
    let name = s.trim().to_lowercase();
    if name.contains('.') {
        Ok((ObjectKind::Table, table(&name)?))
    } else {
        strata_types::validate_identifier(&name).map_err(|e| anyhow!("{e}"))?;
        Ok((ObjectKind::Namespace, name))
    }
}

fn sorted(v: &[String]) -> Vec<String> {
    v.iter()
        .map(|s| s.trim().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The file's declarations, checked and normalized as the store keeps them.
#[derive(Debug, Default)]
struct Desired {
    roles: Option<BTreeMap<String, BTreeSet<String>>>,
    users: Option<BTreeMap<String, UserDecl>>,
    grants: Option<Vec<Grant>>,
    policies: Option<Vec<RowPolicy>>,
    masks: Option<Vec<ColumnMask>>,
}

fn desired(file: &AccessFile) -> Result<Desired> {
    let at = |what: String| format!("{}: {what}", file.path.display());
    let mut d = Desired::default();
    if let Some(roles) = &file.roles {
        let mut out = BTreeMap::new();
        for (name, r) in roles {
            strata_types::validate_identifier(name)
                .map_err(|e| anyhow!("{}", at(format!("role `{name}`: {e}"))))?;
            out.insert(name.clone(), r.members.iter().cloned().collect());
        }
        d.roles = Some(out);
    }
    d.users.clone_from(&file.users);
    if let Some(grants) = &file.grants {
        let mut out = Vec::new();
        for (i, g) in grants.iter().enumerate() {
            let here = |m: String| anyhow!("{}", at(format!("grants[{i}] (on {}): {m}", g.on)));
            let (object_kind, object) = object(&g.on).map_err(|e| here(e.to_string()))?;
            let columns = match &g.columns {
                None => None,
                Some(_) if object_kind == ObjectKind::Namespace => {
                    return Err(here(
                        "columns apply to tables only; write `on:` as namespace.table".into(),
                    ));
                }
                Some(c) => Some(sorted(
                    &c.iter().map(|c| c.to_lowercase()).collect::<Vec<_>>(),
                )),
            };
            for p in g.privilege.values() {
                let privilege: Privilege = p.parse().map_err(|e| here(format!("{e}")))?;
                for grantee in g.to.values() {
                    out.push(Grant {
                        privilege,
                        object_kind,
                        object: object.clone(),
                        columns: columns.clone(),
                        grantee,
                        granted_by: GRANTED_BY.into(),
                    });
                }
            }
        }
        d.grants = Some(out);
    }
    if let Some(policies) = &file.row_policies {
        let mut out: Vec<RowPolicy> = Vec::new();
        for (i, p) in policies.iter().enumerate() {
            let here =
                |m: String| anyhow!("{}", at(format!("row_policies[{i}] ({}): {m}", p.name)));
            let t = table(&p.table).map_err(|e| here(e.to_string()))?;
            check_condition(&p.using).map_err(|e| here(e.to_string()))?;
            if out.iter().any(|o| o.table == t && o.name == p.name) {
                return Err(here(format!("a second policy named `{}` on {t}", p.name)));
            }
            out.push(RowPolicy {
                name: p.name.trim().to_string(),
                table: t,
                predicate: p.using.trim().to_string(),
                applies_to: p.to.clone().unwrap_or_else(|| "*".into()),
            });
        }
        d.policies = Some(out);
    }
    if let Some(masks) = &file.masks {
        let mut out: Vec<ColumnMask> = Vec::new();
        for (i, m) in masks.iter().enumerate() {
            let here = |msg: String| anyhow!("{}", at(format!("masks[{i}] ({}): {msg}", m.column)));
            let name = m.column.trim().to_lowercase();
            let Some((t, column)) = name.rsplit_once('.').filter(|(t, _)| t.contains('.')) else {
                return Err(here("write the column as namespace.table.column".into()));
            };
            let t = table(t).map_err(|e| here(e.to_string()))?;
            m.mask
                .parse::<strata_engine::MaskKind>()
                .map_err(|e| here(e.to_string()))?;
            if out.iter().any(|o| o.table == t && o.column == column) {
                return Err(here("a second mask on the same column".into()));
            }
            out.push(ColumnMask {
                table: t,
                column: column.to_string(),
                mask: m.mask.trim().to_string(),
                exempt: sorted(&m.exempt),
            });
        }
        d.masks = Some(out);
    }
    Ok(d)
}

/// A row policy's condition must be one SQL expression.
fn check_condition(sql: &str) -> Result<()> {
    use strata_engine::datafusion::sql::sqlparser::parser::Parser;
    use strata_engine::datafusion::sql::sqlparser::tokenizer::Token;
    Parser::new(&strata_engine::StrataDialect::default())
        .try_with_sql(sql)
        .and_then(|mut p| {
            p.parse_expr()?;
            p.expect_token(&Token::EOF)
        })
        .map(|_| ())
        .map_err(|e| anyhow!("`using` is not a SQL condition: {e}"))
}

fn same_grant(a: &Grant, b: &Grant) -> bool {
    a.privilege == b.privilege
        && a.object_kind == b.object_kind
        && a.object == b.object
        && a.columns == b.columns
        && a.grantee == b.grantee
}

/// What applying the file would change, in the order it is applied.
pub(crate) async fn plan(meta: &MetaStore, file: &AccessFile) -> Result<Vec<Change>> {
    let d = desired(file)?;
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    let current_roles: BTreeMap<String, BTreeSet<String>> = meta
        .roles()
        .await?
        .into_iter()
        .map(|r| (r.name, r.members.into_iter().collect()))
        .collect();
    let users: BTreeMap<String, strata_meta::User> = meta
        .users()
        .await?
        .into_iter()
        .map(|u| (u.name.clone(), u))
        .collect();
    if let Some(want) = &d.users {
        for (name, u) in want {
            match users.get(name) {
                None => {
                    adds.push(Change::CreateUser(name.clone()));
                    if !u.attributes.is_empty() {
                        adds.push(Change::SetAttributes {
                            user: name.clone(),
                            attributes: u.attributes.clone(),
                        });
                    }
                    if u.disabled {
                        adds.push(Change::SetDisabled {
                            user: name.clone(),
                            disabled: true,
                        });
                    }
                }
                Some(have) => {
                    if have.attributes != u.attributes {
                        adds.push(Change::SetAttributes {
                            user: name.clone(),
                            attributes: u.attributes.clone(),
                        });
                    }
                    if have.disabled != u.disabled {
                        adds.push(Change::SetDisabled {
                            user: name.clone(),
                            disabled: u.disabled,
                        });
                    }
                }
            }
        }
    }
    if let Some(want) = &d.roles {
        for (role, members) in want {
            let have = current_roles.get(role);
            if have.is_none() {
                adds.insert(0, Change::CreateRole(role.clone()));
            }
            let empty = BTreeSet::new();
            let have = have.unwrap_or(&empty);
            for m in members.difference(have) {
                adds.push(Change::AddMember {
                    role: role.clone(),
                    member: m.clone(),
                });
            }
            for m in have.difference(members) {
                removes.push(Change::RemoveMember {
                    role: role.clone(),
                    member: m.clone(),
                });
            }
        }
        for role in current_roles.keys().filter(|r| !want.contains_key(*r)) {
            removes.push(Change::DropRole(role.clone()));
        }
    }
    if let Some(want) = &d.grants {
        let have: Vec<Grant> = meta
            .grants(None)
            .await?
            .into_iter()
            .map(|g| g.grant)
            .collect();
        for g in want {
            if !have.iter().any(|h| same_grant(h, g))
                && !adds
                    .iter()
                    .any(|c| matches!(c, Change::Grant(x) if same_grant(x, g)))
            {
                adds.push(Change::Grant(g.clone()));
            }
        }
        for h in &have {
            if !want.iter().any(|g| same_grant(h, g)) {
                removes.insert(0, Change::Revoke(h.clone()));
            }
        }
    }
    if let Some(want) = &d.policies {
        let have = meta.row_policies().await?;
        for p in want {
            match have.iter().find(|h| h.table == p.table && h.name == p.name) {
                Some(h) if h == p => {}
                found => adds.push(Change::PutPolicy {
                    policy: p.clone(),
                    replaces: found.is_some(),
                }),
            }
        }
        for h in &have {
            if !want.iter().any(|p| p.table == h.table && p.name == h.name) {
                removes.insert(0, Change::DropPolicy(h.clone()));
            }
        }
    }
    if let Some(want) = &d.masks {
        let have = meta.column_masks().await?;
        for m in want {
            match have
                .iter()
                .find(|h| h.table == m.table && h.column == m.column)
            {
                Some(h) if h == m => {}
                found => adds.push(Change::PutMask {
                    mask: m.clone(),
                    replaces: found.is_some(),
                }),
            }
        }
        for h in &have {
            if !want
                .iter()
                .any(|m| m.table == h.table && m.column == h.column)
            {
                removes.insert(0, Change::DropMask(h.clone()));
            }
        }
    }
    // Additions first (roles before members and grants), then removals (grants, policies and
    // masks before the roles they name).
    adds.extend(removes);
    Ok(adds)
}

async fn apply_change(meta: &MetaStore, c: &Change) -> Result<()> {
    match c {
        Change::CreateRole(r) => meta.create_role(r).await?,
        Change::DropRole(r) => {
            meta.drop_role(r).await?;
        }
        Change::AddMember { role, member } => {
            meta.grant_role(role, member).await.with_context(|| {
                format!("`{member}` is neither a user nor a role; add it with `strata users add {member}` or under roles:")
            })?;
        }
        Change::RemoveMember { role, member } => {
            meta.revoke_role(role, member).await?;
        }
        Change::CreateUser(u) => {
            meta.create_user(&NewUser {
                name: u.clone(),
                ..NewUser::default()
            })
            .await?;
        }
        Change::SetAttributes { user, attributes } => {
            meta.set_user_attributes(user, attributes.clone()).await?;
        }
        Change::SetDisabled { user, disabled } => meta.set_user_disabled(user, *disabled).await?,
        Change::Grant(g) => {
            meta.grant(g)
                .await
                .with_context(|| format!("grant {}", describe_grant(g)))?;
        }
        Change::Revoke(g) => {
            meta.revoke(g).await?;
        }
        Change::PutPolicy { policy, .. } => {
            meta.put_row_policy(policy).await?;
        }
        Change::DropPolicy(p) => {
            meta.drop_row_policy(&p.table, &p.name).await?;
        }
        Change::PutMask { mask, .. } => {
            meta.put_column_mask(mask).await?;
        }
        Change::DropMask(m) => {
            meta.drop_column_mask(&m.table, &m.column).await?;
        }
    }
    Ok(())
}

/// The store's state as an access file.
async fn export(meta: &MetaStore) -> Result<AccessFile> {
    let roles = meta
        .roles()
        .await?
        .into_iter()
        .map(|r| {
            (
                r.name,
                RoleDecl {
                    members: r.members,
                    description: None,
                },
            )
        })
        .collect();
    let users = meta
        .users()
        .await?
        .into_iter()
        .filter(|u| !u.attributes.is_empty() || u.disabled)
        .map(|u| {
            (
                u.name,
                UserDecl {
                    attributes: u.attributes,
                    disabled: u.disabled,
                },
            )
        })
        .collect::<BTreeMap<_, _>>();
    let grants = meta
        .grants(None)
        .await?
        .into_iter()
        .map(|g| {
            let g = g.grant;
            GrantDecl {
                privilege: OneOrMany::One(g.privilege.as_str().to_lowercase()),
                on: g.object,
                to: OneOrMany::One(g.grantee),
                columns: g.columns,
            }
        })
        .collect();
    let row_policies = meta
        .row_policies()
        .await?
        .into_iter()
        .map(|p| PolicyDecl {
            table: p.table,
            name: p.name,
            using: p.predicate,
            to: (p.applies_to != "*").then_some(p.applies_to),
        })
        .collect();
    let masks = meta
        .column_masks()
        .await?
        .into_iter()
        .map(|m| MaskDecl {
            column: format!("{}.{}", m.table, m.column),
            mask: m.mask,
            exempt: m.exempt,
        })
        .collect();
    Ok(AccessFile {
        roles: Some(roles),
        users: (!users.is_empty()).then_some(users),
        grants: Some(grants),
        row_policies: Some(row_policies),
        masks: Some(masks),
        ..AccessFile::default()
    })
}

/// Runs `strata access …` for the project at `root`.
pub(crate) async fn run(
    meta: &MetaStore,
    root: &Path,
    cmd: AccessCommand,
    json: bool,
) -> Result<()> {
    let load = || -> Result<AccessFile> {
        strata_project::access::load_access(root)?.ok_or_else(|| {
            anyhow!(
                "no {ACCESS_FILE} in {}; write one (see `strata access --help`) or start from the current state with `strata access export -o {ACCESS_FILE}`",
                root.display()
            )
        })
    };
    match cmd {
        AccessCommand::Plan | AccessCommand::Apply => {
            let file = load()?;
            let changes = plan(meta, &file).await?;
            let apply = matches!(cmd, AccessCommand::Apply);
            if apply {
                for (i, c) in changes.iter().enumerate() {
                    apply_change(meta, c).await.with_context(|| {
                        format!(
                            "applying `{c}` ({} of {} changes applied before it)",
                            i,
                            changes.len()
                        )
                    })?;
                }
            }
            if json {
                let list: Vec<serde_json::Value> = changes
                    .iter()
                    .map(|c| json!({"change": c.sign().to_string(), "what": c.to_string()[2..].to_string()}))
                    .collect();
                println!("{}", json!({"applied": apply, "changes": list}));
                return Ok(());
            }
            if changes.is_empty() {
                println!(
                    "The metadata store matches {}; nothing to change.",
                    file.path.display()
                );
                return Ok(());
            }
            for c in &changes {
                println!("  {c}");
            }
            let count = |s: char| changes.iter().filter(|c| c.sign() == s).count();
            println!(
                "{} {} to add, {} to change, {} to remove{}",
                if apply { "Applied:" } else { "Plan:" },
                count('+'),
                count('~'),
                count('-'),
                if apply {
                    "."
                } else {
                    ". Run `strata access apply` to make these changes."
                }
            );
            Ok(())
        }
        AccessCommand::Export { output } => {
            let file = export(meta).await?;
            let text = strata_project::access::render_access(&file)?;
            if output == "-" {
                print!("{text}");
            } else {
                if Path::new(&output).exists() {
                    bail!("{output} exists; remove it first or write elsewhere");
                }
                std::fs::write(&output, text).with_context(|| format!("writing {output}"))?;
                eprintln!("wrote {output}");
            }
            Ok(())
        }
    }
}
