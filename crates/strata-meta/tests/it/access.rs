//! The access-control state: users, roles, grants, policies, masks, tokens, the audit log
//! and the access version.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, Utc};
use strata_meta::{
    AuditEntry, AuditFilter, AuditOutcome, ColumnMask, Error, Grant, MetaStore, NewToken, NewUser,
    ObjectKind, Privilege, Role, RowPolicy, TokenId,
};
use strata_types::{Classify, ErrorClass};

use crate::support::{TestDb, backend_tests};

backend_tests!(
    users_are_created_updated_and_dropped_with_what_they_own,
    role_membership_is_transitive_and_never_circular,
    grants_are_idempotent_and_revoked_by_columns,
    row_policies_and_column_masks_are_replaced_and_dropped,
    tokens_are_valid_until_expired_or_revoked,
    audit_log_is_newest_first_and_filtered,
    every_access_change_bumps_the_version,
);

fn new_user(name: &str) -> NewUser {
    NewUser {
        name: name.into(),
        password_hash: Some(format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}")),
        attributes: BTreeMap::from([("region".to_owned(), "EU".to_owned())]),
        superuser: false,
    }
}

fn select_on(object: &str, grantee: &str, columns: Option<&[&str]>) -> Grant {
    Grant {
        privilege: Privilege::Select,
        object_kind: ObjectKind::Table,
        object: object.into(),
        columns: columns.map(|cols| cols.iter().map(|c| c.to_string()).collect()),
        grantee: grantee.into(),
        granted_by: "admin".into(),
    }
}

fn new_token(user: &str, name: &str, hash: &str) -> NewToken {
    NewToken {
        user: user.into(),
        name: name.into(),
        token_hash: hash.into(),
        expires_at: None,
        scram_verifier: None,
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

async fn users_are_created_updated_and_dropped_with_what_they_own(db: &TestDb) {
    let store = db.connect().await;
    let before = Utc::now() - Duration::seconds(1);
    store.create_user(&new_user("ana")).await.unwrap();
    store
        .create_user(&NewUser {
            superuser: true,
            password_hash: None,
            attributes: BTreeMap::new(),
            ..new_user("root")
        })
        .await
        .unwrap();

    let ana = store.user("ana").await.unwrap().expect("ana exists");
    assert_eq!(ana.name, "ana");
    assert_eq!(ana.password_hash, new_user("ana").password_hash);
    assert_eq!(ana.attributes["region"], "EU");
    assert!(!ana.superuser);
    assert!(!ana.disabled);
    assert!(ana.created_at >= before && ana.created_at <= Utc::now());
    let root = store.user("root").await.unwrap().unwrap();
    assert!(root.superuser);
    assert_eq!(root.password_hash, None);
    assert!(root.attributes.is_empty());
    assert_eq!(store.user("nobody").await.unwrap(), None);
    let names: Vec<String> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["ana", "root"]);

    // Names are unique across users and roles.
    let err = store.create_user(&new_user("ana")).await.unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { kind: "user", name } if name == "ana"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "user `ana` already exists");
    assert_eq!(err.class(), ErrorClass::User);
    store.create_role("analyst").await.unwrap();
    let err = store.create_user(&new_user("analyst")).await.unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists { kind: "role", .. }),
        "{err:?}"
    );
    let err = store.create_role("ana").await.unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists { kind: "user", .. }),
        "{err:?}"
    );
    let err = store.create_user(&new_user("*")).await.unwrap_err();
    assert!(matches!(err, Error::InvalidValue { .. }), "{err:?}");

    // Updates.
    store.set_password("ana", None).await.unwrap();
    let attributes = BTreeMap::from([
        ("region".to_owned(), "US".to_owned()),
        ("team".to_owned(), "growth".to_owned()),
    ]);
    store
        .set_user_attributes("ana", attributes.clone())
        .await
        .unwrap();
    store.set_user_disabled("ana", true).await.unwrap();
    let ana = store.user("ana").await.unwrap().unwrap();
    assert_eq!(ana.password_hash, None);
    assert_eq!(ana.attributes, attributes);
    assert!(ana.disabled);
    store
        .set_password("ana", Some("$argon2id$new".into()))
        .await
        .unwrap();
    store.set_user_disabled("ana", false).await.unwrap();
    let ana = store.user("ana").await.unwrap().unwrap();
    assert_eq!(ana.password_hash.as_deref(), Some("$argon2id$new"));
    assert!(!ana.disabled);
    let err = store.set_user_disabled("ghost", true).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { kind: "user", name } if name == "ghost"),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::User);

    // Dropping a user removes its memberships, grants and tokens, and nobody else's.
    store.grant_role("analyst", "ana").await.unwrap();
    store.grant_role("analyst", "root").await.unwrap();
    store
        .grant(&select_on("marts.orders", "ana", None))
        .await
        .unwrap();
    store
        .grant(&select_on("marts.orders", "root", None))
        .await
        .unwrap();
    store
        .create_token(&new_token("ana", "ci", "aa11"))
        .await
        .unwrap();
    store
        .create_token(&new_token("root", "ops", "bb22"))
        .await
        .unwrap();

    assert!(store.drop_user("ana").await.unwrap());
    assert!(!store.drop_user("ana").await.unwrap());
    assert_eq!(store.user("ana").await.unwrap(), None);
    assert_eq!(
        store.roles().await.unwrap(),
        [Role {
            name: "analyst".into(),
            members: vec!["root".into()],
        }]
    );
    assert!(store.grants(Some("ana")).await.unwrap().is_empty());
    assert_eq!(store.grants(None).await.unwrap().len(), 1);
    assert!(store.tokens(Some("ana")).await.unwrap().is_empty());
    assert_eq!(store.token_by_hash("aa11").await.unwrap(), None);
    assert_eq!(store.tokens(None).await.unwrap().len(), 1);
    assert_eq!(db.count("SELECT COUNT(*) FROM users").await, 1);

    // The name is free again.
    store.create_user(&new_user("ana")).await.unwrap();
    assert!(store.roles_of("ana").await.unwrap().is_empty());
    store.close().await;
}

