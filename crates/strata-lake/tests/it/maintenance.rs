//! OPTIMIZE (compaction) and VACUUM (deleting unreferenced files).

use std::time::Duration;

use strata_lake::{Error, WriteMode, WriteOptions};

use crate::common::{Ctx, TestResult, both_backends, data_files, people, query, query_latest, tn};

const ALL: &str = "select id, name from t order by id";

async fn optimize_compacts_small_files(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    for i in 0..5 {
        lake.write_batches(
            &t,
            vec![people(&[(i, "x"), (i + 100, "y")])],
            WriteMode::Append,
            &WriteOptions::default(),
        )
        .await?;
    }
    let before = query_latest(lake, &t, ALL).await?;
    assert_eq!(before.len(), 10);
    assert_eq!(lake.table_info(&t).await?.files, 5);

    let report = lake.optimize(&t).await?;
    assert_eq!((report.files_added, report.files_removed), (1, 5));
    let info = lake.table_info(&t).await?;
    assert_eq!((info.version, info.files, info.rows), (5, 1, 10));
    assert_eq!(query_latest(lake, &t, ALL).await?, before);
    assert_eq!(lake.history(&t, Some(1)).await?[0].operation, "OPTIMIZE");
    // The compacted files stay on storage (for time travel) until a vacuum.
    assert_eq!(data_files(lake, &t).await?.len(), 6);

    // Nothing left to compact: no new version.
    let again = lake.optimize(&t).await?;
    assert_eq!((again.files_added, again.files_removed), (0, 0));
    assert_eq!(lake.table_info(&t).await?.version, 5);
    Ok(())
}

