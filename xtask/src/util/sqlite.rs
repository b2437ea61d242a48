//! Reading the names of the tables in a SQLite database file, without SQLite: its header and
//! the schema table's b-tree (the file format, <https://sqlite.org/fileformat.html>). Enough to
//! tell, before a restore touches anything, whether a file is a SQLite database holding
//! MLflow's tables; opening it is left to MLflow.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};

const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The tables of the SQLite database in `path`; an error says why it is not one.
pub fn table_names(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    tables_in(&bytes)
        .with_context(|| format!("{} is not a readable SQLite database", path.display()))
}

fn tables_in(bytes: &[u8]) -> Result<Vec<String>> {
    if bytes.len() < 100 || &bytes[..16] != MAGIC {
        bail!("it does not start with SQLite's header");
    }
    let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65536,
        n if n >= 512 && n.is_power_of_two() => usize::from(n),
        n => bail!("its page size {n} is not valid"),
    };
    if !bytes.len().is_multiple_of(page_size) {
        bail!(
            "its size ({} bytes) is not a whole number of {page_size}-byte pages: it was cut short",
            bytes.len()
        );
    }
    let reserved = usize::from(bytes[20]);
    let usable = page_size
        .checked_sub(reserved)
        .filter(|u| *u >= 480)
        .context("its reserved space leaves no usable page")?;
    let db = Db {
        bytes,
        page_size,
        usable,
    };
    let mut names = Vec::new();
    let mut seen = HashSet::new();
    db.walk(1, &mut seen, &mut names)?;
    Ok(names)
}

struct Db<'a> {
    bytes: &'a [u8],
    page_size: usize,
    usable: usize,
}

impl Db<'_> {
    fn page(&self, number: u32) -> Result<&[u8]> {
        let start = (number as usize)
            .checked_sub(1)
            .context("page 0 does not exist")?
            * self.page_size;
        self.bytes
            .get(start..start + self.page_size)
            .with_context(|| format!("page {number} is past the end of the file"))
    }

    /// Collects the table names of the schema b-tree rooted at page `number`.
    fn walk(&self, number: u32, seen: &mut HashSet<u32>, names: &mut Vec<String>) -> Result<()> {
        if !seen.insert(number) {
            bail!("its schema's pages form a loop");
        }
        let page = self.page(number)?;
        // Page 1 starts with the 100-byte file header.
        let at = if number == 1 { 100 } else { 0 };
        let header = page.get(at..at + 12).context("a page is too short")?;
        let cells = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let (interior, header_len) = match header[0] {
            0x05 => (true, 12),
            0x0d => (false, 8),
            other => bail!("page {number} of its schema has type {other:#x}, not a table page"),
        };
        for i in 0..cells {
            let slot = at + header_len + 2 * i;
            let pointer = page
                .get(slot..slot + 2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                .context("a cell pointer is past the page")?;
            let cell = page
                .get(pointer..self.usable.min(page.len()))
                .filter(|c| !c.is_empty())
                .context("a cell is past the page")?;
            if interior {
                let child = cell.get(..4).context("a cell is cut short")?;
                self.walk(
                    u32::from_be_bytes([child[0], child[1], child[2], child[3]]),
                    seen,
                    names,
                )?;
            } else if let Some(name) = table_name(cell)? {
                names.push(name);
            }
        }
        if interior {
            let right = &header[8..12];
            self.walk(
                u32::from_be_bytes([right[0], right[1], right[2], right[3]]),
                seen,
                names,
            )?;
        }
        Ok(())
    }
}

/// A varint: up to 9 bytes, big-endian 7 bits each, the ninth all 8.
fn varint(bytes: &[u8]) -> Result<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(9) {
        if i == 8 {
            return Ok(((value << 8) | u64::from(b), 9));
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    bail!("a number is cut short")
}

/// The name in a schema row (`type, name, tbl_name, rootpage, sql`) when its type is `table`.
/// Only the row's first bytes are read: they are on the page even when the rest overflows.
fn table_name(cell: &[u8]) -> Result<Option<String>> {
    let (_, a) = varint(cell)?; // payload size
    let (_, b) = varint(&cell[a..])?; // rowid
    let record = &cell[a + b..];
    let (header_len, mut at) = varint(record)?;
    let header_len = usize::try_from(header_len)?;
    let mut lengths = Vec::new();
    while at < header_len && lengths.len() < 2 {
        let (serial, n) = varint(record.get(at..).context("a record is cut short")?)?;
        at += n;
        lengths.push(match serial {
            13.. if serial % 2 == 1 => usize::try_from((serial - 13) / 2)?,
            // Not text: not a schema row this reader understands.
            _ => return Ok(None),
        });
    }
    let [type_len, name_len] = lengths[..] else {
        return Ok(None);
    };
    let text = |from: usize, len: usize| {
        record
            .get(from..from + len)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .context("a schema row is cut short")
    };
    if text(header_len, type_len)? != "table" {
        return Ok(None);
    }
    Ok(Some(text(header_len + type_len, name_len)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of MLflow's schema (tables only), 512-byte pages so that its schema spans
    /// an interior page and leaves, made with Python's sqlite3.
    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/mlflow-schema.db");

    #[test]
    fn reads_every_table_of_a_multi_page_schema() {
        assert_eq!(FIXTURE[100], 0x05, "the fixture's schema should span pages");
        let names = tables_in(FIXTURE).unwrap();
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
    fn what_is_not_a_database_is_refused() {
        let err = tables_in(b"{\"not\": \"sqlite\"}").unwrap_err().to_string();
        assert!(err.contains("SQLite's header"), "{err}");
        let cut = &FIXTURE[..FIXTURE.len() - 100];
        let err = tables_in(cut).unwrap_err().to_string();
        assert!(err.contains("cut short"), "{err}");
        // Page 1 pointing at a page past the end.
        let mut broken = FIXTURE.to_vec();
        broken[108..112].copy_from_slice(&9999u32.to_be_bytes());
        assert!(tables_in(&broken).is_err());
    }
}
