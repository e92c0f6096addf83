//! The access policy in force, loaded from the metadata store and reloaded when it changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use strata_engine::{
    AccessPolicy, ColumnMask, GrantRule, MaskKind, Privilege, RowFilter, Securable,
};
use strata_lake::TableName;
use strata_meta::MetaStore;
use tokio::sync::RwLock;

use crate::Result;

/// How often servers look for access changes (grants, revoked tokens, disabled users).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The policy, and the metadata store's access version it was loaded at.
#[derive(Debug)]
pub struct Policies {
    meta: Arc<MetaStore>,
    current: RwLock<(i64, Arc<AccessPolicy>)>,
    /// The latest access version seen by the poller.
    seen: AtomicI64,
}

impl Policies {
    /// Loads the policy from `meta`.
    pub async fn load(meta: Arc<MetaStore>) -> Result<Arc<Self>> {
        let version = meta.access_version().await?;
        let policy = Arc::new(read_policy(&meta).await?);
        Ok(Arc::new(Self {
            meta,
            current: RwLock::new((version, policy)),
            seen: AtomicI64::new(version),
        }))
    }

    /// The policy in force (reloaded first if the store changed since), with the access
    /// version it was loaded at.
    pub async fn current(&self) -> Result<(i64, Arc<AccessPolicy>)> {
        let seen = self.seen.load(Ordering::Acquire);
        {
            let guard = self.current.read().await;
            if guard.0 >= seen {
                return Ok((guard.0, Arc::clone(&guard.1)));
            }
        }
        let mut guard = self.current.write().await;
        if guard.0 < seen {
            let version = self.meta.access_version().await?;
            *guard = (version, Arc::new(read_policy(&self.meta).await?));
        }
        Ok((guard.0, Arc::clone(&guard.1)))
    }

    /// The policy in force now, asking the store for its version first: for new
    /// connections, which must not start under a policy that changed a moment ago.
    pub async fn fresh(&self) -> Result<(i64, Arc<AccessPolicy>)> {
        let version = self.meta.access_version().await?;
        self.seen.fetch_max(version, Ordering::AcqRel);
        self.current().await
    }

    /// The access version last seen; it changes when anything about access changes.
    pub fn version(&self) -> i64 {
        self.seen.load(Ordering::Acquire)
    }

    /// Looks for changes every [`POLL_INTERVAL`] until the returned task is aborted.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            loop {
                tick.tick().await;
                match this.meta.access_version().await {
                    Ok(v) => {
                        this.seen.fetch_max(v, Ordering::AcqRel);
                    }
                    Err(e) => tracing::warn!("cannot read the access version: {e}"),
                }
            }
        })
    }
}

/// Reads grants, row policies and masks. Entries that no longer parse (a table renamed to
/// an invalid name, an unknown mask) fail closed: the grant is dropped, the mask hides
/// everything.
pub async fn read_policy(meta: &MetaStore) -> Result<AccessPolicy> {
    let mut policy = AccessPolicy::default();
    for g in meta.grants(None).await? {
        let g = g.grant;
        let Ok(privilege) = g.privilege.as_str().parse::<Privilege>() else {
            continue;
        };
        let on = match g.object_kind {
            strata_meta::ObjectKind::Namespace => Securable::Namespace(g.object.clone()),
            strata_meta::ObjectKind::Table => match table_name(&g.object) {
                Some(t) => Securable::Table(t),
                None => {
                    tracing::warn!("ignoring the grant on `{}`: not a table name", g.object);
                    continue;
                }
            },
        };
        policy.grants.push(GrantRule {
            privilege,
            on,
            columns: g.columns.clone(),
            grantee: g.grantee.clone(),
        });
    }
    for p in meta.row_policies().await? {
        let Some(table) = table_name(&p.table) else {
            continue;
        };
        policy.row_filters.push(RowFilter {
            table,
            name: p.name,
            predicate: p.predicate,
            applies_to: p.applies_to,
        });
    }
    for m in meta.column_masks().await? {
        let Some(table) = table_name(&m.table) else {
            continue;
        };
        let kind = m.mask.parse::<MaskKind>().unwrap_or_else(|e| {
            tracing::warn!("mask on `{}.{}`: {e}; showing NULL", m.table, m.column);
            MaskKind::Null
        });
        policy.masks.push(ColumnMask {
            table,
            column: m.column,
            kind,
            exempt: m.exempt,
        });
    }
    Ok(policy)
}

/// `ns.table` (or a bare table in `public`).
pub fn table_name(s: &str) -> Option<TableName> {
    match s.split_once('.') {
        Some((ns, t)) => TableName::new(ns, t).ok(),
        None => TableName::new(strata_engine::DEFAULT_NAMESPACE, s).ok(),
    }
}
