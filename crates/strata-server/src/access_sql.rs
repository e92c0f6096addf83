//! Access control in SQL, for superusers on any SQL surface: `CREATE ROLE`, `CREATE ROLE
//! … LOGIN PASSWORD '…'` (a user), `DROP ROLE`, `GRANT`/`REVOKE` privileges on tables,
//! schemas and `ALL TABLES IN SCHEMA`, role membership with `GRANT role TO member` /
//! `REVOKE role FROM member` (also spelled `GRANT ROLE role TO member`), `CREATE ROLE … IN
//! ROLE` and `… ROLE member`, `CREATE USER` (rewritten to `CREATE ROLE … LOGIN` by
//! [`crate::client_sql`]), and row filters with PostgreSQL's `CREATE POLICY … USING (…)` / `DROP
//! POLICY`. The statements change the metadata store, exactly as the `strata users|roles|
//! grants|policies` commands do.

use strata_engine::Principal;
use strata_engine::datafusion::sql::sqlparser::ast::{
    Action, CreatePolicy, CreatePolicyCommand, CreatePolicyType, CreateRole, Expr, GrantObjects,
    Grantee, GranteeName, ObjectName, ObjectType, Owner, Password, Privileges, Statement, Value,
};
use strata_meta::{Grant, MetaStore, NewUser, ObjectKind, Privilege, RowPolicy};

/// An access-control statement, read from SQL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AccessStatement {
    /// `CREATE ROLE r [IN ROLE a] [ROLE m]`.
    CreateRole {
        name: String,
        if_not_exists: bool,
        member_of: Vec<String>,
        members: Vec<String>,
    },
    /// `CREATE ROLE u LOGIN [SUPERUSER] [PASSWORD '…'] [IN ROLE a]`.
    CreateUser {
        name: String,
        password: Option<String>,
        superuser: bool,
        if_not_exists: bool,
        member_of: Vec<String>,
    },
    /// `DROP ROLE [IF EXISTS] a, b` (users or roles).
    Drop { names: Vec<String>, if_exists: bool },
    /// `GRANT …`.
    Grant(Vec<Grant>),
    /// `REVOKE …`.
    Revoke(Vec<Grant>),
    /// `GRANT ROLE r TO m` (PostgreSQL's `GRANT r TO m`): `members` join each of `roles`.
    GrantRoles {
        roles: Vec<String>,
        members: Vec<String>,
    },
    /// `REVOKE ROLE r FROM m` (PostgreSQL's `REVOKE r FROM m`).
    RevokeRoles {
        roles: Vec<String>,
        members: Vec<String>,
    },
    /// `CREATE POLICY p ON t [FOR SELECT] [TO r] USING (…)`: a row filter.
    CreatePolicy(RowPolicy),
    /// `DROP POLICY [IF EXISTS] p ON t`.
    DropPolicy {
        table: String,
        name: String,
        if_exists: bool,
    },
}

/// Reads `stmt` as an access-control statement: `None` if it is not one, an error message
/// if it is one Strata does not support.
pub(crate) fn classify(
    stmt: &Statement,
    granted_by: &str,
) -> Option<Result<AccessStatement, String>> {
    match stmt {
        Statement::CreateRole(c) => Some(create_role(c)),
        Statement::Drop {
            object_type: ObjectType::Role | ObjectType::User,
            if_exists,
            names,
            ..
        } => Some(
            names
                .iter()
                .map(ident)
                .collect::<Result<_, _>>()
                .map(|names| AccessStatement::Drop {
                    names,
                    if_exists: *if_exists,
                }),
        ),
        Statement::Grant(g) => Some(match role_membership(&g.privileges, g.objects.as_ref()) {
            Some(roles) => grantee_names(&g.grantees)
                .map(|members| AccessStatement::GrantRoles { roles, members }),
            None => grants(&g.privileges, g.objects.as_ref(), &g.grantees, granted_by)
                .map(AccessStatement::Grant),
        }),
        Statement::Revoke(r) => Some(match role_membership(&r.privileges, r.objects.as_ref()) {
            Some(roles) => grantee_names(&r.grantees)
                .map(|members| AccessStatement::RevokeRoles { roles, members }),
            None => grants(&r.privileges, r.objects.as_ref(), &r.grantees, granted_by)
                .map(AccessStatement::Revoke),
        }),
        Statement::CreatePolicy(p) => Some(create_policy(p)),
        Statement::DropPolicy(p) => {
            Some(
                table(&p.table_name).map(|table| AccessStatement::DropPolicy {
                    table,
                    name: p.name.value.to_lowercase(),
                    if_exists: p.if_exists,
                }),
            )
        }
        _ => None,
    }
}

