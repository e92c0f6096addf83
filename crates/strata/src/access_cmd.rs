//! `strata users …`, `strata roles …`, `strata grants …`, `strata tokens …` and
//! `strata policies …`: the live access-control state in the metadata store.
//!
//! Passwords and token secrets never reach the store: passwords are hashed with argon2 and
//! tokens are stored as their SHA-256 (see `strata_server::auth`). Nothing here prints a
//! hash; a token's secret is printed once, when it is created.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde_json::json;
use strata_meta::{
    ColumnMask, Grant, MetaStore, NewToken, NewUser, ObjectKind, Privilege, RowPolicy, TokenId,
};

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// Sub-commands of `strata users`.
#[derive(clap::Subcommand, Debug, Clone)]
pub(crate) enum UsersCommand {
    /// Create a user. Without a password the user can log in with API tokens only.
    #[command(after_help = "\
Examples:
  strata users add alice --password-stdin < alice.pw
  echo \"$ALICE_PASSWORD\" | strata users add alice --password-stdin
  strata users add bob --password-env BOB_PASSWORD --attr region=EU --attr team=sales
  strata users add admin --password-stdin --superuser
  strata users add ci-bot                                  token-only (see `strata tokens create`)")]
    Add {
        /// The login name.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long, conflicts_with = "password_env")]
        password_stdin: bool,
        /// Read the password from this environment variable.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// The user bypasses grants, row filters and column masks.
        #[arg(long)]
        superuser: bool,
        /// An attribute row filters can read with `current_user_attribute('KEY')`;
        /// repeat for several.
        #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        attrs: Vec<(String, String)>,
    },
    /// List users: superuser, disabled, attributes and whether a password is set.
    #[command(after_help = "Examples:\n  strata users list\n  strata users list --json")]
    List,
    /// Set a user's password.
    #[command(
        group(clap::ArgGroup::new("password").required(true).args(["password_stdin", "password_env"])),
        after_help = "\
Examples:
  strata users passwd alice --password-stdin < alice.pw
  strata users passwd bob --password-env BOB_PASSWORD"
    )]
    Passwd {
        /// The user.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Read the password from this environment variable.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
    },
    /// Replace a user's attributes with the ones given (`--clear` removes them all).
    #[command(after_help = "\
Examples:
  strata users set-attr bob region=EU team=sales
  strata users set-attr bob --clear")]
    SetAttr {
        /// The user.
        name: String,
        /// The new attributes; attributes not given are removed.
        #[arg(value_name = "KEY=VALUE", value_parser = parse_key_value, required_unless_present = "clear")]
        attrs: Vec<(String, String)>,
        /// Remove every attribute.
        #[arg(long, conflicts_with = "attrs")]
        clear: bool,
    },
    /// Disable a user: no login by password or token until enabled again.
    #[command(after_help = "Example:\n  strata users disable alice")]
    Disable {
        /// The user.
        name: String,
    },
    /// Enable a disabled user.
    #[command(after_help = "Example:\n  strata users enable alice")]
    Enable {
        /// The user.
        name: String,
    },
    /// Drop a user with their role memberships, grants and API tokens.
    #[command(after_help = "Example:\n  strata users drop alice")]
    Drop {
        /// The user.
        name: String,
    },
}

/// Sub-commands of `strata roles`.
#[derive(clap::Subcommand, Debug, Clone)]
pub(crate) enum RolesCommand {
    /// Create a role without members.
    #[command(after_help = "Example:\n  strata roles add analyst")]
    Add {
        /// The role's name (users and roles share one namespace).
        name: String,
    },
    /// Drop a role with its memberships and the grants to it.
    #[command(after_help = "Example:\n  strata roles drop analyst")]
    Drop {
        /// The role.
        name: String,
    },
    /// Make a user or role a member of a role.
    #[command(after_help = "\
Examples:
  strata roles grant analyst alice        alice joins analyst
  strata roles grant analyst interns      every member of interns joins analyst")]
    Grant {
        /// The role joined.
        role: String,
        /// The user or role joining it.
        member: String,
    },
    /// Remove a member from a role.
    #[command(after_help = "Example:\n  strata roles revoke analyst alice")]
    Revoke {
        /// The role left.
        role: String,
        /// The user or role leaving it.
        member: String,
    },
    /// List roles and their direct members.
    #[command(after_help = "Examples:\n  strata roles list\n  strata roles list --json")]
    List,
}

/// The privilege, object and grantee of `strata grants add` and `strata grants revoke`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct GrantArgs {
    /// select, insert, update, delete, create, usage or all (any case).
    #[arg(value_parser = parse_privilege)]
    privilege: Privilege,
    /// `namespace.table` for a table, `namespace` for a namespace.
    object: String,
    /// The user or role receiving (or losing) the privilege.
    grantee: String,
    /// Only these columns (tables only), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "COLUMN,...")]
    columns: Vec<String>,
    /// OBJECT is a namespace (implied when it has no dot).
    #[arg(long)]
    namespace: bool,
}

/// Sub-commands of `strata grants`.
#[derive(clap::Subcommand, Debug, Clone)]
pub(crate) enum GrantsCommand {
    /// Grant a privilege on a table or namespace to a user or role.
    #[command(after_help = "\
Examples:
  strata grants add select marts.orders analyst
  strata grants add select marts.customers support --columns id,name,country
  strata grants add usage marts analyst                   a namespace (no dot)
  strata grants add all staging engineer --namespace")]
    Add(GrantArgs),
    /// Revoke a grant; give the same privilege, object, grantee and columns as when it
    /// was granted.
    #[command(after_help = "\
Examples:
  strata grants revoke select marts.orders analyst
  strata grants revoke select marts.customers support --columns id,name,country")]
    Revoke(GrantArgs),
    /// List grants, of everyone or of one grantee.
    #[command(after_help = "\
Examples:
  strata grants list
  strata grants list --grantee analyst --json")]
    List {
        /// Only the grants to this user or role.
        #[arg(long)]
        grantee: Option<String>,
    },
}

/// Sub-commands of `strata tokens`.
#[derive(clap::Subcommand, Debug, Clone)]
pub(crate) enum TokensCommand {
    /// Create an API token for a user; its secret is printed once.
    #[command(after_help = "\
Durations: a number and a unit, s, m, h, d or w (30d, 12h, 90m).

Examples:
  strata tokens create ci-bot --name github-actions --expires-in 90d
  strata tokens create alice --json")]
    Create {
        /// The user the token logs in as.
        user: String,
        /// A label, e.g. where the token is used.
        #[arg(long, value_name = "LABEL")]
        name: Option<String>,
        /// The token stops working after this long (default: never).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<chrono::Duration>,
    },
    /// List API tokens (never their secrets), revoked and expired ones too.
    #[command(after_help = "Examples:\n  strata tokens list\n  strata tokens list --user ci-bot")]
    List {
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke an API token now.
    #[command(
        after_help = "Example:\n  strata tokens revoke 67e55044-10b1-426f-9247-bb680e5fe0c8\n\nThe id is shown by `strata tokens list`."
    )]
    Revoke {
        /// The token's id.
        #[arg(value_parser = parse_token_id)]
        id: TokenId,
    },
}

