//! Reading an MLflow store's SQLite file before MLflow opens it, read-only and through SQLite
//! itself: whether a restore's database is sound and holds MLflow's tables, and which schema
//! revision a store is at, so that `up` can tell an out-of-date store from a fresh one.

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

/// A SQLite database opened read-only: nothing is written to it, not even a journal.
pub struct Database {
    connection: Connection,
}

impl Database {
    /// Opens `path`; an error says why it is not a readable SQLite database.
    pub fn open(path: &Path) -> Result<Self> {
        let not_readable = || format!("{} is not a readable SQLite database", path.display());
        if !path.is_file() {
            anyhow::bail!("{} is not a file", path.display());
        }
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(not_readable)?;
        // Reading the schema is where a file that is not SQLite, or is cut short, shows.
        let database = Database { connection };
        database.table_names().with_context(not_readable)?;
        Ok(database)
    }

    /// The names of its tables.
    pub fn table_names(&self) -> Result<Vec<String>> {
        let mut statement = self
            .connection
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")?;
        let names = statement
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(names)
    }

    /// How many rows `table` has (a name this toolkit chose, never a user's).
    pub fn count_rows(&self, table: &str) -> Result<u64> {
        let count: i64 = self.connection.query_row(
            &format!("SELECT count(*) FROM \"{}\"", table.replace('"', "\"\"")),
            [],
            |row| row.get(0),
        )?;
        Ok(u64::try_from(count)?)
    }

    /// SQLite's own check of every page and index (`PRAGMA quick_check`): the problems it
    /// found, none for a sound file.
    pub fn problems(&self) -> Result<Vec<String>> {
        let mut statement = self.connection.prepare("PRAGMA quick_check")?;
        let lines = statement
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(lines.into_iter().filter(|line| line != "ok").collect())
    }

    /// The schema revision MLflow's migrations (alembic) left in the store, `None` when it
    /// has no such table or row (a store MLflow never finished making).
    pub fn schema_revision(&self) -> Result<Option<String>> {
        if !self.table_names()?.iter().any(|t| t == "alembic_version") {
            return Ok(None);
        }
        let mut statement = self
            .connection
            .prepare("SELECT version_num FROM alembic_version")?;
        let mut revisions = statement
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        match revisions.len() {
            0 | 1 => Ok(revisions.pop()),
            n => anyhow::bail!("its alembic_version table has {n} rows, MLflow writes one"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of MLflow's schema (tables only), 512-byte pages so that its schema spans
    /// an interior page and leaves, made with Python's sqlite3.
    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/mlflow-schema.db");

    fn write(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mlflow.db");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_every_table_of_a_multi_page_schema() {
        let (_dir, path) = write(FIXTURE);
        let names = Database::open(&path).unwrap().table_names().unwrap();
        for table in [
            "experiments",
            "runs",
            "registered_models",
            "model_versions",
            "alembic_version",
        ] {
            assert!(names.iter().any(|n| n == table), "{table} not in {names:?}");
        }
    }

    #[test]
    fn what_is_not_a_sound_database_is_refused() {
        let (_dir, path) = write(b"{\"not\": \"sqlite\"}");
        let err = format!("{:#}", Database::open(&path).err().unwrap());
        assert!(err.contains("not a readable SQLite database"), "{err}");
        // Page 1 pointing at a page past the end: the schema cannot be read.
        let mut broken = FIXTURE.to_vec();
        broken[108..112].copy_from_slice(&9999u32.to_be_bytes());
        let (_dir, path) = write(&broken);
        assert!(Database::open(&path).is_err());
    }

    #[test]
    fn reads_the_schema_revision_and_leaves_the_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mlflow.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL);
                 INSERT INTO alembic_version VALUES ('1b5f0d9ad7c1');",
            )
            .unwrap();
        drop(writer);
        let before = std::fs::read(&path).unwrap();
        let database = Database::open(&path).unwrap();
        assert_eq!(
            database.schema_revision().unwrap().as_deref(),
            Some("1b5f0d9ad7c1")
        );
        assert!(database.problems().unwrap().is_empty());
        drop(database);
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "reading left files beside the store");
    }
}
