//! The durable index (redb): which blobs are complete and when they were last read, the media
//! type of each cached manifest, and tag→digest mappings.
//!
//! The piece files are the truth about content; this index is the truth about bookkeeping and
//! is reconciled against the files at start-up.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// digest hex → (plain size, last access in unix milliseconds)
const BLOBS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("blobs");
/// digest hex → manifest media type
const MANIFESTS: TableDefinition<&str, &str> = TableDefinition::new("manifests");
/// `<registry>/<repository>:<tag>` → JSON [`TagEntry`]
const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
/// digest hex of a pinned blob (never evicted) → when it was pinned (unix milliseconds)
const PINS: TableDefinition<&str, u64> = TableDefinition::new("pins");

/// A redb failure, boxed: redb's error is large and this one travels through every result.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct IndexError(Box<redb::Error>);

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for IndexError {
            fn from(e: $t) -> Self {
                IndexError(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type IndexResult<T> = Result<T, IndexError>;

pub struct Index {
    db: Database,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagEntry {
    pub digest: String,
    pub media_type: String,
    /// When the upstream last confirmed this mapping (unix milliseconds).
    pub confirmed_at: u64,
}

impl Index {
    pub fn open(path: &Path) -> IndexResult<Self> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(BLOBS)?;
        tx.open_table(MANIFESTS)?;
        tx.open_table(TAGS)?;
        tx.open_table(PINS)?;
        tx.commit()?;
        Ok(Index { db })
    }

    pub fn blobs(&self) -> IndexResult<Vec<(String, u64, u64)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(BLOBS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let (size, access) = v.value();
            out.push((k.value().to_string(), size, access));
        }
        Ok(out)
    }

    /// Inserts or updates blob rows (also used to persist access times in batches).
    pub fn put_blobs(&self, rows: &[(String, u64, u64)]) -> IndexResult<()> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(BLOBS)?;
            for (hex, size, access) in rows {
                table.insert(hex.as_str(), (*size, *access))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn remove_blobs(&self, hexes: &[String]) -> IndexResult<()> {
        self.remove_rows(BLOBS, hexes)
    }

    pub fn manifest_media_type(&self, hex: &str) -> IndexResult<Option<String>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(MANIFESTS)?;
        Ok(table.get(hex)?.map(|v| v.value().to_string()))
    }

    pub fn put_manifest(&self, hex: &str, media_type: &str) -> IndexResult<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(MANIFESTS)?.insert(hex, media_type)?;
        tx.commit()?;
        Ok(())
    }

    /// Every cached manifest's digest hex.
    pub fn manifests(&self) -> IndexResult<Vec<String>> {
        self.keys(MANIFESTS)
    }

    fn keys<V: redb::Value + 'static>(
        &self,
        definition: TableDefinition<'_, &'static str, V>,
    ) -> IndexResult<Vec<String>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(definition)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(row?.0.value().to_string());
        }
        Ok(out)
    }

    pub fn remove_manifests(&self, hexes: &[String]) -> IndexResult<()> {
        self.remove_rows(MANIFESTS, hexes)
    }

    /// Every tag key with its mapping (`None` for a row that no longer parses).
    pub fn tags(&self) -> IndexResult<Vec<(String, Option<TagEntry>)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(TAGS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), serde_json::from_slice(v.value()).ok()));
        }
        Ok(out)
    }

    pub fn remove_tags(&self, keys: &[String]) -> IndexResult<()> {
        self.remove_rows(TAGS, keys)
    }

    fn remove_rows<V: redb::Value + 'static>(
        &self,
        definition: TableDefinition<'_, &'static str, V>,
        keys: &[String],
    ) -> IndexResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(definition)?;
            for key in keys {
                table.remove(key.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every pinned digest hex.
    pub fn pins(&self) -> IndexResult<Vec<String>> {
        self.keys(PINS)
    }

    pub fn put_pin(&self, hex: &str, at: u64) -> IndexResult<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(PINS)?.insert(hex, at)?;
        tx.commit()?;
        Ok(())
    }

    pub fn remove_pin(&self, hex: &str) -> IndexResult<()> {
        self.remove_rows(PINS, &[hex.to_string()])
    }

    pub fn tag(&self, key: &str) -> IndexResult<Option<TagEntry>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(TAGS)?;
        Ok(table
            .get(key)?
            .and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    pub fn put_tag(&self, key: &str, entry: &TagEntry) -> IndexResult<()> {
        let json = serde_json::to_vec(entry).unwrap_or_default();
        let tx = self.db.begin_write()?;
        tx.open_table(TAGS)?.insert(key, json.as_slice())?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let index = Index::open(&path).unwrap();
            index
                .put_blobs(&[("aa".into(), 10, 1), ("bb".into(), 20, 2)])
                .unwrap();
            index.remove_blobs(&["aa".into()]).unwrap();
            index
                .put_manifest("cc", "application/vnd.oci.image.manifest.v1+json")
                .unwrap();
            let tag = TagEntry {
                digest: "sha256:cc".into(),
                media_type: "m".into(),
                confirmed_at: 5,
            };
            index.put_tag("r/a:v1", &tag).unwrap();
        }
        let index = Index::open(&path).unwrap();
        assert_eq!(index.blobs().unwrap(), vec![("bb".to_string(), 20, 2)]);
        assert!(index.manifest_media_type("cc").unwrap().is_some());
        assert_eq!(index.tag("r/a:v1").unwrap().unwrap().confirmed_at, 5);
        assert_eq!(index.tag("r/a:v2").unwrap(), None);
    }
}