/// Sub-commands of `strata policies`: row filters and column masks.
#[derive(clap::Subcommand, Debug, Clone)]
pub(crate) enum PoliciesCommand {
    /// Add (or replace) a row filter: the grantee sees only rows where the SQL holds.
    #[command(after_help = "\
`current_user()` and `current_user_attribute('KEY')` (see `strata users add --attr`) can be
used in the SQL. GRANTEE `*` means everyone.

Examples:
  strata policies add-filter marts.orders eu_only --using \"region = 'EU'\" --to eu_analyst
  strata policies add-filter marts.orders own_region --using \"region = current_user_attribute('region')\" --to '*'")]
    AddFilter {
        /// `namespace.table`.
        table: String,
        /// The filter's name, unique per table.
        name: String,
        /// A SQL boolean expression over the table's columns.
        #[arg(long = "using", value_name = "SQL")]
        predicate: String,
        /// The user or role it applies to, or `*` for everyone.
        #[arg(long = "to", value_name = "GRANTEE")]
        applies_to: String,
    },
    /// Drop a row filter.
    #[command(after_help = "Example:\n  strata policies drop-filter marts.orders eu_only")]
    DropFilter {
        /// `namespace.table`.
        table: String,
        /// The filter's name.
        name: String,
    },
    /// Add (or replace) a column mask: everyone not exempt sees masked values.
    #[command(after_help = "\
Masks: full (**** for text, NULL otherwise), null, hash (SHA-256 hex), email (a***@x.com),
partial(KEEP_START,KEEP_END), expr:<sql>.

Examples:
  strata policies add-mask marts.customers.email --mask email --exempt support
  strata policies add-mask marts.customers.phone --mask 'partial(0,4)' --exempt support,admin
  strata policies add-mask marts.customers.income --mask 'expr:round(income, -4)'")]
    AddMask {
        /// `namespace.table.column`.
        #[arg(value_name = "TABLE.COLUMN")]
        column: String,
        /// The mask: full, null, hash, email, partial(a,b) or expr:<sql>.
        #[arg(long, value_name = "SPEC")]
        mask: String,
        /// A user or role who sees clear values; repeat or separate with commas.
        #[arg(long, value_name = "NAME", value_delimiter = ',')]
        exempt: Vec<String>,
    },
    /// Drop a column mask.
    #[command(after_help = "Example:\n  strata policies drop-mask marts.customers.email")]
    DropMask {
        /// `namespace.table.column`.
        #[arg(value_name = "TABLE.COLUMN")]
        column: String,
    },
    /// List row filters, then column masks.
    #[command(after_help = "Examples:\n  strata policies list\n  strata policies list --json")]
    List,
}

// ---------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------

/// Where secrets typed by the operator come from: standard input and the environment.
trait SecretInput: Sync {
    /// The first line of standard input, as read.
    fn stdin_line(&self) -> std::io::Result<String>;
    /// Environment variable `var`.
    fn env(&self, var: &str) -> Option<OsString>;
}

/// The process's own standard input and environment.
struct ProcessInput;

impl SecretInput for ProcessInput {
    fn stdin_line(&self) -> std::io::Result<String> {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprint!("Password (the line is shown as typed): ");
        }
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        Ok(line)
    }

    fn env(&self, var: &str) -> Option<OsString> {
        std::env::var_os(var)
    }
}

/// Reads the password from standard input or `env_var`; `None` when neither is asked for.
fn read_password(
    stdin: bool,
    env_var: Option<&str>,
    input: &dyn SecretInput,
) -> Result<Option<String>> {
    let password = match (stdin, env_var) {
        (true, Some(_)) => {
            bail!("give the password either with --password-stdin or with --password-env, not both")
        }
        (false, None) => return Ok(None),
        (true, None) => {
            let line = input
                .stdin_line()
                .context("reading the password from standard input")?;
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                bail!(
                    "the first line of standard input is empty; pipe the password in, e.g. `printf '%s\\n' \"$PW\" | strata users …`"
                );
            }
            line.to_string()
        }
        (false, Some(var)) => {
            let value = input.env(var).ok_or_else(|| {
                anyhow!(
                    "environment variable `{var}` is not set; export it with the password first"
                )
            })?;
            let value = value
                .into_string()
                .map_err(|_| anyhow!("environment variable `{var}` is not valid UTF-8"))?;
            if value.is_empty() {
                bail!("environment variable `{var}` is empty; set it to the password");
            }
            value
        }
    };
    Ok(Some(password))
}

/// The argon2 hash of `password`, computed off the async workers.
async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || strata_server::auth::hash_password(&password))
        .await
        .context("hashing the password")?
        .map_err(Into::into)
}

/// Appends `hint` to the errors of `e` that the operator can fix; keeps the others typed.
fn hint(e: strata_meta::Error, hint: &str) -> anyhow::Error {
    match e {
        strata_meta::Error::NotFound { .. }
        | strata_meta::Error::AlreadyExists { .. }
        | strata_meta::Error::InvalidValue { .. }
        | strata_meta::Error::InvalidGrant { .. }
        | strata_meta::Error::RoleCycle { .. } => anyhow!("{e}; {hint}"),
        other => other.into(),
    }
}

/// `strata users …`.
pub(crate) async fn users(meta: &MetaStore, cmd: UsersCommand, json: bool) -> Result<()> {
    users_with(meta, cmd, json, &ProcessInput).await
}