async fn vacuum_guards_retention_and_deletes_old_files(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    let opts = WriteOptions::default();
    lake.write_batches(&t, vec![people(&[(1, "a")])], WriteMode::Append, &opts)
        .await?;
    lake.write_batches(&t, vec![people(&[(2, "b")])], WriteMode::Append, &opts)
        .await?;
    let old_files = data_files(lake, &t).await?;
    assert_eq!(old_files.len(), 2);
    lake.write_batches(&t, vec![people(&[(3, "c")])], WriteMode::Overwrite, &opts)
        .await?;
    let all_files = data_files(lake, &t).await?;
    assert_eq!(all_files.len(), 3);

    // Shorter than the table's 7-day minimum without `force`: refused, nothing deleted.
    let err = lake
        .vacuum(&t, Some(Duration::from_secs(3600)), false, false)
        .await
        .expect_err("too short");
    assert!(
        matches!(
            err,
            Error::RetentionTooShort { requested, minimum }
                if requested == Duration::from_secs(3600)
                    && minimum == Duration::from_secs(168 * 3600)
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("retention of 1 h is shorter than the table's minimum of 168 h")
            && err.to_string().contains("--force"),
        "{err}"
    );
    let err = lake
        .vacuum(&t, Some(Duration::ZERO), true, false)
        .await
        .expect_err("a dry run is guarded too");
    assert!(matches!(err, Error::RetentionTooShort { .. }), "{err:?}");

    // With the default retention the just-removed files are too young to go.
    let default = lake.vacuum(&t, None, true, false).await?;
    assert!(default.files.is_empty(), "{:?}", default.files);

    // A forced dry run lists the two overwritten files and deletes nothing.
    let dry = lake.vacuum(&t, Some(Duration::ZERO), true, true).await?;
    assert!(dry.dry_run);
    let mut listed: Vec<String> = dry
        .files
        .iter()
        .map(|f| f.rsplit('/').next().unwrap_or(f).to_string())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = old_files
        .iter()
        .map(|f| f.rsplit('/').next().unwrap_or(f).to_string())
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(data_files(lake, &t).await?, all_files);
    let v1 = lake.open_table_version(&t, 1).await?;
    assert_eq!(query(&v1, ALL).await?, ["1, a", "2, b"]);

    // Forced, zero retention: the old files are gone, the latest version still reads.
    let done = lake.vacuum(&t, Some(Duration::ZERO), false, true).await?;
    assert!(!done.dry_run);
    assert_eq!(done.files.len(), 2);
    let left = data_files(lake, &t).await?;
    assert_eq!(left.len(), 1);
    assert!(!old_files.iter().any(|f| left.contains(f)), "{left:?}");
    assert_eq!(query_latest(lake, &t, ALL).await?, ["3, c"]);
    // Time travel to before the overwrite now fails: its files were deleted.
    let v1 = lake.open_table_version(&t, 1).await?;
    assert!(query(&v1, ALL).await.is_err());
    // Vacuum commits its own operations but does not change the rows.
    let ops: Vec<String> = lake
        .history(&t, Some(2))
        .await?
        .into_iter()
        .map(|c| c.operation)
        .collect();
    assert_eq!(ops, ["VACUUM END", "VACUUM START"]);
    assert_eq!(lake.table_info(&t).await?.rows, 1);
    Ok(())
}

async fn zorder_rewrites_rows_in_key_order(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    let opts = WriteOptions::default();
    for rows in [
        &[(5, "e"), (1, "a"), (9, "i")][..],
        &[(3, "c"), (7, "g")],
        &[(2, "b"), (8, "h"), (4, "d"), (6, "f")],
    ] {
        lake.write_batches(&t, vec![people(rows)], WriteMode::Append, &opts)
            .await?;
    }
    let before = query_latest(lake, &t, ALL).await?;
    let report = lake.zorder(&t, &["id".to_string()]).await?;
    assert_eq!((report.files_added, report.files_removed), (1, 3));
    assert_eq!(query_latest(lake, &t, ALL).await?, before);
    // Read in file order, without ORDER BY: the rows come sorted by the key.
    let ids = query_latest(lake, &t, "select id from t").await?;
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    assert_eq!(lake.history(&t, Some(1)).await?[0].operation, "OPTIMIZE");

    let err = lake.zorder(&t, &["nope".to_string()]).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(err.to_string().contains("no column `nope`"), "{err}");
    Ok(())
}

/// Z-ordered files are laid out for lookups: pages of `LOOKUP_PAGE_ROWS` rows, each with an
/// offset index entry, and small dictionaries, so a reader decodes one small page per column
/// to find a key.
async fn zorder_writes_small_indexed_pages(ctx: Ctx) -> TestResult {
    use object_store::ObjectStoreExt;
    use strata_lake::deltalake::parquet::column::page::Page;
    use strata_lake::deltalake::parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
    use strata_lake::deltalake::parquet::file::reader::{FileReader, SerializedFileReader};

    let lake = &ctx.lake;
    let t = tn("raw.people");
    let rows: Vec<(i64, String)> = (0..5009).rev().map(|i| (i, format!("n{i}"))).collect();
    let rows: Vec<(i64, &str)> = rows.iter().map(|(i, n)| (*i, n.as_str())).collect();
    lake.write_batches(
        &t,
        vec![people(&rows)],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    let before = data_files(lake, &t).await?;
    lake.zorder(&t, &["id".to_string()]).await?;
    let written: Vec<String> = data_files(lake, &t)
        .await?
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    let bytes = lake
        .store()
        .get(&strata_lake::deltalake::Path::from(written[0].as_str()))
        .await?
        .bytes()
        .await?;
    let meta = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(&bytes)?;
    let offsets = meta.offset_index().ok_or("the file has no offset index")?;
    let expected_pages = 5009usize.div_ceil(strata_lake::LOOKUP_PAGE_ROWS);
    for (row_group, columns) in offsets.iter().enumerate() {
        for (column, index) in columns.iter().enumerate() {
            assert_eq!(
                index.page_locations().len(),
                expected_pages,
                "row group {row_group}, column {column}"
            );
        }
    }
    // High-cardinality columns keep no large dictionary: a lookup reads the dictionary page of
    // every column it touches, whichever data page holds the key.
    let reader = SerializedFileReader::new(bytes.clone())?;
    for row_group in 0..reader.num_row_groups() {
        for column in 0..meta.row_group(row_group).num_columns() {
            let mut pages = reader
                .get_row_group(row_group)?
                .get_column_page_reader(column)?;
            if let Some(Page::DictionaryPage { buf, .. }) = pages.get_next_page()? {
                assert!(
                    buf.len() <= 2 * strata_lake::LOOKUP_DICTIONARY_BYTES,
                    "row group {row_group}, column {column}: a dictionary of {} bytes",
                    buf.len()
                );
            }
        }
    }
    assert_eq!(
        query_latest(lake, &t, "select name from t where id = 4321").await?,
        ["n4321"]
    );
    Ok(())
}

both_backends!(
    optimize_compacts_small_files,
    zorder_rewrites_rows_in_key_order,
    zorder_writes_small_indexed_pages,
    vacuum_guards_retention_and_deletes_old_files,
);