/// A row filter from PostgreSQL's row-security policy syntax. Strata's filters apply to reads
/// and combine with OR (PostgreSQL's `PERMISSIVE`), for one grantee each.
fn create_policy(p: &CreatePolicy) -> Result<AccessStatement, String> {
    if matches!(p.policy_type, Some(CreatePolicyType::Restrictive)) {
        return Err("AS RESTRICTIVE is not supported: a table's row filters combine with OR (PERMISSIVE); write the restriction into each filter's USING".into());
    }
    match p.command {
        None | Some(CreatePolicyCommand::All | CreatePolicyCommand::Select) => {}
        Some(other) => {
            return Err(format!(
                "FOR {other} is not supported: row filters apply to reads (FOR SELECT); writes are governed by grants"
            ));
        }
    }
    if p.with_check.is_some() {
        return Err("WITH CHECK is not supported: row filters apply to reads; writes are governed by grants".into());
    }
    let Some(using) = &p.using else {
        return Err("a row filter needs USING (condition), e.g. USING (region = 'EU')".into());
    };
    let applies_to = match p.to.as_deref() {
        None => "*".to_string(),
        Some([Owner::Ident(i)]) if i.value.eq_ignore_ascii_case("public") => "*".to_string(),
        Some([Owner::Ident(i)]) => i.value.to_lowercase(),
        Some([other]) => {
            return Err(format!(
                "TO {other} is not supported; name a user or role, or PUBLIC"
            ));
        }
        Some(_) => {
            return Err("give one user or role per policy (TO analyst), or TO PUBLIC; for several, create a policy for each or a role holding them".into());
        }
    };
    Ok(AccessStatement::CreatePolicy(RowPolicy {
        name: p.name.value.to_lowercase(),
        table: table(&p.table_name)?,
        predicate: using.to_string(),
        applies_to,
    }))
}

/// The roles of `GRANT ROLE a, ROLE b TO …` (no `ON`, every action a role); `None` for a
/// grant of privileges.
fn role_membership(privileges: &Privileges, objects: Option<&GrantObjects>) -> Option<Vec<String>> {
    let (Privileges::Actions(actions), None) = (privileges, objects) else {
        return None;
    };
    actions
        .iter()
        .map(|a| match a {
            Action::Role { role } => ident(role).ok(),
            _ => None,
        })
        .collect()
}

fn grantee_names(grantees: &[Grantee]) -> Result<Vec<String>, String> {
    grantees
        .iter()
        .map(|g| match &g.name {
            Some(GranteeName::ObjectName(n)) => ident(n),
            _ => Err(format!("`{g}` is not a user or role")),
        })
        .collect()
}

fn ident(name: &ObjectName) -> Result<String, String> {
    match name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(|i| i.value.to_lowercase())
            .ok_or_else(|| format!("`{name}` is not a role name")),
        _ => Err(format!("`{name}` is not a role name")),
    }
}

fn create_role(c: &CreateRole) -> Result<AccessStatement, String> {
    let [name] = c.names.as_slice() else {
        return Err("create one role at a time".into());
    };
    let name = ident(name)?;
    let member_of: Vec<String> = c.in_role.iter().map(|i| i.value.to_lowercase()).collect();
    if c.login == Some(true) || c.password.is_some() || c.superuser == Some(true) {
        let password = match &c.password {
            Some(Password::Password(Expr::Value(v))) => match &v.value {
                Value::SingleQuotedString(s) => Some(s.clone()),
                other => return Err(format!("the password must be a string, not {other}")),
            },
            Some(Password::NullPassword) | None => None,
            Some(other) => return Err(format!("the password must be a string, not {other:?}")),
        };
        return Ok(AccessStatement::CreateUser {
            name,
            password,
            superuser: c.superuser == Some(true),
            if_not_exists: c.if_not_exists,
            member_of,
        });
    }
    Ok(AccessStatement::CreateRole {
        name,
        if_not_exists: c.if_not_exists,
        member_of,
        members: c.role.iter().map(|i| i.value.to_lowercase()).collect(),
    })
}