async fn users_with(
    meta: &MetaStore,
    cmd: UsersCommand,
    json: bool,
    input: &dyn SecretInput,
) -> Result<()> {
    match cmd {
        UsersCommand::Add {
            name,
            password_stdin,
            password_env,
            superuser,
            attrs,
        } => {
            let password = read_password(password_stdin, password_env.as_deref(), input)?;
            let attributes = attributes(attrs)?;
            let password_hash = match password {
                Some(p) => Some(hash(p).await?),
                None => None,
            };
            let has_password = password_hash.is_some();
            meta.create_user(&NewUser {
                name: name.clone(),
                password_hash,
                attributes,
                superuser,
            })
            .await
            .map_err(|e| {
                hint(
                    e,
                    "pick another name, or see `strata users list` and `strata roles list`",
                )
            })?;
            let mut message = format!("created user {name}");
            if superuser {
                message.push_str(" (superuser)");
            }
            if !has_password {
                message.push_str(&format!(
                    "\nno password set: {name} logs in with API tokens (`strata tokens create {name}`)"
                ));
            }
            done(
                json,
                message,
                json!({"action": "created", "user": name, "superuser": superuser, "has_password": has_password}),
            )
        }
        UsersCommand::List => {
            let users = meta.users().await?;
            if json {
                let rows: Vec<_> = users
                    .iter()
                    .map(|u| {
                        json!({
                            "name": u.name, "superuser": u.superuser, "disabled": u.disabled,
                            "attributes": u.attributes, "has_password": u.password_hash.is_some(),
                            "created_at": u.created_at.to_rfc3339(),
                        })
                    })
                    .collect();
                return print_json(&rows);
            }
            if users.is_empty() {
                println!("No users yet. Create one with\n  strata users add NAME --password-stdin");
                return Ok(());
            }
            let mut t = table(&[
                "user",
                "superuser",
                "disabled",
                "attributes",
                "password",
                "created",
            ]);
            for u in &users {
                t.add_row([
                    u.name.clone(),
                    yes_no(u.superuser).into(),
                    yes_no(u.disabled).into(),
                    u.attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if u.password_hash.is_some() {
                        "set"
                    } else {
                        "none (tokens only)"
                    }
                    .into(),
                    time(&u.created_at),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        UsersCommand::Passwd {
            name,
            password_stdin,
            password_env,
        } => {
            let password = read_password(password_stdin, password_env.as_deref(), input)?
                .context("give the new password with --password-stdin or --password-env VAR")?;
            // The SCRAM salt stays, so the user's tokens keep logging in by SCRAM.
            let previous = meta.user(&name).await?.and_then(|u| u.password_hash);
            let hashed = tokio::task::spawn_blocking(move || {
                strata_server::auth::hash_password_keeping(&password, previous.as_deref())
            })
            .await
            .context("hashing the password")??;
            meta.set_password(&name, Some(hashed))
                .await
                .map_err(|e| hint(e, "see `strata users list`"))?;
            done(
                json,
                format!("changed the password of {name}"),
                json!({"action": "password_changed", "user": name}),
            )
        }
        UsersCommand::SetAttr { name, attrs, clear } => {
            let attributes = if clear {
                BTreeMap::new()
            } else {
                attributes(attrs)?
            };
            meta.set_user_attributes(&name, attributes.clone())
                .await
                .map_err(|e| hint(e, "see `strata users list`"))?;
            let message = if attributes.is_empty() {
                format!("removed every attribute of {name}")
            } else {
                format!(
                    "set the attributes of {name}: {}",
                    attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            done(
                json,
                message,
                json!({"action": "attributes_set", "user": name, "attributes": attributes}),
            )
        }
        UsersCommand::Disable { name } => {
            meta.set_user_disabled(&name, true)
                .await
                .map_err(|e| hint(e, "see `strata users list`"))?;
            done(
                json,
                format!(
                    "disabled user {name}: no login by password or token until `strata users enable {name}`"
                ),
                json!({"action": "disabled", "user": name}),
            )
        }
        UsersCommand::Enable { name } => {
            meta.set_user_disabled(&name, false)
                .await
                .map_err(|e| hint(e, "see `strata users list`"))?;
            done(
                json,
                format!("enabled user {name}"),
                json!({"action": "enabled", "user": name}),
            )
        }
        UsersCommand::Drop { name } => {
            if !meta.drop_user(&name).await? {
                bail!("user `{name}` not found; see `strata users list`");
            }
            done(
                json,
                format!("dropped user {name} with their role memberships, grants and tokens"),
                json!({"action": "dropped", "user": name}),
            )
        }
    }
}

/// `KEY=VALUE` pairs as a map; a key given twice is refused.
fn attributes(pairs: Vec<(String, String)>) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (key, value) in pairs {
        if map.contains_key(&key) {
            bail!("attribute `{key}` is given twice; give each key once");
        }
        map.insert(key, value);
    }
    Ok(map)
}

// ---------------------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------------------

/// `strata roles …`.
pub(crate) async fn roles(meta: &MetaStore, cmd: RolesCommand, json: bool) -> Result<()> {
    match cmd {
        RolesCommand::Add { name } => {
            meta.create_role(&name).await.map_err(|e| {
                hint(
                    e,
                    "pick another name, or see `strata roles list` and `strata users list`",
                )
            })?;
            done(
                json,
                format!("created role {name}"),
                json!({"action": "created", "role": name}),
            )
        }
        RolesCommand::Drop { name } => {
            if !meta.drop_role(&name).await? {
                bail!("role `{name}` not found; see `strata roles list`");
            }
            done(
                json,
                format!("dropped role {name} with its memberships and grants"),
                json!({"action": "dropped", "role": name}),
            )
        }
        RolesCommand::Grant { role, member } => {
            let added = meta.grant_role(&role, &member).await.map_err(|e| {
                hint(
                    e,
                    &format!(
                        "create the role first with `strata roles add {role}`, or see `strata roles list`"
                    ),
                )
            })?;
            let message = if added {
                format!("{member} is now a member of {role}")
            } else {
                format!("{member} was already a member of {role}; nothing changed")
            };
            done(
                json,
                message,
                json!({"action": "granted", "role": role, "member": member, "changed": added}),
            )
        }
        RolesCommand::Revoke { role, member } => {
            let removed = meta.revoke_role(&role, &member).await?;
            let message = if removed {
                format!("{member} is no longer a member of {role}")
            } else {
                format!("{member} was not a member of {role}; nothing changed")
            };
            done(
                json,
                message,
                json!({"action": "revoked", "role": role, "member": member, "changed": removed}),
            )
        }
        RolesCommand::List => {
            let roles = meta.roles().await?;
            if json {
                return print_json(&roles);
            }
            if roles.is_empty() {
                println!("No roles yet. Create one with\n  strata roles add NAME");
                return Ok(());
            }
            let mut t = table(&["role", "members"]);
            for r in &roles {
                t.add_row([r.name.clone(), r.members.join(", ")]);
            }
            println!("{t}");
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Grants
// ---------------------------------------------------------------------------------------

/// The grant `args` describe, granted by `granted_by`.
fn grant_of(args: GrantArgs, granted_by: &str) -> Result<Grant> {
    let (object_kind, object) = parse_object(&args.object, args.namespace)?;
    let columns = if args.columns.is_empty() {
        None
    } else {
        if object_kind == ObjectKind::Namespace {
            bail!(
                "--columns applies to tables only, and `{object}` is a namespace; write the object as `namespace.table`"
            );
        }
        let columns: Vec<String> = args
            .columns
            .iter()
            .map(|c| c.trim().to_lowercase())
            .collect();
        if columns.iter().any(String::is_empty) {
            bail!("--columns holds an empty column name; write it as --columns a,b");
        }
        Some(columns)
    };
    Ok(Grant {
        privilege: args.privilege,
        object_kind,
        object,
        columns,
        grantee: args.grantee,
        granted_by: granted_by.to_string(),
    })
}

/// `privilege on kind object(columns)` for messages.
fn describe_grant(g: &Grant) -> String {
    let columns = g
        .columns
        .as_ref()
        .map(|c| format!(" ({})", c.join(", ")))
        .unwrap_or_default();
    format!("{} on {} {}{columns}", g.privilege, g.object_kind, g.object)
}

/// `strata grants …`; new grants are recorded as granted by `granted_by`.
pub(crate) async fn grants(
    meta: &MetaStore,
    cmd: GrantsCommand,
    json: bool,
    granted_by: &str,
) -> Result<()> {
    match cmd {
        GrantsCommand::Add(args) => {
            let grant = grant_of(args, granted_by)?;
            let added = meta
                .grant(&grant)
                .await
                .map_err(|e| hint(e, "check the object (`ns.table` or `ns`) and the columns"))?;
            let what = describe_grant(&grant);
            let message = if added {
                format!("granted {what} to {}", grant.grantee)
            } else {
                format!("{} already had {what}; nothing changed", grant.grantee)
            };
            done(
                json,
                message,
                json!({"action": "granted", "grant": grant, "changed": added}),
            )
        }
        GrantsCommand::Revoke(args) => {
            let grant = grant_of(args, granted_by)?;
            let removed = meta
                .revoke(&grant)
                .await
                .map_err(|e| hint(e, "check the object (`ns.table` or `ns`) and the columns"))?;
            let what = describe_grant(&grant);
            let message = if removed {
                format!("revoked {what} from {}", grant.grantee)
            } else {
                format!(
                    "{} had no grant of {what}; nothing changed (see `strata grants list --grantee {}`: a grant is revoked with the same privilege, object and columns)",
                    grant.grantee, grant.grantee
                )
            };
            done(
                json,
                message,
                json!({"action": "revoked", "grant": grant, "changed": removed}),
            )
        }
        GrantsCommand::List { grantee } => {
            let grants = meta.grants(grantee.as_deref()).await?;
            if json {
                return print_json(&grants);
            }
            if grants.is_empty() {
                match grantee {
                    Some(g) => println!("No grants to {g}."),
                    None => println!(
                        "No grants yet. Grant a privilege with\n  strata grants add select ns.table ROLE"
                    ),
                }
                return Ok(());
            }
            let mut t = table(&[
                "grantee",
                "privilege",
                "kind",
                "object",
                "columns",
                "granted by",
                "granted",
            ]);
            for r in &grants {
                let g = &r.grant;
                t.add_row([
                    g.grantee.clone(),
                    g.privilege.to_string(),
                    g.object_kind.to_string(),
                    g.object.clone(),
                    g.columns
                        .as_ref()
                        .map(|c| c.join(", "))
                        .unwrap_or_else(|| "(all)".into()),
                    g.granted_by.clone(),
                    time(&r.granted_at),
                ]);
            }
            println!("{t}");
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

/// Creates a token for `user`: its id, its secret (stored only as a hash) and its expiry.
async fn issue_token(
    meta: &MetaStore,
    user: &str,
    name: Option<String>,
    expires_in: Option<chrono::Duration>,
) -> Result<(TokenId, String, Option<DateTime<Utc>>)> {
    let expires_at = match expires_in {
        Some(d) => Some(
            Utc::now()
                .checked_add_signed(d)
                .context("--expires-in is too far in the future; give e.g. 365d")?,
        ),
        None => None,
    };
    let (secret, token_hash) = strata_server::auth::new_token()?;
    let password_hash = meta.user(user).await?.and_then(|u| u.password_hash);
    let scram_verifier =
        strata_server::auth::token_scram_verifier(&secret, password_hash.as_deref());
    let id = meta
        .create_token(&NewToken {
            user: user.to_string(),
            name: name.unwrap_or_default(),
            token_hash,
            expires_at,
            scram_verifier,
        })
        .await
        .map_err(|e| {
            hint(
                e,
                &format!("create the user first with `strata users add {user}`"),
            )
        })?;
    Ok((id, secret, expires_at))
}

/// `strata tokens …`.
pub(crate) async fn tokens(meta: &MetaStore, cmd: TokensCommand, json: bool) -> Result<()> {
    match cmd {
        TokensCommand::Create {
            user,
            name,
            expires_in,
        } => {
            let (id, secret, expires_at) = issue_token(meta, &user, name, expires_in).await?;
            let disabled = meta.user(&user).await?.is_some_and(|u| u.disabled);
            if json {
                return print_json(&json!({
                    "id": id.to_string(),
                    "user": user,
                    "token": secret,
                    "expires_at": expires_at.map(|t| t.to_rfc3339()),
                }));
            }
            let expiry = expires_at
                .map(|t| format!("expires {}", time(&t)))
                .unwrap_or_else(|| "never expires".into());
            println!("created token {id} for {user} ({expiry}):\n\n  {secret}\n");
            println!(
                "Store it now: it cannot be shown again. Revoke it with `strata tokens revoke {id}`."
            );
            if disabled {
                eprintln!(
                    "note: user {user} is disabled; the token works once `strata users enable {user}` runs"
                );
            }
            Ok(())
        }
        TokensCommand::List { user } => {
            let tokens = meta.tokens(user.as_deref()).await?;
            if json {
                return print_json(&tokens);
            }
            if tokens.is_empty() {
                println!(
                    "No API tokens{}. Create one with\n  strata tokens create USER --expires-in 90d",
                    user.map(|u| format!(" for {u}")).unwrap_or_default()
                );
                return Ok(());
            }
            let now = Utc::now();
            let mut t = table(&[
                "id",
                "user",
                "name",
                "created",
                "expires",
                "revoked",
                "last used",
            ]);
            for k in &tokens {
                let expires = match k.expires_at {
                    None => "never".to_string(),
                    Some(e) if e <= now => format!("{} (expired)", time(&e)),
                    Some(e) => time(&e),
                };
                t.add_row([
                    k.id.to_string(),
                    k.user.clone(),
                    k.name.clone(),
                    time(&k.created_at),
                    expires,
                    k.revoked_at.as_ref().map(time).unwrap_or_default(),
                    k.last_used_at
                        .as_ref()
                        .map(time)
                        .unwrap_or_else(|| "never".into()),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        TokensCommand::Revoke { id } => {
            let revoked = meta.revoke_token(&id).await?;
            if !revoked {
                let exists = meta.tokens(None).await?.iter().any(|t| t.id == id);
                if !exists {
                    bail!("no API token with id {id}; see `strata tokens list`");
                }
            }
            let message = if revoked {
                format!("revoked token {id}")
            } else {
                format!("token {id} was already revoked; nothing changed")
            };
            done(
                json,
                message,
                json!({"action": "revoked", "id": id.to_string(), "changed": revoked}),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// Row filters and column masks
// ---------------------------------------------------------------------------------------

/// `strata policies …`.
pub(crate) async fn policies(meta: &MetaStore, cmd: PoliciesCommand, json: bool) -> Result<()> {
    match cmd {
        PoliciesCommand::AddFilter {
            table,
            name,
            predicate,
            applies_to,
        } => {
            let table = parse_table(&table)?;
            let name = name.trim().to_string();
            if name.is_empty() {
                bail!("the filter's name is empty; give it a name, e.g. `eu_only`");
            }
            let predicate = predicate.trim().to_string();
            if predicate.is_empty() {
                bail!("--using is empty; give a SQL condition, e.g. --using \"region = 'EU'\"");
            }
            let applies_to = applies_to.trim().to_string();
            if applies_to.is_empty() {
                bail!("--to is empty; give a user or role, or '*' for everyone");
            }
            let existed = meta
                .row_policies()
                .await?
                .iter()
                .any(|p| p.table == table && p.name == name);
            let policy = RowPolicy {
                name,
                table,
                predicate,
                applies_to,
            };
            let changed = meta
                .put_row_policy(&policy)
                .await
                .map_err(|e| hint(e, "see `strata policies list`"))?;
            let verb = match (existed, changed) {
                (_, false) => "unchanged",
                (true, true) => "replaced",
                (false, true) => "created",
            };
            let message = if changed {
                format!(
                    "{verb} row filter {} on {}: {} sees rows where {}",
                    policy.name,
                    policy.table,
                    if policy.applies_to == "*" {
                        "everyone"
                    } else {
                        policy.applies_to.as_str()
                    },
                    policy.predicate
                )
            } else {
                format!(
                    "row filter {} on {} was already as given; nothing changed",
                    policy.name, policy.table
                )
            };
            done(
                json,
                message,
                json!({"action": verb, "filter": policy, "changed": changed}),
            )
        }
        PoliciesCommand::DropFilter { table, name } => {
            let table = parse_table(&table)?;
            if !meta.drop_row_policy(&table, name.trim()).await? {
                bail!("no row filter `{name}` on {table}; see `strata policies list`");
            }
            done(
                json,
                format!("dropped row filter {name} on {table}"),
                json!({"action": "dropped", "table": table, "filter": name}),
            )
        }
        PoliciesCommand::AddMask {
            column,
            mask,
            exempt,
        } => {
            let (table, column) = parse_column(&column)?;
            let spec = mask.trim().to_string();
            spec.parse::<strata_engine::MaskKind>()?;
            let exempt: Vec<String> = exempt
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
            let existed = meta
                .column_masks()
                .await?
                .iter()
                .any(|m| m.table == table && m.column == column);
            let mask = ColumnMask {
                table,
                column,
                mask: spec,
                exempt,
            };
            let changed = meta
                .put_column_mask(&mask)
                .await
                .map_err(|e| hint(e, "see `strata policies list`"))?;
            let verb = match (existed, changed) {
                (_, false) => "unchanged",
                (true, true) => "replaced",
                (false, true) => "created",
            };
            let message = if changed {
                let exempt = if mask.exempt.is_empty() {
                    "nobody is exempt".to_string()
                } else {
                    format!("exempt: {}", mask.exempt.join(", "))
                };
                format!(
                    "{verb} mask {} on {}.{} ({exempt})",
                    mask.mask, mask.table, mask.column
                )
            } else {
                format!(
                    "the mask of {}.{} was already as given; nothing changed",
                    mask.table, mask.column
                )
            };
            done(
                json,
                message,
                json!({"action": verb, "mask": mask, "changed": changed}),
            )
        }
        PoliciesCommand::DropMask { column } => {
            let (table, column) = parse_column(&column)?;
            if !meta.drop_column_mask(&table, &column).await? {
                bail!("no mask on {table}.{column}; see `strata policies list`");
            }
            done(
                json,
                format!("dropped the mask of {table}.{column}"),
                json!({"action": "dropped", "table": table, "column": column}),
            )
        }
        PoliciesCommand::List => {
            let filters = meta.row_policies().await?;
            let masks = meta.column_masks().await?;
            if json {
                return print_json(&json!({"filters": filters, "masks": masks}));
            }
            if filters.is_empty() {
                println!(
                    "No row filters. Add one with\n  strata policies add-filter ns.table NAME --using SQL --to GRANTEE"
                );
            } else {
                let mut t = table(&["table", "filter", "applies to", "using"]);
                for p in &filters {
                    t.add_row([
                        p.table.clone(),
                        p.name.clone(),
                        p.applies_to.clone(),
                        p.predicate.clone(),
                    ]);
                }
                println!("Row filters:\n{t}");
            }
            if masks.is_empty() {
                println!(
                    "No column masks. Add one with\n  strata policies add-mask ns.table.column --mask SPEC"
                );
            } else {
                let mut t = table(&["table", "column", "mask", "exempt"]);
                for m in &masks {
                    t.add_row([
                        m.table.clone(),
                        m.column.clone(),
                        m.mask.clone(),
                        m.exempt.join(", "),
                    ]);
                }
                println!("Column masks:\n{t}");
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing helpers
// ---------------------------------------------------------------------------------------

/// `KEY=VALUE`: the key trimmed and not empty; the value as given (it may hold `=`).
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE; write it like region=EU"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("`{s}` has no key; write it like region=EU"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// A privilege name, any case.
fn parse_privilege(s: &str) -> Result<Privilege, String> {
    s.parse().map_err(|e: strata_meta::Error| e.to_string())
}

/// A token id (UUID).
fn parse_token_id(s: &str) -> Result<TokenId, String> {
    s.parse().map_err(|e: strata_meta::Error| e.to_string())
}

/// A duration like `30d`, `12h`, `90m`, `45s` or `2w`.
fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    let t = s.trim();
    let expected = "write a whole number and a unit, s, m, h, d or w, e.g. 30d, 12h or 90m";
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit; {expected}"))?;
    let (digits, unit) = t.split_at(split);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("`{s}` does not start with a number; {expected}"))?;
    if n == 0 {
        return Err(format!("`{s}` is no time at all; {expected}"));
    }
    let duration = match unit.trim().to_ascii_lowercase().as_str() {
        "s" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        "w" => chrono::Duration::try_weeks(n),
        other => return Err(format!("`{other}` in `{s}` is not a unit; {expected}")),
    };
    duration.ok_or_else(|| format!("`{s}` is too long; {expected}"))
}

/// A grant's object: `ns.table` is a table, `ns` a namespace (also with `namespace`).
/// Names are lower-cased and must be valid lake identifiers.
fn parse_object(s: &str, namespace: bool) -> Result<(ObjectKind, String)> {
    let name = s.trim().to_lowercase();
    if namespace || !name.contains('.') {
        strata_types::validate_identifier(&name).map_err(|e| {
            if name.contains('.') {
                anyhow!(
                    "`{name}` is not a namespace: leave out --namespace to grant on the table `{name}`"
                )
            } else {
                anyhow!("{e}")
            }
        })?;
        Ok((ObjectKind::Namespace, name))
    } else {
        Ok((ObjectKind::Table, parse_table(&name)?))
    }
}

/// `ns.table`, lower-cased and validated.
fn parse_table(s: &str) -> Result<String> {
    let name = s.trim().to_lowercase();
    let table: strata_types::TableName = name
        .parse()
        .map_err(|e: strata_types::NameError| anyhow!("{e}"))?;
    Ok(table.to_string())
}

/// `ns.table.column` as (`ns.table`, `column`), lower-cased.
fn parse_column(s: &str) -> Result<(String, String)> {
    let name = s.trim().to_lowercase();
    let Some((table, column)) = name.rsplit_once('.').filter(|(t, _)| t.contains('.')) else {
        bail!(
            "`{s}` is not a column; write it as namespace.table.column, e.g. marts.customers.email"
        );
    };
    let column = column.trim();
    if column.is_empty() {
        bail!("`{s}` has no column name; write it as namespace.table.column");
    }
    Ok((parse_table(table)?, column.to_string()))
}

/// `strata audit`: the newest audit entries, optionally of one user or surface.
pub(crate) async fn audit(
    meta: &MetaStore,
    user: Option<&str>,
    surface: Option<&str>,
    limit: u32,
    json: bool,
) -> Result<()> {
    let mut filter = strata_meta::AuditFilter::new().limit(limit);
    if let Some(u) = user {
        filter = filter.principal(u);
    }
    if let Some(s) = surface {
        filter = filter.surface(s);
    }
    let records = meta.audit(filter).await?;
    if json {
        return print_json(&records);
    }
    if records.is_empty() {
        println!(
            "No audit entries yet: they are written by `strata serve` for every statement and login."
        );
        return Ok(());
    }
    let mut t = table(&[
        "at",
        "user",
        "surface",
        "outcome",
        "ms",
        "tables",
        "statement",
    ]);
    for r in records {
        let e = r.entry;
        let mut statement = e.statement.replace('\n', " ");
        if statement.chars().count() > 80 {
            statement = statement.chars().take(79).collect::<String>() + "…";
        }
        let outcome = match e.error {
            Some(err) => format!(
                "{}: {}",
                e.outcome,
                err.chars().take(60).collect::<String>()
            ),
            None => e.outcome.to_string(),
        };
        t.add_row(vec![
            r.at.format("%Y-%m-%d %H:%M:%S").to_string(),
            e.principal,
            e.surface,
            outcome,
            e.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
            e.tables.join(", "),
            statement,
        ]);
    }
    println!("{t}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Output helpers
// ---------------------------------------------------------------------------------------

fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(header.iter().copied());
    t
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints `message` for people, or `value` with --json.
fn done(json: bool, message: String, value: serde_json::Value) -> Result<()> {
    if json {
        print_json(&value)
    } else {
        println!("{message}");
        Ok(())
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Standard input and environment for tests.
    struct FakeInput {
        stdin: &'static str,
        env: Vec<(&'static str, &'static str)>,
    }

    impl SecretInput for FakeInput {
        fn stdin_line(&self) -> std::io::Result<String> {
            Ok(self
                .stdin
                .lines()
                .next()
                .map(|l| format!("{l}\n"))
                .unwrap_or_default())
        }
        fn env(&self, var: &str) -> Option<OsString> {
            self.env
                .iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| OsString::from(v))
        }
    }

    const NO_INPUT: FakeInput = FakeInput {
        stdin: "",
        env: Vec::new(),
    };

    /// A command line parsed as the CLI would (`strata <group> …`).
    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        group: Group,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Group {
        #[command(subcommand)]
        Users(UsersCommand),
        #[command(subcommand)]
        Roles(RolesCommand),
        #[command(subcommand)]
        Grants(GrantsCommand),
        #[command(subcommand)]
        Tokens(TokensCommand),
        #[command(subcommand)]
        Policies(PoliciesCommand),
    }

    fn cli(args: &[&str]) -> Result<Group, clap::Error> {
        Cli::try_parse_from(std::iter::once("strata").chain(args.iter().copied())).map(|c| c.group)
    }

    async fn exec(meta: &MetaStore, args: &[&str], input: &FakeInput) -> Result<()> {
        match cli(args).map_err(|e| anyhow!("{e}"))? {
            Group::Users(c) => users_with(meta, c, false, input).await,
            Group::Roles(c) => roles(meta, c, false).await,
            Group::Grants(c) => grants(meta, c, false, "admin").await,
            Group::Tokens(c) => tokens(meta, c, false).await,
            Group::Policies(c) => policies(meta, c, false).await,
        }
    }

    async fn store() -> MetaStore {
        MetaStore::connect("sqlite::memory:").await.unwrap()
    }

    #[test]
    fn the_command_definitions_are_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), chrono::Duration::days(30));
        assert_eq!(parse_duration("12h").unwrap(), chrono::Duration::hours(12));
        assert_eq!(
            parse_duration("90m").unwrap(),
            chrono::Duration::minutes(90)
        );
        assert_eq!(
            parse_duration("45s").unwrap(),
            chrono::Duration::seconds(45)
        );
        assert_eq!(parse_duration("2W").unwrap(), chrono::Duration::weeks(2));
        assert_eq!(parse_duration(" 7d ").unwrap(), chrono::Duration::days(7));
        for bad in ["", "30", "d", "0d", "-5d", "1.5h", "3y", "10 days"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_duration("99999999999999999d").is_err());
        assert!(parse_duration("3y").unwrap_err().contains("not a unit"));
    }

    #[test]
    fn key_values() {
        assert_eq!(
            parse_key_value("region=EU").unwrap(),
            ("region".into(), "EU".into())
        );
        assert_eq!(
            parse_key_value(" team =a=b").unwrap(),
            ("team".into(), "a=b".into())
        );
        assert_eq!(
            parse_key_value("empty=").unwrap(),
            ("empty".into(), String::new())
        );
        assert!(parse_key_value("region").is_err());
        assert!(parse_key_value("=EU").is_err());

        let map = attributes(vec![("b".into(), "2".into()), ("a".into(), "1".into())]).unwrap();
        assert_eq!(
            map.into_iter().collect::<Vec<_>>(),
            [
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string())
            ]
        );
        let twice = attributes(vec![("a".into(), "1".into()), ("a".into(), "2".into())]);
        assert!(twice.unwrap_err().to_string().contains("given twice"));
    }

    #[test]
    fn objects_tables_and_columns() {
        assert_eq!(
            parse_object("Marts.Orders", false).unwrap(),
            (ObjectKind::Table, "marts.orders".to_string())
        );
        assert_eq!(
            parse_object("marts", false).unwrap(),
            (ObjectKind::Namespace, "marts".to_string())
        );
        assert_eq!(
            parse_object("marts", true).unwrap(),
            (ObjectKind::Namespace, "marts".to_string())
        );
        let err = parse_object("marts.orders", true).unwrap_err().to_string();
        assert!(err.contains("leave out --namespace"), "{err}");
        for bad in ["", "a.b.c", "a-b", "marts."] {
            assert!(
                parse_object(bad, false).is_err(),
                "{bad:?} should be refused"
            );
        }

        assert_eq!(parse_table("RAW.t").unwrap(), "raw.t");
        assert!(
            parse_table("orders")
                .unwrap_err()
                .to_string()
                .contains("namespace")
        );
        assert_eq!(
            parse_column("Marts.Customers.Email").unwrap(),
            ("marts.customers".to_string(), "email".to_string())
        );
        assert!(parse_column("customers.email").is_err());
        assert!(parse_column("marts.customers.").is_err());
    }

    #[test]
    fn grants_from_arguments() {
        let Group::Grants(GrantsCommand::Add(args)) = cli(&[
            "grants",
            "add",
            "SeLeCt",
            "marts.customers",
            "support",
            "--columns",
            "ID, Name",
        ])
        .unwrap() else {
            panic!("not grants add");
        };
        let g = grant_of(args, "root").unwrap();
        assert_eq!(g.privilege, Privilege::Select);
        assert_eq!(g.object_kind, ObjectKind::Table);
        assert_eq!(g.columns, Some(vec!["id".to_string(), "name".to_string()]));
        assert_eq!(g.granted_by, "root");

        let Group::Grants(GrantsCommand::Add(args)) =
            cli(&["grants", "add", "usage", "marts", "x", "--columns", "a"]).unwrap()
        else {
            panic!("not grants add");
        };
        assert!(
            grant_of(args, "root")
                .unwrap_err()
                .to_string()
                .contains("tables only")
        );
        assert!(cli(&["grants", "add", "drop", "marts", "x"]).is_err());
    }

    #[test]
    fn passwords_come_from_one_source() {
        let input = FakeInput {
            stdin: "s3cret\r\nmore\n",
            env: vec![("PW", "from-env"), ("EMPTY", "")],
        };
        assert_eq!(read_password(false, None, &input).unwrap(), None);
        assert_eq!(
            read_password(true, None, &input).unwrap().as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            read_password(false, Some("PW"), &input).unwrap().as_deref(),
            Some("from-env")
        );
        assert!(
            read_password(true, Some("PW"), &input)
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        assert!(
            read_password(false, Some("MISSING"), &input)
                .unwrap_err()
                .to_string()
                .contains("not set")
        );
        assert!(read_password(false, Some("EMPTY"), &input).is_err());
        assert!(read_password(true, None, &NO_INPUT).is_err());
        // clap refuses both too, and `passwd` needs one.
        assert!(
            cli(&[
                "users",
                "add",
                "a",
                "--password-stdin",
                "--password-env",
                "PW"
            ])
            .is_err()
        );
        assert!(cli(&["users", "passwd", "a"]).is_err());
        assert!(cli(&["users", "set-attr", "a"]).is_err());
    }

    #[tokio::test]
    async fn commands_change_the_store() {
        let meta = store().await;
        let input = FakeInput {
            stdin: "",
            env: vec![("ALICE_PW", "correct horse")],
        };

        // Users.
        exec(
            &meta,
            &[
                "users",
                "add",
                "alice",
                "--password-env",
                "ALICE_PW",
                "--attr",
                "region=EU",
            ],
            &input,
        )
        .await
        .unwrap();
        exec(&meta, &["users", "add", "bot", "--superuser"], &NO_INPUT)
            .await
            .unwrap();
        let alice = meta.user("alice").await.unwrap().unwrap();
        let hash = alice.password_hash.clone().unwrap();
        assert!(strata_server::auth::verify_password(&hash, "correct horse"));
        assert_eq!(
            alice.attributes.get("region").map(String::as_str),
            Some("EU")
        );
        let bot = meta.user("bot").await.unwrap().unwrap();
        assert!(bot.superuser && bot.password_hash.is_none());
        let again = exec(&meta, &["users", "add", "alice"], &NO_INPUT)
            .await
            .unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");

        exec(
            &meta,
            &["users", "set-attr", "alice", "team=sales", "region=US"],
            &NO_INPUT,
        )
        .await
        .unwrap();
        let attrs = meta.user("alice").await.unwrap().unwrap().attributes;
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs["region"], "US");
        exec(&meta, &["users", "set-attr", "bot", "--clear"], &NO_INPUT)
            .await
            .unwrap();
        exec(&meta, &["users", "disable", "alice"], &NO_INPUT)
            .await
            .unwrap();
        assert!(meta.user("alice").await.unwrap().unwrap().disabled);
        exec(&meta, &["users", "enable", "alice"], &NO_INPUT)
            .await
            .unwrap();
        assert!(!meta.user("alice").await.unwrap().unwrap().disabled);
        let stdin = FakeInput {
            stdin: "new pass\n",
            env: Vec::new(),
        };
        exec(
            &meta,
            &["users", "passwd", "bot", "--password-stdin"],
            &stdin,
        )
        .await
        .unwrap();
        let bot_hash = meta
            .user("bot")
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .unwrap();
        assert!(strata_server::auth::verify_password(&bot_hash, "new pass"));
        let missing = exec(&meta, &["users", "disable", "nobody"], &NO_INPUT)
            .await
            .unwrap_err();
        assert!(
            missing.to_string().contains("strata users list"),
            "{missing}"
        );
        users_with(&meta, UsersCommand::List, false, &NO_INPUT)
            .await
            .unwrap();
        users_with(&meta, UsersCommand::List, true, &NO_INPUT)
            .await
            .unwrap();

        // Roles.
        exec(&meta, &["roles", "add", "analyst"], &NO_INPUT)
            .await
            .unwrap();
        exec(&meta, &["roles", "add", "temp"], &NO_INPUT)
            .await
            .unwrap();
        exec(&meta, &["roles", "grant", "analyst", "alice"], &NO_INPUT)
            .await
            .unwrap();
        // Already a member: fine, nothing changes.
        exec(&meta, &["roles", "grant", "analyst", "alice"], &NO_INPUT)
            .await
            .unwrap();
        exec(&meta, &["roles", "grant", "temp", "bot"], &NO_INPUT)
            .await
            .unwrap();
        exec(&meta, &["roles", "revoke", "temp", "bot"], &NO_INPUT)
            .await
            .unwrap();
        exec(&meta, &["roles", "revoke", "temp", "bot"], &NO_INPUT)
            .await
            .unwrap();
        exec(&meta, &["roles", "drop", "temp"], &NO_INPUT)
            .await
            .unwrap();
        assert!(
            exec(&meta, &["roles", "drop", "temp"], &NO_INPUT)
                .await
                .is_err()
        );
        let no_role = exec(&meta, &["roles", "grant", "ghost", "alice"], &NO_INPUT)
            .await
            .unwrap_err();
        assert!(
            no_role.to_string().contains("strata roles add ghost"),
            "{no_role}"
        );
        let roles_now = meta.roles().await.unwrap();
        assert_eq!(roles_now.len(), 1);
        assert_eq!(roles_now[0].name, "analyst");
        assert_eq!(roles_now[0].members, ["alice"]);
        assert!(meta.roles_of("alice").await.unwrap().contains("analyst"));
        roles(&meta, RolesCommand::List, false).await.unwrap();
        roles(&meta, RolesCommand::List, true).await.unwrap();

        // Grants.
        exec(
            &meta,
            &["grants", "add", "select", "Marts.Orders", "analyst"],
            &NO_INPUT,
        )
        .await
        .unwrap();
        exec(
            &meta,
            &["grants", "add", "SELECT", "marts.orders", "analyst"],
            &NO_INPUT,
        )
        .await
        .unwrap();
        exec(
            &meta,
            &["grants", "add", "usage", "marts", "analyst"],
            &NO_INPUT,
        )
        .await
        .unwrap();
        exec(
            &meta,
            &[
                "grants",
                "add",
                "select",
                "marts.customers",
                "bot",
                "--columns",
                "id,name",
            ],
            &NO_INPUT,
        )
        .await
        .unwrap();
        exec(
            &meta,
            &[
                "grants",
                "revoke",
                "select",
                "marts.customers",
                "bot",
                "--columns",
                "name,id",
            ],
            &NO_INPUT,
        )
        .await
        .unwrap();
        exec(
            &meta,
            &["grants", "revoke", "select", "marts.customers", "bot"],
            &NO_INPUT,
        )
        .await
        .unwrap();
        let all = meta.grants(Some("analyst")).await.unwrap();
        assert_eq!(all.len(), 2);
        let table_grant = all
            .iter()
            .find(|g| g.grant.object_kind == ObjectKind::Table)
            .unwrap();
        assert_eq!(table_grant.grant.object, "marts.orders");
        assert_eq!(table_grant.grant.privilege, Privilege::Select);
        assert_eq!(table_grant.grant.granted_by, "admin");
        assert!(
            all.iter()
                .any(|g| g.grant.object_kind == ObjectKind::Namespace
                    && g.grant.object == "marts"
                    && g.grant.privilege == Privilege::Usage)
        );
        assert!(meta.grants(Some("bot")).await.unwrap().is_empty());
        grants(&meta, GrantsCommand::List { grantee: None }, false, "admin")
            .await
            .unwrap();
        grants(
            &meta,
            GrantsCommand::List {
                grantee: Some("analyst".into()),
            },
            true,
            "admin",
        )
        .await
        .unwrap();

        // Tokens.
        tokens(
            &meta,
            TokensCommand::Create {
                user: "bot".into(),
                name: Some("ci".into()),
                expires_in: Some(chrono::Duration::days(30)),
            },
            false,
        )
        .await
        .unwrap();
        exec(&meta, &["tokens", "create", "alice"], &NO_INPUT)
            .await
            .unwrap();
        let no_user = exec(&meta, &["tokens", "create", "ghost"], &NO_INPUT)
            .await
            .unwrap_err();
        assert!(
            no_user.to_string().contains("strata users add ghost"),
            "{no_user}"
        );
        let bot_tokens = meta.tokens(Some("bot")).await.unwrap();
        assert_eq!(bot_tokens.len(), 1);
        let bot_token = &bot_tokens[0];
        assert_eq!(bot_token.name, "ci");
        let expires = bot_token.expires_at.unwrap();
        let in_30_days = Utc::now() + chrono::Duration::days(30);
        assert!((in_30_days - expires).num_seconds().abs() < 60);
        tokens(&meta, TokensCommand::List { user: None }, false)
            .await
            .unwrap();
        tokens(
            &meta,
            TokensCommand::List {
                user: Some("bot".into()),
            },
            true,
        )
        .await
        .unwrap();
        let id = bot_token.id.to_string();
        exec(&meta, &["tokens", "revoke", &id], &NO_INPUT)
            .await
            .unwrap();
        exec(&meta, &["tokens", "revoke", &id], &NO_INPUT)
            .await
            .unwrap();
        assert!(
            meta.tokens(Some("bot")).await.unwrap()[0]
                .revoked_at
                .is_some()
        );
        let unknown = exec(
            &meta,
            &["tokens", "revoke", "67e55044-10b1-426f-9247-bb680e5fe0c8"],
            &NO_INPUT,
        )
        .await
        .unwrap_err();
        assert!(unknown.to_string().contains("no API token"), "{unknown}");

        // Policies.
        exec(
            &meta,
            &[
                "policies",
                "add-filter",
                "marts.orders",
                "eu_only",
                "--using",
                "region = 'EU'",
                "--to",
                "analyst",
            ],
            &NO_INPUT,
        )
        .await
        .unwrap();
        exec(
            &meta,
            &[
                "policies",
                "add-filter",
                "marts.orders",
                "tmp",
                "--using",
                "true",
                "--to",
                "*",
            ],
            &NO_INPUT,
        )
        .await
        .unwrap();
        exec(
            &meta,
            &["policies", "drop-filter", "marts.orders", "tmp"],
            &NO_INPUT,
        )
        .await
        .unwrap();
        assert!(
            exec(
                &meta,
                &["policies", "drop-filter", "marts.orders", "tmp"],
                &NO_INPUT
            )
            .await
            .is_err()
        );
        exec(
            &meta,
            &[
                "policies",
                "add-mask",
                "Marts.Customers.Email",
                "--mask",
                "email",
                "--exempt",
                "support,admin",
            ],
            &NO_INPUT,
        )
        .await
        .unwrap();
        exec(
            &meta,
            &[
                "policies",
                "add-mask",
                "marts.customers.phone",
                "--mask",
                "partial(0,4)",
            ],
            &NO_INPUT,
        )
        .await
        .unwrap();
        exec(
            &meta,
            &["policies", "drop-mask", "marts.customers.phone"],
            &NO_INPUT,
        )
        .await
        .unwrap();
        let bad_mask = exec(
            &meta,
            &[
                "policies",
                "add-mask",
                "marts.customers.x",
                "--mask",
                "scramble",
            ],
            &NO_INPUT,
        )
        .await
        .unwrap_err();
        assert!(bad_mask.to_string().contains("not a mask"), "{bad_mask}");
        policies(&meta, PoliciesCommand::List, false).await.unwrap();
        policies(&meta, PoliciesCommand::List, true).await.unwrap();
        let filters = meta.row_policies().await.unwrap();
        assert_eq!(
            filters,
            [RowPolicy {
                name: "eu_only".into(),
                table: "marts.orders".into(),
                predicate: "region = 'EU'".into(),
                applies_to: "analyst".into(),
            }]
        );
        let masks = meta.column_masks().await.unwrap();
        assert_eq!(
            masks,
            [ColumnMask {
                table: "marts.customers".into(),
                column: "email".into(),
                mask: "email".into(),
                exempt: vec!["admin".into(), "support".into()],
            }]
        );

        // Dropping a user takes their memberships, grants and tokens along.
        exec(&meta, &["users", "drop", "alice"], &NO_INPUT)
            .await
            .unwrap();
        assert!(meta.user("alice").await.unwrap().is_none());
        assert!(meta.tokens(Some("alice")).await.unwrap().is_empty());
        assert!(meta.roles().await.unwrap()[0].members.is_empty());
        assert!(
            exec(&meta, &["users", "drop", "alice"], &NO_INPUT)
                .await
                .is_err()
        );
    }

    /// The secret `tokens create` prints is the one whose hash is stored.
    #[tokio::test]
    async fn token_secrets_match_their_stored_hash() {
        let meta = store().await;
        exec(&meta, &["users", "add", "bot"], &NO_INPUT)
            .await
            .unwrap();
        let (id, secret, expires_at) = issue_token(&meta, "bot", None, None).await.unwrap();
        assert!(secret.starts_with(strata_server::auth::TOKEN_PREFIX));
        assert_eq!(expires_at, None);
        let found = meta
            .token_by_hash(&strata_server::auth::token_hash(&secret))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, id);
        assert_eq!(found.user, "bot");
        assert_eq!(found.name, "");
        assert!(found.is_valid_at(Utc::now()));
        // --json output carries the same secret.
        tokens(
            &meta,
            TokensCommand::Create {
                user: "bot".into(),
                name: Some("json".into()),
                expires_in: Some(chrono::Duration::hours(1)),
            },
            true,
        )
        .await
        .unwrap();
        assert_eq!(meta.tokens(Some("bot")).await.unwrap().len(), 2);
    }
}