async fn role_membership_is_transitive_and_never_circular(db: &TestDb) {
    let store = db.connect().await;
    for role in ["reader", "analyst", "lead", "auditor"] {
        store.create_role(role).await.unwrap();
    }
    store.create_user(&new_user("ana")).await.unwrap();
    // ana ∈ analyst ∈ reader; lead ∈ analyst; auditor ∈ reader.
    assert!(store.grant_role("reader", "analyst").await.unwrap());
    assert!(store.grant_role("analyst", "ana").await.unwrap());
    assert!(store.grant_role("analyst", "lead").await.unwrap());
    assert!(store.grant_role("reader", "auditor").await.unwrap());
    // Granting again changes nothing.
    assert!(!store.grant_role("analyst", "ana").await.unwrap());
    // A member need not exist (yet).
    assert!(store.grant_role("lead", "bob").await.unwrap());

    assert_eq!(
        store.roles_of("ana").await.unwrap(),
        set(&["analyst", "reader"])
    );
    assert_eq!(
        store.roles_of("bob").await.unwrap(),
        set(&["analyst", "lead", "reader"])
    );
    assert_eq!(store.roles_of("analyst").await.unwrap(), set(&["reader"]));
    assert!(store.roles_of("reader").await.unwrap().is_empty());
    assert!(store.roles_of("nobody").await.unwrap().is_empty());

    assert_eq!(
        store.roles().await.unwrap(),
        [
            Role {
                name: "analyst".into(),
                members: vec!["ana".into(), "lead".into()],
            },
            Role {
                name: "auditor".into(),
                members: vec![],
            },
            Role {
                name: "lead".into(),
                members: vec!["bob".into()],
            },
            Role {
                name: "reader".into(),
                members: vec!["analyst".into(), "auditor".into()],
            },
        ]
    );

    // Cycles: directly, through one role, through two.
    for (role, member) in [
        ("reader", "reader"),
        ("analyst", "reader"),
        ("lead", "reader"),
        ("lead", "analyst"),
    ] {
        let err = store.grant_role(role, member).await.unwrap_err();
        assert!(
            matches!(&err, Error::RoleCycle { role: r, member: m } if r == role && m == member),
            "{role} <- {member}: {err:?}"
        );
        assert_eq!(err.class(), ErrorClass::User);
        assert!(err.to_string().contains("cycle"), "{err}");
    }
    let err = store.grant_role("lead", "analyst").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("`lead` is already a member of `analyst`"),
        "{err}"
    );
    // Not a cycle: a role two branches share.
    assert!(store.grant_role("auditor", "lead").await.unwrap());
    assert_eq!(
        store.roles_of("bob").await.unwrap(),
        set(&["analyst", "auditor", "lead", "reader"])
    );

    // Only roles take members.
    let err = store.grant_role("ghost", "ana").await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { kind: "role", name } if name == "ghost"),
        "{err:?}"
    );
    let err = store.grant_role("ana", "bob").await.unwrap_err();
    assert!(
        matches!(err, Error::NotFound { kind: "role", .. }),
        "{err:?}"
    );

    // Revoking.
    assert!(store.revoke_role("analyst", "ana").await.unwrap());
    assert!(!store.revoke_role("analyst", "ana").await.unwrap());
    assert!(store.roles_of("ana").await.unwrap().is_empty());

    // Dropping a role removes its members, its own memberships and its grants.
    store
        .grant(&select_on("marts.orders", "analyst", None))
        .await
        .unwrap();
    store
        .grant(&select_on("marts.orders", "lead", None))
        .await
        .unwrap();
    assert!(store.drop_role("analyst").await.unwrap());
    assert!(!store.drop_role("analyst").await.unwrap());
    assert_eq!(
        store.roles_of("bob").await.unwrap(),
        set(&["auditor", "lead", "reader"])
    );
    assert_eq!(
        store.roles_of("lead").await.unwrap(),
        set(&["auditor", "reader"])
    );
    let grantees: Vec<String> = store
        .grants(None)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.grant.grantee)
        .collect();
    assert_eq!(grantees, ["lead"]);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM role_members WHERE role = 'analyst' OR member = 'analyst'")
            .await,
        0
    );
    store.close().await;
}

