//! Reading the public datasets' CSV files: CRLF or LF, blank numeric cells, extra identifier
//! columns. Every error names the file, the line and the column of the first problem.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};

/// Where a bad cell sits, so the user can open the file at that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellError {
    pub line: u64,
    pub column: String,
    pub reason: String,
}

impl fmt::Display for CellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column `{}`: {}",
            self.line, self.column, self.reason
        )
    }
}

impl std::error::Error for CellError {}

/// A CSV file whose header has been checked against the columns a loader needs.
pub struct Table {
    headers: HashMap<String, usize>,
    reader: csv::Reader<Box<dyn std::io::Read>>,
}

impl Table {
    /// Opens `path` and checks that every column in `required` is present in its header.
    pub fn open(path: &Path, required: &[&str]) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open data file {}", path.display()))?;
        Self::from_reader(Box::new(std::io::BufReader::new(file)), required)
            .with_context(|| format!("{} is not a valid dataset", path.display()))
    }

    pub fn from_reader(input: Box<dyn std::io::Read>, required: &[&str]) -> Result<Self> {
        // Records end at '\n' only: with the default CRLF handling the csv crate reports line
        // numbers one short on CRLF files. The '\r' left on the last cell is trimmed below.
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(input);
        let header = reader.headers().context("cannot read the header line")?;
        let headers: HashMap<String, usize> = header
            .iter()
            .enumerate()
            // A byte-order mark sometimes precedes the first column name.
            .map(|(i, name)| (name.trim_start_matches('\u{feff}').trim().to_owned(), i))
            .collect();
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|c| !headers.contains_key(*c))
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "line 1: the header lacks column(s) {}; expected columns {}",
                missing.join(", "),
                required.join(",")
            );
        }
        Ok(Self { headers, reader })
    }

    /// Calls `each` for every data row, stopping at the first error.
    pub fn for_each_row(
        mut self,
        mut each: impl FnMut(&Row<'_>) -> Result<(), CellError>,
    ) -> Result<u64> {
        let mut record = csv::StringRecord::new();
        let mut rows = 0;
        loop {
            match self.reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => return Err(csv_error(e)),
            }
            let line = record.position().map_or(0, |p| p.line());
            if record.len() == 1 && record.get(0) == Some("") {
                continue; // a trailing blank line
            }
            each(&Row {
                headers: &self.headers,
                record: &record,
                line,
            })?;
            rows += 1;
        }
        if rows == 0 {
            anyhow::bail!("the file has a header but no data rows");
        }
        Ok(rows)
    }
}

fn csv_error(e: csv::Error) -> anyhow::Error {
    let line = e.position().map_or(0, |p| p.line());
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => anyhow::anyhow!(
            "line {line}: expected {expected_len} fields like the header, found {len}"
        ),
        csv::ErrorKind::Utf8 { .. } => anyhow::anyhow!("line {line}: the row is not valid UTF-8"),
        _ => anyhow::anyhow!("line {line}: {e}"),
    }
}

/// One data row; accessors parse a cell and report its line and column on failure.
pub struct Row<'a> {
    headers: &'a HashMap<String, usize>,
    record: &'a csv::StringRecord,
    line: u64,
}

impl Row<'_> {
    pub fn line(&self) -> u64 {
        self.line
    }

    pub fn error(&self, column: &str, reason: impl Into<String>) -> CellError {
        CellError {
            line: self.line,
            column: column.to_owned(),
            reason: reason.into(),
        }
    }

    /// The trimmed text of a cell.
    pub fn text(&self, column: &str) -> &str {
        self.headers
            .get(column)
            .and_then(|&i| self.record.get(i))
            .map_or("", str::trim)
    }

    /// A number that may be blank (blank means missing).
    pub fn optional_number(&self, column: &str) -> Result<Option<f64>, CellError> {
        let text = self.text(column);
        if text.is_empty() || text.eq_ignore_ascii_case("nan") {
            return Ok(None);
        }
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(self.error(column, format!("expected a number, found {text:?}"))),
        }
    }

    /// A number that must be present.
    pub fn number(&self, column: &str) -> Result<f64, CellError> {
        self.optional_number(column)?
            .ok_or_else(|| self.error(column, "expected a number, found a blank cell"))
    }

    /// A number that must lie in `min..=max`.
    pub fn number_in(&self, column: &str, min: f64, max: f64) -> Result<f64, CellError> {
        let v = self.number(column)?;
        if v < min || v > max {
            return Err(self.error(column, format!("{v} is outside {min}..={max}")));
        }
        Ok(v)
    }

    /// A 0/1 flag (`1.0` and `0.0` accepted, as the public files write them).
    pub fn flag(&self, column: &str) -> Result<f64, CellError> {
        match self.number(column)? {
            v if v == 0.0 || v == 1.0 => Ok(v),
            v => Err(self.error(column, format!("expected 0 or 1, found {v}"))),
        }
    }

    /// The index of a cell's value within `allowed`.
    pub fn category(&self, column: &str, allowed: &[&str]) -> Result<usize, CellError> {
        let text = self.text(column);
        allowed.iter().position(|a| *a == text).ok_or_else(|| {
            self.error(
                column,
                format!("expected one of {}, found {text:?}", allowed.join(" | ")),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &'static str, required: &[&str]) -> Result<Table> {
        Table::from_reader(Box::new(text.as_bytes()), required)
    }

    #[test]
    fn reads_crlf_and_blank_cells() {
        let t = table("a,b,c\r\n1,,x\r\n2.5,3,y\r\n", &["a", "b"]).unwrap();
        let mut seen = Vec::new();
        let rows = t
            .for_each_row(|r| {
                seen.push((r.number("a")?, r.optional_number("b")?, r.line()));
                Ok(())
            })
            .unwrap();
        assert_eq!(rows, 2);
        assert_eq!(seen, vec![(1.0, None, 2), (2.5, Some(3.0), 3)]);
    }

    #[test]
    fn names_line_and_column_of_a_bad_cell() {
        let t = table("a,b\n1,2\n3,oops\n", &["a", "b"]).unwrap();
        let err = t
            .for_each_row(|r| {
                r.number("b")?;
                Ok(())
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3, column `b`: expected a number, found \"oops\""
        );
    }

    #[test]
    fn names_the_line_with_a_wrong_field_count() {
        let t = table("a,b\n1,2\n3\n", &["a"]).unwrap();
        let err = t.for_each_row(|_| Ok(())).unwrap_err();
        assert!(err.to_string().starts_with("line 3:"), "{err}");
    }

    #[test]
    fn rejects_a_header_without_required_columns() {
        let err = table("a,c\n1,2\n", &["a", "b"]).err().unwrap();
        assert!(err.to_string().contains("lacks column(s) b"), "{err}");
    }
}
