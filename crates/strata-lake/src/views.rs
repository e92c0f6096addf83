//! Persisted SQL views: `<lake>/_strata/views/<namespace>/<name>.json`.
//!
//! Views live in the lake, beside the tables they read, so that every process and every
//! later session sees the same definitions, on local disk or object storage alike.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deltalake::{ObjectStore, Path};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::lake::INTERNAL_DIR;
use crate::{Error, Lake, Result, TableName};

/// A stored view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    /// Its name.
    pub name: TableName,
    /// The defining query (a SELECT).
    pub sql: String,
    /// When it was (re)defined.
    pub created_at: DateTime<Utc>,
    /// Changes whenever the view is redefined (the stored file's entity tag); not stored.
    #[serde(skip)]
    pub stamp: Option<String>,
}

fn stamp_of(meta: &deltalake::ObjectMeta) -> String {
    meta.e_tag.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
            meta.size
        )
    })
}

fn view_path(t: &TableName) -> Path {
    Path::from(format!(
        "{INTERNAL_DIR}/views/{}/{}.json",
        t.namespace, t.name
    ))
}

impl Lake {
    /// Stores (or, with `replace`, replaces) a view.
    pub async fn put_view(&self, name: &TableName, sql: &str, replace: bool) -> Result<()> {
        crate::lake::check_namespace(&name.namespace)?;
        if self.table_exists(name).await? {
            return Err(Error::TableExists(name.clone()));
        }
        if !replace && self.view(name).await?.is_some() {
            return Err(Error::Invalid(format!(
                "view `{name}` already exists; use CREATE OR REPLACE VIEW to change it"
            )));
        }
        let def = ViewDef {
            name: name.clone(),
            sql: sql.to_string(),
            created_at: Utc::now(),
            stamp: None,
        };
        let body = serde_json::to_vec_pretty(&def).expect("views serialize");
        self.store()
            .put(&view_path(name), body.into())
            .await
            .map_err(Error::store(format!("saving view `{name}`")))?;
        Ok(())
    }

    /// Reads one view, if it exists.
    pub async fn view(&self, name: &TableName) -> Result<Option<ViewDef>> {
        match self.store().get(&view_path(name)).await {
            Ok(r) => {
                let stamp = stamp_of(&r.meta);
                let bytes = r
                    .bytes()
                    .await
                    .map_err(Error::store(format!("reading view `{name}`")))?;
                let mut def: ViewDef = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Corrupt(format!("view file of `{name}` is not valid: {e}"))
                })?;
                def.stamp = Some(stamp);
                Ok(Some(def))
            }
            Err(deltalake::ObjectStoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::Store {
                context: format!("reading view `{name}`"),
                source: e,
            }),
        }
    }

    /// The names of all views (or those of one namespace), each with a stamp that changes
    /// whenever the view is redefined: one listing, no reads.
    pub async fn view_stamps(&self, ns: Option<&str>) -> Result<BTreeMap<TableName, String>> {
        let prefix = match ns {
            Some(ns) => Path::from(format!("{INTERNAL_DIR}/views/{ns}")),
            None => Path::from(format!("{INTERNAL_DIR}/views")),
        };
        let metas: Vec<_> = self
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(Error::store("listing views"))?;
        let mut out = BTreeMap::new();
        for m in metas {
            let parts: Vec<_> = m.location.parts().collect();
            let [.., ns, file] = parts.as_slice() else {
                continue;
            };
            let Some(name) = file.as_ref().strip_suffix(".json") else {
                continue;
            };
            if let Ok(t) = TableName::new(ns.as_ref(), name) {
                out.insert(t, stamp_of(&m));
            }
        }
        Ok(out)
    }

    /// All views, or those of one namespace.
    pub async fn list_views(&self, ns: Option<&str>) -> Result<Vec<ViewDef>> {
        let prefix = match ns {
            Some(ns) => Path::from(format!("{INTERNAL_DIR}/views/{ns}")),
            None => Path::from(format!("{INTERNAL_DIR}/views")),
        };
        let store = self.store();
        let metas: Vec<_> = store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(Error::store("listing views"))?;
        let mut out = Vec::new();
        for m in metas {
            if !m.location.as_ref().ends_with(".json") {
                continue;
            }
            let bytes = store
                .get(&m.location)
                .await
                .map_err(Error::store("reading a view"))?
                .bytes()
                .await
                .map_err(Error::store("reading a view"))?;
            let mut def: ViewDef = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Corrupt(format!("view file `{}` is not valid: {e}", m.location))
            })?;
            def.stamp = Some(stamp_of(&m));
            out.push(def);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a view. Returns whether it existed.
    pub async fn drop_view(&self, name: &TableName) -> Result<bool> {
        if self.view(name).await?.is_none() {
            return Ok(false);
        }
        self.store()
            .delete(&view_path(name))
            .await
            .map_err(Error::store(format!("dropping view `{name}`")))?;
        Ok(true)
    }
}