async fn grants_are_idempotent_and_revoked_by_columns(db: &TestDb) {
    let store = db.connect().await;
    let before = Utc::now() - Duration::seconds(1);
    let all = select_on("Marts.Orders", "analyst", None);
    assert!(store.grant(&all).await.unwrap());
    assert!(!store.grant(&all).await.unwrap(), "same grant again");
    // The same grant by someone else is still the same grant.
    assert!(
        !store
            .grant(&Grant {
                granted_by: "bob".into(),
                ..all.clone()
            })
            .await
            .unwrap()
    );

    // Column lists are normalized: lower-case, sorted, without duplicates.
    let some = select_on("marts.orders", "analyst", Some(&["id", "Amount", "amount"]));
    assert!(store.grant(&some).await.unwrap());
    let reordered = select_on("marts.orders", "analyst", Some(&["amount", "id"]));
    assert!(!store.grant(&reordered).await.unwrap());
    let fewer = select_on("marts.orders", "analyst", Some(&["id"]));
    assert!(store.grant(&fewer).await.unwrap());
    let usage = Grant {
        privilege: Privilege::Usage,
        object_kind: ObjectKind::Namespace,
        object: "marts".into(),
        columns: None,
        grantee: "analyst".into(),
        granted_by: "admin".into(),
    };
    assert!(store.grant(&usage).await.unwrap());
    let other = Grant {
        privilege: Privilege::All,
        ..select_on("raw.events", "loader", None)
    };
    assert!(store.grant(&other).await.unwrap());

    let analyst = store.grants(Some("analyst")).await.unwrap();
    let got: Vec<(Privilege, ObjectKind, &str, Option<Vec<String>>)> = analyst
        .iter()
        .map(|r| {
            (
                r.grant.privilege,
                r.grant.object_kind,
                r.grant.object.as_str(),
                r.grant.columns.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Privilege::Usage, ObjectKind::Namespace, "marts", None),
            (Privilege::Select, ObjectKind::Table, "marts.orders", None),
            (
                Privilege::Select,
                ObjectKind::Table,
                "marts.orders",
                Some(vec!["amount".into(), "id".into()])
            ),
            (
                Privilege::Select,
                ObjectKind::Table,
                "marts.orders",
                Some(vec!["id".into()])
            ),
        ]
    );
    assert!(analyst.iter().all(|r| r.grant.granted_by == "admin"));
    assert!(analyst.iter().all(|r| r.granted_at >= before));
    assert_eq!(store.grants(None).await.unwrap().len(), 5);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM grants WHERE privilege = 'ALL' AND grantee = 'loader'")
            .await,
        1,
        "privileges are stored upper-case"
    );

    // Revoking matches the columns exactly.
    assert!(store.revoke(&reordered).await.unwrap());
    assert!(!store.revoke(&reordered).await.unwrap());
    assert!(
        !store
            .revoke(&select_on("marts.orders", "analyst", Some(&["amount"])))
            .await
            .unwrap()
    );
    assert!(store.revoke(&all).await.unwrap());
    let left: Vec<Option<Vec<String>>> = store
        .grants(Some("analyst"))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.grant.object_kind == ObjectKind::Table)
        .map(|r| r.grant.columns)
        .collect();
    assert_eq!(left, [Some(vec!["id".to_owned()])]);

    // Invalid grants are refused before they reach the database.
    let on_namespace = Grant {
        columns: Some(vec!["id".into()]),
        ..usage.clone()
    };
    let err = store.grant(&on_namespace).await.unwrap_err();
    assert!(matches!(err, Error::InvalidGrant { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::User);
    let err = store
        .grant(&select_on("marts.orders", "analyst", Some(&[])))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidGrant { .. }), "{err:?}");
    assert_eq!("usage".parse::<Privilege>().unwrap().to_string(), "USAGE");
    store.close().await;
}