fn grants(
    privileges: &Privileges,
    objects: Option<&GrantObjects>,
    grantees: &[Grantee],
    granted_by: &str,
) -> Result<Vec<Grant>, String> {
    let privileges: Vec<(Privilege, Option<Vec<String>>)> = match privileges {
        Privileges::All { .. } => vec![(Privilege::All, None)],
        Privileges::Actions(actions) => actions
            .iter()
            .map(|a| match a {
                Action::Select { columns } => Ok((
                    Privilege::Select,
                    columns
                        .as_ref()
                        .map(|c| c.iter().map(|i| i.value.to_lowercase()).collect()),
                )),
                Action::Insert { columns: None } => Ok((Privilege::Insert, None)),
                Action::Update { columns: None } => Ok((Privilege::Update, None)),
                Action::Delete => Ok((Privilege::Delete, None)),
                Action::Create { .. } => Ok((Privilege::Create, None)),
                Action::Usage => Ok((Privilege::Usage, None)),
                other => Err(format!(
                    "`{other}` cannot be granted; use SELECT [(columns)], INSERT, UPDATE, DELETE, CREATE, USAGE or ALL"
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    let objects: Vec<(ObjectKind, String)> = match objects {
        Some(GrantObjects::Tables(names)) => names
            .iter()
            .map(|n| table(n).map(|t| (ObjectKind::Table, t)))
            .collect::<Result<_, _>>()?,
        Some(GrantObjects::Schemas(names) | GrantObjects::AllTablesInSchema { schemas: names }) => {
            names
                .iter()
                .map(|n| ident(n).map(|ns| (ObjectKind::Namespace, ns)))
                .collect::<Result<_, _>>()?
        }
        Some(other) => {
            return Err(format!(
                "grants on `{other}` are not supported; grant on tables (`ON ns.table`), schemas (`ON SCHEMA ns`) or `ALL TABLES IN SCHEMA ns`"
            ));
        }
        None => {
            return Err(
                "grant privileges ON a table or schema, or a role to a member (`GRANT analyst TO alice`)"
                    .into(),
            );
        }
    };
    let grantees = grantee_names(grantees)?;
    let mut out = Vec::new();
    for grantee in &grantees {
        for (kind, object) in &objects {
            for (privilege, columns) in &privileges {
                if columns.is_some() && *kind == ObjectKind::Namespace {
                    return Err("column grants are on tables, not schemas".into());
                }
                out.push(Grant {
                    privilege: *privilege,
                    object_kind: *kind,
                    object: object.clone(),
                    columns: columns.clone(),
                    grantee: grantee.clone(),
                    granted_by: granted_by.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// `ns.table` from `t`, `ns.t` or `strata.ns.t`.
fn table(name: &ObjectName) -> Result<String, String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(|i| i.value.to_lowercase())
                .ok_or_else(|| format!("`{name}` is not a table name"))
        })
        .collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [t] => Ok(format!("{}.{t}", strata_engine::DEFAULT_NAMESPACE)),
        [ns, t] => Ok(format!("{ns}.{t}")),
        [c, ns, t] if c == strata_engine::CATALOG => Ok(format!("{ns}.{t}")),
        _ => Err(format!("`{name}` is not a table name")),
    }
}

/// Applies `stmt` for `principal` (a superuser). Returns the command tag.
pub(crate) async fn apply(
    meta: &MetaStore,
    principal: &Principal,
    stmt: AccessStatement,
) -> crate::Result<String> {
    if !principal.superuser {
        return Err(crate::Error::Engine(
            strata_engine::Error::PermissionDenied(
                "permission denied: only superusers manage users, roles, grants and policies"
                    .into(),
            ),
        ));
    }
    Ok(match stmt {
        AccessStatement::CreateRole {
            name,
            if_not_exists,
            member_of,
            members,
        } => {
            let exists = meta.roles().await?.iter().any(|r| r.name == name);
            if !(exists && if_not_exists) {
                meta.create_role(&name).await?;
            }
            for role in member_of {
                meta.grant_role(&role, &name).await?;
            }
            for member in members {
                meta.grant_role(&name, &member).await?;
            }
            "CREATE ROLE".into()
        }
        AccessStatement::CreateUser {
            name,
            password,
            superuser,
            if_not_exists,
            member_of,
        } => {
            if !(if_not_exists && meta.user(&name).await?.is_some()) {
                let password_hash = match password {
                    Some(p) => Some(
                        tokio::task::spawn_blocking(move || crate::auth::hash_password(&p))
                            .await
                            .map_err(|e| crate::Error::Internal(e.to_string()))??,
                    ),
                    None => None,
                };
                meta.create_user(&NewUser {
                    name: name.clone(),
                    password_hash,
                    attributes: Default::default(),
                    superuser,
                })
                .await?;
            }
            for role in member_of {
                meta.grant_role(&role, &name).await?;
            }
            "CREATE ROLE".into()
        }
        AccessStatement::Drop { names, if_exists } => {
            for name in names {
                let dropped = meta.drop_user(&name).await? || meta.drop_role(&name).await?;
                if !dropped && !if_exists {
                    return Err(crate::Error::Engine(strata_engine::Error::Invalid(
                        format!("role \"{name}\" does not exist"),
                    )));
                }
            }
            "DROP ROLE".into()
        }
        AccessStatement::Grant(grants) => {
            for g in &grants {
                meta.grant(g).await?;
            }
            "GRANT".into()
        }
        AccessStatement::Revoke(grants) => {
            for g in &grants {
                meta.revoke(g).await?;
            }
            "REVOKE".into()
        }
        AccessStatement::GrantRoles { roles, members } => {
            for role in &roles {
                for member in &members {
                    meta.grant_role(role, member).await?;
                }
            }
            "GRANT ROLE".into()
        }
        AccessStatement::RevokeRoles { roles, members } => {
            for role in &roles {
                for member in &members {
                    meta.revoke_role(role, member).await?;
                }
            }
            "REVOKE ROLE".into()
        }
        AccessStatement::CreatePolicy(policy) => {
            let exists = meta
                .row_policies()
                .await?
                .iter()
                .any(|p| p.table == policy.table && p.name == policy.name);
            if exists {
                return Err(crate::Error::Engine(strata_engine::Error::Invalid(
                    format!(
                        "policy \"{}\" for table \"{}\" already exists; DROP POLICY {} ON {} first",
                        policy.name, policy.table, policy.name, policy.table
                    ),
                )));
            }
            meta.put_row_policy(&policy).await?;
            "CREATE POLICY".into()
        }
        AccessStatement::DropPolicy {
            table,
            name,
            if_exists,
        } => {
            if !meta.drop_row_policy(&table, &name).await? && !if_exists {
                return Err(crate::Error::Engine(strata_engine::Error::Invalid(
                    format!("policy \"{name}\" for table \"{table}\" does not exist"),
                )));
            }
            "DROP POLICY".into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use strata_engine::datafusion::sql::sqlparser::parser::Parser;

    fn read(sql: &str) -> Result<AccessStatement, String> {
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        classify(&stmts[0], "root").expect("an access statement")
    }

    fn g(p: Privilege, kind: ObjectKind, object: &str, cols: Option<&[&str]>, to: &str) -> Grant {
        Grant {
            privilege: p,
            object_kind: kind,
            object: object.into(),
            columns: cols.map(|c| c.iter().map(|s| s.to_string()).collect()),
            grantee: to.into(),
            granted_by: "root".into(),
        }
    }

    #[test]
    fn roles_and_users_are_read_from_create_role() {
        assert_eq!(
            read("CREATE ROLE analyst").unwrap(),
            AccessStatement::CreateRole {
                name: "analyst".into(),
                if_not_exists: false,
                member_of: vec![],
                members: vec![],
            }
        );
        assert_eq!(
            read("CREATE ROLE Alice LOGIN PASSWORD 's3cret' IN ROLE analyst").unwrap(),
            AccessStatement::CreateUser {
                name: "alice".into(),
                password: Some("s3cret".into()),
                superuser: false,
                if_not_exists: false,
                member_of: vec!["analyst".into()],
            }
        );
        assert_eq!(
            read("DROP ROLE IF EXISTS a, b").unwrap(),
            AccessStatement::Drop {
                names: vec!["a".into(), "b".into()],
                if_exists: true
            }
        );
    }

    #[test]
    fn grants_expand_to_one_row_per_privilege_object_and_grantee() {
        assert_eq!(
            read("GRANT SELECT, INSERT ON marts.orders, orders TO analyst, bob").unwrap(),
            AccessStatement::Grant(vec![
                g(
                    Privilege::Select,
                    ObjectKind::Table,
                    "marts.orders",
                    None,
                    "analyst"
                ),
                g(
                    Privilege::Insert,
                    ObjectKind::Table,
                    "marts.orders",
                    None,
                    "analyst"
                ),
                g(
                    Privilege::Select,
                    ObjectKind::Table,
                    "public.orders",
                    None,
                    "analyst"
                ),
                g(
                    Privilege::Insert,
                    ObjectKind::Table,
                    "public.orders",
                    None,
                    "analyst"
                ),
                g(
                    Privilege::Select,
                    ObjectKind::Table,
                    "marts.orders",
                    None,
                    "bob"
                ),
                g(
                    Privilege::Insert,
                    ObjectKind::Table,
                    "marts.orders",
                    None,
                    "bob"
                ),
                g(
                    Privilege::Select,
                    ObjectKind::Table,
                    "public.orders",
                    None,
                    "bob"
                ),
                g(
                    Privilege::Insert,
                    ObjectKind::Table,
                    "public.orders",
                    None,
                    "bob"
                ),
            ])
        );
        assert_eq!(
            read("GRANT SELECT (id, region) ON marts.orders TO analyst").unwrap(),
            AccessStatement::Grant(vec![g(
                Privilege::Select,
                ObjectKind::Table,
                "marts.orders",
                Some(&["id", "region"]),
                "analyst"
            )])
        );
        assert_eq!(
            read("GRANT USAGE ON SCHEMA marts TO analyst").unwrap(),
            AccessStatement::Grant(vec![g(
                Privilege::Usage,
                ObjectKind::Namespace,
                "marts",
                None,
                "analyst"
            )])
        );
        assert_eq!(
            read("REVOKE ALL ON ALL TABLES IN SCHEMA marts FROM analyst").unwrap(),
            AccessStatement::Revoke(vec![g(
                Privilege::All,
                ObjectKind::Namespace,
                "marts",
                None,
                "analyst"
            )])
        );
        assert!(read("GRANT SELECT ON SEQUENCE s TO analyst").is_err());
    }

    #[test]
    fn role_membership_is_read_from_grant_role() {
        assert_eq!(
            read("GRANT ROLE analyst, ROLE auditor TO alice, bob").unwrap(),
            AccessStatement::GrantRoles {
                roles: vec!["analyst".into(), "auditor".into()],
                members: vec!["alice".into(), "bob".into()],
            }
        );
        assert_eq!(
            read("REVOKE ROLE analyst FROM alice").unwrap(),
            AccessStatement::RevokeRoles {
                roles: vec!["analyst".into()],
                members: vec!["alice".into()],
            }
        );
        assert!(read("GRANT SELECT TO alice").is_err());
    }

    #[test]
    fn row_filters_are_read_from_create_policy() {
        assert_eq!(
            read("CREATE POLICY own_region ON marts.orders FOR SELECT TO analyst USING (region = current_user_attribute('region'))").unwrap(),
            AccessStatement::CreatePolicy(RowPolicy {
                name: "own_region".into(),
                table: "marts.orders".into(),
                predicate: "region = current_user_attribute('region')".into(),
                applies_to: "analyst".into(),
            })
        );
        let everyone =
            read("CREATE POLICY recent ON orders AS PERMISSIVE TO PUBLIC USING (year >= 2020)")
                .unwrap();
        assert!(
            matches!(&everyone, AccessStatement::CreatePolicy(p) if p.applies_to == "*" && p.table == "public.orders"),
            "{everyone:?}"
        );
        assert_eq!(
            read("DROP POLICY IF EXISTS own_region ON strata.marts.orders").unwrap(),
            AccessStatement::DropPolicy {
                table: "marts.orders".into(),
                name: "own_region".into(),
                if_exists: true,
            }
        );
        for unsupported in [
            "CREATE POLICY p ON t AS RESTRICTIVE USING (a = 1)",
            "CREATE POLICY p ON t FOR INSERT WITH CHECK (a = 1)",
            "CREATE POLICY p ON t FOR SELECT TO a, b USING (a = 1)",
            "CREATE POLICY p ON t USING (a = 1) WITH CHECK (a = 1)",
            "CREATE POLICY p ON t TO analyst",
        ] {
            let err = read(unsupported).unwrap_err();
            assert!(!err.is_empty(), "{unsupported}");
        }
    }
}