async fn row_policies_and_column_masks_are_replaced_and_dropped(db: &TestDb) {
    let store = db.connect().await;
    let eu = RowPolicy {
        name: "eu_only".into(),
        table: "marts.orders".into(),
        predicate: "region = 'EU'".into(),
        applies_to: "analyst".into(),
    };
    let mine = RowPolicy {
        name: "own_rows".into(),
        table: "Marts.Customers".into(),
        predicate: "owner = current_user()".into(),
        applies_to: "*".into(),
    };
    assert!(store.put_row_policy(&eu).await.unwrap());
    assert!(store.put_row_policy(&mine).await.unwrap());
    assert!(!store.put_row_policy(&eu).await.unwrap(), "unchanged");
    let mine_stored = RowPolicy {
        table: "marts.customers".into(),
        ..mine.clone()
    };
    assert_eq!(
        store.row_policies().await.unwrap(),
        [mine_stored.clone(), eu.clone()]
    );

    let eu_or_uk = RowPolicy {
        predicate: "region IN ('EU', 'UK')".into(),
        ..eu.clone()
    };
    assert!(store.put_row_policy(&eu_or_uk).await.unwrap());
    let for_everyone = RowPolicy {
        applies_to: "*".into(),
        ..eu_or_uk.clone()
    };
    assert!(store.put_row_policy(&for_everyone).await.unwrap());
    assert_eq!(
        store.row_policies().await.unwrap(),
        [mine_stored.clone(), for_everyone]
    );
    assert!(
        store
            .drop_row_policy("marts.orders", "eu_only")
            .await
            .unwrap()
    );
    assert!(
        !store
            .drop_row_policy("marts.orders", "eu_only")
            .await
            .unwrap()
    );
    assert!(
        store
            .drop_row_policy("MARTS.customers", "own_rows")
            .await
            .unwrap()
    );
    assert!(store.row_policies().await.unwrap().is_empty());

    let email = ColumnMask {
        table: "marts.customers".into(),
        column: "Email".into(),
        mask: "email".into(),
        exempt: vec!["support".into(), "admin".into(), "support".into()],
    };
    let phone = ColumnMask {
        table: "marts.customers".into(),
        column: "phone".into(),
        mask: "partial(3,2)".into(),
        exempt: vec![],
    };
    assert!(store.put_column_mask(&email).await.unwrap());
    assert!(store.put_column_mask(&phone).await.unwrap());
    assert!(!store.put_column_mask(&email).await.unwrap(), "unchanged");
    let email_stored = ColumnMask {
        column: "email".into(),
        exempt: vec!["admin".into(), "support".into()],
        ..email.clone()
    };
    assert_eq!(
        store.column_masks().await.unwrap(),
        [email_stored.clone(), phone.clone()]
    );

    let hashed = ColumnMask {
        mask: "expr:sha256(email)".into(),
        exempt: vec!["admin".into()],
        ..email_stored.clone()
    };
    assert!(store.put_column_mask(&hashed).await.unwrap());
    assert_eq!(
        store.column_masks().await.unwrap(),
        [hashed.clone(), phone.clone()]
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM column_masks").await, 2);
    assert!(
        store
            .drop_column_mask("marts.customers", "EMAIL")
            .await
            .unwrap()
    );
    assert!(
        !store
            .drop_column_mask("marts.customers", "email")
            .await
            .unwrap()
    );
    assert_eq!(store.column_masks().await.unwrap(), [phone]);
    store.close().await;
}

async fn tokens_are_valid_until_expired_or_revoked(db: &TestDb) {
    let store = db.connect().await;
    store.create_user(&new_user("ana")).await.unwrap();
    store.create_user(&new_user("bob")).await.unwrap();
    let now = Utc::now();
    let hash = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";

    let ci = store
        .create_token(&new_token("ana", "ci", hash))
        .await
        .unwrap();
    let soon = store
        .create_token(&NewToken {
            expires_at: Some(now + Duration::hours(1)),
            ..new_token("ana", "laptop", "abc123")
        })
        .await
        .unwrap();
    let old = store
        .create_token(&NewToken {
            expires_at: Some(now - Duration::seconds(1)),
            ..new_token("bob", "old", "def456")
        })
        .await
        .unwrap();
    assert_ne!(ci, soon);
    assert_eq!(ci.to_string().parse::<TokenId>().unwrap(), ci);

    // Hashes are looked up in any case.
    let token = store
        .token_by_hash(&hash.to_lowercase())
        .await
        .unwrap()
        .expect("the token exists");
    assert_eq!(token.id, ci);
    assert_eq!(token.user, "ana");
    assert_eq!(token.name, "ci");
    assert!(token.is_valid_at(Utc::now()));
    assert_eq!(token.last_used_at, None);
    assert_eq!(token.revoked_at, None);
    assert!(store.token_by_hash("ffff").await.unwrap().is_none());

    let laptop = store.token_by_hash("ABC123").await.unwrap().unwrap();
    assert!(laptop.is_valid_at(Utc::now()));
    assert!(!laptop.is_valid_at(now + Duration::hours(2)));
    let expired = store.token_by_hash("def456").await.unwrap().unwrap();
    assert_eq!(expired.id, old);
    assert!(
        !expired.is_valid_at(Utc::now()),
        "expired tokens are returned but invalid"
    );

    // Listing.
    let ana: Vec<TokenId> = store
        .tokens(Some("ana"))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ana, [ci, soon]);
    assert_eq!(store.tokens(None).await.unwrap().len(), 3);

    // Touching records last use without changing the access version.
    let version = store.access_version().await.unwrap();
    assert!(store.touch_token(&ci).await.unwrap());
    assert!(
        !store
            .touch_token(&TokenId(uuid::Uuid::new_v4()))
            .await
            .unwrap()
    );
    let touched = store.token_by_hash(hash).await.unwrap().unwrap();
    let used = touched.last_used_at.expect("touched");
    assert!(used >= touched.created_at);
    assert_eq!(store.access_version().await.unwrap(), version);

    // Revoking once; the time stays.
    assert!(store.revoke_token(&ci).await.unwrap());
    let revoked = store.token_by_hash(hash).await.unwrap().unwrap();
    let revoked_at = revoked.revoked_at.expect("revoked");
    assert!(!revoked.is_valid_at(Utc::now()));
    assert!(!store.revoke_token(&ci).await.unwrap());
    assert_eq!(
        store.token_by_hash(hash).await.unwrap().unwrap().revoked_at,
        Some(revoked_at)
    );
    assert!(
        !store
            .revoke_token(&TokenId(uuid::Uuid::new_v4()))
            .await
            .unwrap()
    );

    // Refusals.
    let err = store
        .create_token(&new_token("ana", "again", &hash.to_lowercase()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::AlreadyExists {
                kind: "token hash",
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .create_token(&new_token("ghost", "x", "0123"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { kind: "user", name } if name == "ghost"),
        "{err:?}"
    );
    store.create_role("analyst").await.unwrap();
    let err = store
        .create_token(&new_token("analyst", "x", "0123"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(store.tokens(None).await.unwrap().len(), 3);
    store.close().await;
}

fn entry(principal: &str, surface: &str, statement: &str, outcome: AuditOutcome) -> AuditEntry {
    AuditEntry {
        principal: principal.into(),
        surface: surface.into(),
        statement: statement.into(),
        tables: vec!["marts.orders".into()],
        rows: (outcome == AuditOutcome::Ok).then_some(10),
        outcome,
        error: (outcome != AuditOutcome::Ok).then(|| "permission denied".into()),
        duration_ms: Some(12),
    }
}

async fn audit_log_is_newest_first_and_filtered(db: &TestDb) {
    let store = db.connect().await;
    let version = store.access_version().await.unwrap();
    let entries = [
        entry("ana", "pgwire", "SELECT 1", AuditOutcome::Ok),
        entry(
            "bob",
            "rest",
            "SELECT * FROM marts.orders",
            AuditOutcome::Denied,
        ),
        entry("ana", "flight", "SELECT * FROM nope", AuditOutcome::Error),
        AuditEntry {
            tables: vec![],
            rows: None,
            duration_ms: None,
            ..entry("ana", "pgwire", "SHOW TABLES", AuditOutcome::Ok)
        },
    ];
    for e in &entries {
        store.record_audit(e).await.unwrap();
    }

    let all = store.audit(AuditFilter::new()).await.unwrap();
    let got: Vec<&AuditEntry> = all.iter().map(|r| &r.entry).collect();
    assert_eq!(got, [&entries[3], &entries[2], &entries[1], &entries[0]]);
    assert!(
        all.windows(2)
            .all(|w| w[0].id > w[1].id && w[0].at >= w[1].at)
    );

    let ana = store
        .audit(AuditFilter::new().principal("ana"))
        .await
        .unwrap();
    let got: Vec<&AuditEntry> = ana.iter().map(|r| &r.entry).collect();
    assert_eq!(got, [&entries[3], &entries[2], &entries[0]]);

    let ana_pgwire = store
        .audit(
            AuditFilter::new()
                .principal("ana")
                .surface("pgwire")
                .limit(1),
        )
        .await
        .unwrap();
    assert_eq!(ana_pgwire.len(), 1);
    assert_eq!(ana_pgwire[0].entry, entries[3]);

    let rest = store
        .audit(AuditFilter::new().surface("rest"))
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].entry.outcome, AuditOutcome::Denied);
    assert!(
        store
            .audit(AuditFilter::new().principal("nobody"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.access_version().await.unwrap(),
        version,
        "the audit log is not access state"
    );

    // A batch larger than one insert statement holds keeps every entry, in order.
    let batch: Vec<AuditEntry> = (0..75)
        .map(|i| entry("cai", "pgwire", &format!("SELECT {i}"), AuditOutcome::Ok))
        .collect();
    store.record_audits(&batch).await.unwrap();
    let cai = store
        .audit(AuditFilter::new().principal("cai").limit(100))
        .await
        .unwrap();
    let got: Vec<&AuditEntry> = cai.iter().map(|r| &r.entry).collect();
    let want: Vec<&AuditEntry> = batch.iter().rev().collect();
    assert_eq!(got, want);
    store.close().await;
}

/// Runs `change` and asserts that the access version went up (by exactly one).
async fn bumps<F: Future>(store: &MetaStore, what: &str, change: F) -> F::Output {
    let before = store.access_version().await.unwrap();
    let output = change.await;
    let after = store.access_version().await.unwrap();
    assert_eq!(after, before + 1, "{what} bumps the access version");
    output
}

/// Runs `change` and asserts that the access version stayed.
async fn keeps<F: Future>(store: &MetaStore, what: &str, change: F) -> F::Output {
    let before = store.access_version().await.unwrap();
    let output = change.await;
    let after = store.access_version().await.unwrap();
    assert_eq!(after, before, "{what} leaves the access version");
    output
}

async fn every_access_change_bumps_the_version(db: &TestDb) {
    let store = db.connect().await;
    let s = &store;
    assert_eq!(s.access_version().await.unwrap(), 0);

    bumps(s, "create_user", s.create_user(&new_user("ana")))
        .await
        .unwrap();
    bumps(s, "set_password", s.set_password("ana", None))
        .await
        .unwrap();
    bumps(
        s,
        "set_user_attributes",
        s.set_user_attributes("ana", BTreeMap::new()),
    )
    .await
    .unwrap();
    bumps(s, "set_user_disabled", s.set_user_disabled("ana", true))
        .await
        .unwrap();
    bumps(s, "create_role", s.create_role("analyst"))
        .await
        .unwrap();
    assert!(
        bumps(s, "grant_role", s.grant_role("analyst", "ana"))
            .await
            .unwrap()
    );
    assert!(
        bumps(s, "revoke_role", s.revoke_role("analyst", "ana"))
            .await
            .unwrap()
    );
    let grant = select_on("marts.orders", "analyst", None);
    assert!(bumps(s, "grant", s.grant(&grant)).await.unwrap());
    assert!(bumps(s, "revoke", s.revoke(&grant)).await.unwrap());
    let policy = RowPolicy {
        name: "eu".into(),
        table: "marts.orders".into(),
        predicate: "region = 'EU'".into(),
        applies_to: "*".into(),
    };
    assert!(
        bumps(s, "put_row_policy", s.put_row_policy(&policy))
            .await
            .unwrap()
    );
    assert!(
        bumps(
            s,
            "drop_row_policy",
            s.drop_row_policy("marts.orders", "eu")
        )
        .await
        .unwrap()
    );
    let mask = ColumnMask {
        table: "marts.orders".into(),
        column: "email".into(),
        mask: "hash".into(),
        exempt: vec![],
    };
    assert!(
        bumps(s, "put_column_mask", s.put_column_mask(&mask))
            .await
            .unwrap()
    );
    assert!(
        bumps(
            s,
            "drop_column_mask",
            s.drop_column_mask("marts.orders", "email")
        )
        .await
        .unwrap()
    );
    let token = bumps(
        s,
        "create_token",
        s.create_token(&new_token("ana", "ci", "aa")),
    )
    .await
    .unwrap();
    assert!(
        bumps(s, "revoke_token", s.revoke_token(&token))
            .await
            .unwrap()
    );
    assert!(bumps(s, "drop_role", s.drop_role("analyst")).await.unwrap());
    assert!(bumps(s, "drop_user", s.drop_user("ana")).await.unwrap());

    // What changes nothing, and what fails, leaves the version.
    let version = s.access_version().await.unwrap();
    assert_eq!(version, 17);
    s.create_role("reader").await.unwrap();
    s.grant_role("reader", "bob").await.unwrap();
    s.grant(&grant).await.unwrap();
    s.put_row_policy(&policy).await.unwrap();
    s.put_column_mask(&mask).await.unwrap();
    assert!(
        !keeps(s, "a repeated grant_role", s.grant_role("reader", "bob"))
            .await
            .unwrap()
    );
    assert!(!keeps(s, "a repeated grant", s.grant(&grant)).await.unwrap());
    assert!(
        !keeps(s, "an unchanged policy", s.put_row_policy(&policy))
            .await
            .unwrap()
    );
    assert!(
        !keeps(s, "an unchanged mask", s.put_column_mask(&mask))
            .await
            .unwrap()
    );
    assert!(
        !keeps(s, "dropping a missing user", s.drop_user("ghost"))
            .await
            .unwrap()
    );
    assert!(
        !keeps(
            s,
            "revoking a missing grant",
            s.revoke(&select_on("x.y", "z", None))
        )
        .await
        .unwrap()
    );
    keeps(s, "a refused cycle", s.grant_role("reader", "reader"))
        .await
        .unwrap_err();
    keeps(s, "a duplicate role", s.create_role("reader"))
        .await
        .unwrap_err();
    keeps(s, "updating a missing user", s.set_password("ghost", None))
        .await
        .unwrap_err();
    keeps(
        s,
        "an audit entry",
        s.record_audit(&entry("bob", "cli", "x", AuditOutcome::Ok)),
    )
    .await
    .unwrap();

    // The version survives reconnecting, and another connection sees it.
    let version = s.access_version().await.unwrap();
    assert_eq!(version, 17 + 5);
    store.close().await;
    let other = db.connect().await;
    assert_eq!(other.access_version().await.unwrap(), version);
    other.close().await;
}
