//! Reading the public datasets' CSV files: CRLF or LF, blank numeric cells, extra identifier
//! columns. Every error names the file, the line and the column of the first problem.
//!
//! What a file may hold is bounded: a regular file only (not a directory, a device or a
//! pipe), each column name once, at most [`Limits::bytes`] bytes and [`Limits::rows`] rows.
//! A row the API would refuse (a loader checks it with the service's own `validate`) is
//! left out and counted; past [`Limits::refused_fraction`] of the rows, the file is refused.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

use crate::validation::FieldError;

/// Bounds on a data file; [`Limits::default`] is what `train` reads with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes read: 256 MiB, 30 times the largest public file (CarVision's, 7.6 MB).
    pub bytes: u64,
    /// Most data rows: 2 million, 40 times the largest public file (51,525).
    pub rows: u64,
    /// Largest share of the rows that may be refused by the API's validation and left out:
    /// 1%. The public files have none.
    pub refused_fraction: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bytes: 256 << 20,
            rows: 2_000_000,
            refused_fraction: 0.01,
        }
    }
}

/// Why a row was not read: a cell that is not what its column holds (the file is refused),
/// or a value the API refuses (the row is left out and counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowError {
    Bad(CellError),
    Refused(CellError),
}

impl From<CellError> for RowError {
    fn from(e: CellError) -> Self {
        Self::Bad(e)
    }
}

/// Refused rows shown by name in the log and in the error; the rest are counted.
const REFUSED_SHOWN: usize = 3;

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
    reader: csv::Reader<Capped>,
    limits: Limits,
}

/// What a path is when it is not a regular file, in words; `None` for a regular file.
pub fn not_a_file(kind: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_fifo() {
        Some("a named pipe")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

impl Table {
    /// Opens `path` and checks that every column in `required` is present in its header.
    pub fn open(path: &Path, required: &[&str]) -> Result<Self> {
        let shown = path.display();
        let kind = std::fs::metadata(path)
            .with_context(|| format!("cannot open data file {shown}"))?
            .file_type();
        if let Some(what) = not_a_file(kind) {
            anyhow::bail!("{shown} is {what}, not a data file: pass the path of a CSV file");
        }
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open data file {shown}"))?;
        Self::from_reader(Box::new(std::io::BufReader::new(file)), required)
            .with_context(|| format!("{shown} is not a valid dataset"))
    }

    pub fn from_reader(input: Box<dyn Read>, required: &[&str]) -> Result<Self> {
        Self::with_limits(input, required, Limits::default())
    }

    pub fn with_limits(input: Box<dyn Read>, required: &[&str], limits: Limits) -> Result<Self> {
        // Records end at '\n' only: with the default CRLF handling the csv crate reports line
        // numbers one short on CRLF files. The '\r' left on the last cell is trimmed below.
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(Capped {
                input,
                left: limits.bytes,
                limit: limits.bytes,
            });
        let header = reader
            .headers()
            .map_err(csv_error)
            .context("cannot read the header line")?;
        let mut headers: HashMap<String, usize> = HashMap::with_capacity(header.len());
        // A byte-order mark sometimes precedes the first column name.
        for (i, name) in header.iter().enumerate() {
            let name = name.trim_start_matches('\u{feff}').trim();
            if let Some(first) = headers.insert(name.to_owned(), i) {
                anyhow::bail!(
                    "line 1: column `{name}` appears twice (columns {} and {}); each column must be named once",
                    first + 1,
                    i + 1
                );
            }
        }
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
        Ok(Self {
            headers,
            reader,
            limits,
        })
    }

    /// Calls `each` for every data row, stopping at the first bad cell. A row `each` refuses
    /// ([`RowError::Refused`]) is counted and left out; past the limit the file is refused.
    /// Returns the rows kept.
    pub fn for_each_row(
        mut self,
        mut each: impl FnMut(&Row<'_>) -> Result<(), RowError>,
    ) -> Result<u64> {
        let mut record = csv::StringRecord::new();
        let (mut rows, mut refused) = (0u64, Vec::new());
        let mut refused_count = 0u64;
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
            if rows + refused_count >= self.limits.rows {
                anyhow::bail!(
                    "line {line}: the file has more than {} data rows, the most read",
                    self.limits.rows
                );
            }
            match each(&Row {
                headers: &self.headers,
                record: &record,
                line,
            }) {
                Ok(()) => rows += 1,
                Err(RowError::Bad(e)) => return Err(e.into()),
                Err(RowError::Refused(e)) => {
                    refused_count += 1;
                    if refused.len() < REFUSED_SHOWN {
                        refused.push(e.to_string());
                    }
                }
            }
        }
        let total = rows + refused_count;
        if total == 0 {
            anyhow::bail!("the file has a header but no data rows");
        }
        if refused_count > 0 {
            let share = refused_count as f64 / total as f64;
            let said = format!(
                "{refused_count} of {total} rows ({:.2}%) hold values the API refuses, e.g. {}",
                share * 100.0,
                refused.join("; ")
            );
            anyhow::ensure!(
                share <= self.limits.refused_fraction,
                "{said}: more than the {}% that may be left out; correct or remove them",
                self.limits.refused_fraction * 100.0
            );
            tracing::warn!(refused = refused_count, rows = total, "{said}: left out");
        }
        Ok(rows)
    }
}

/// The input, failing once it has given `limit` bytes and has more.
struct Capped {
    input: Box<dyn Read>,
    left: u64,
    limit: u64,
}

impl Read for Capped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // At the limit: the file ends here or is too large.
            return match self.input.read(&mut [0u8])? {
                0 => Ok(0),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!(
                        "the file is larger than {} MiB, the most read",
                        self.limit >> 20
                    ),
                )),
            };
        }
        let room = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.input.read(&mut buf[..room])?;
        self.left -= n as u64;
        Ok(n)
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
        csv::ErrorKind::Io(io) => anyhow::anyhow!("line {line}: {io}"),
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
        self.optional_number(column)?.ok_or_else(|| {
            let found = match self.text(column) {
                "" => "a blank cell".to_owned(),
                nan => format!("{nan:?} (not a number)"),
            };
            self.error(column, format!("expected a number, found {found}"))
        })
    }

    /// The row refused for the API's reason `e` (a field named as its column).
    pub fn refused(&self, e: FieldError) -> RowError {
        RowError::Refused(self.error(&e.field, e.reason))
    }

    /// A whole number as the API takes it (`3` or `3.0`); another number is a refused row.
    pub fn whole_number(&self, column: &str) -> Result<i64, RowError> {
        let v = self.number(column)?;
        self.whole(column, v)
    }

    /// [`Row::whole_number`] that may be blank.
    pub fn optional_whole_number(&self, column: &str) -> Result<Option<i64>, RowError> {
        self.optional_number(column)?
            .map(|v| self.whole(column, v))
            .transpose()
    }

    fn whole(&self, column: &str, v: f64) -> Result<i64, RowError> {
        if v.fract() != 0.0 || v.abs() > 2f64.powi(53) {
            return Err(self.refused(FieldError::new(
                column,
                format!("must be a whole number, got {v}"),
            )));
        }
        Ok(v as i64)
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
    fn a_column_named_twice_is_refused() {
        let err = table("a,b,a\n1,2,3\n", &["a", "b"]).err().unwrap();
        assert!(
            err.to_string()
                .contains("column `a` appears twice (columns 1 and 3)"),
            "{err}"
        );
    }

    #[test]
    fn an_endless_input_stops_at_the_byte_limit() {
        let limits = Limits {
            bytes: 1 << 20,
            ..Limits::default()
        };
        // Like /dev/zero behind a pipe: one header line that never ends.
        let err = Table::with_limits(Box::new(std::io::repeat(0)), &["a"], limits)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("larger than 1 MiB, the most read"),
            "{err:#}"
        );
        // A header, then more rows than fit.
        let header = std::io::Cursor::new(b"a\n".to_vec())
            .chain(std::io::Cursor::new(b"1\n".repeat(1 << 20)));
        let err = Table::with_limits(Box::new(header), &["a"], limits)
            .unwrap()
            .for_each_row(|_| Ok(()))
            .unwrap_err();
        assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
    }

    #[test]
    fn rows_past_the_row_limit_are_refused() {
        let limits = Limits {
            rows: 3,
            ..Limits::default()
        };
        let input = std::io::Cursor::new(b"a\n1\n2\n3\n4\n".to_vec());
        let err = Table::with_limits(Box::new(input), &["a"], limits)
            .unwrap()
            .for_each_row(|_| Ok(()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 5: the file has more than 3 data rows, the most read"
        );
    }

    #[test]
    fn refused_rows_are_left_out_up_to_the_limit() {
        let csv = |bad: usize| {
            let mut text = "a\n".to_owned();
            for i in 0..200 {
                text.push_str(if i < bad { "-1\n" } else { "1\n" });
            }
            Table::from_reader(Box::new(std::io::Cursor::new(text.into_bytes())), &["a"]).unwrap()
        };
        let check = |r: &Row<'_>| -> Result<(), RowError> {
            let v = r.number("a")?;
            crate::check_non_negative("a", v).map_err(|e| r.refused(e))
        };
        assert_eq!(csv(2).for_each_row(check).unwrap(), 198, "1% left out");
        let err = csv(3).for_each_row(check).unwrap_err().to_string();
        assert!(
            err.starts_with("3 of 200 rows (1.50%) hold values the API refuses, e.g. line 2, column `a`: must be a finite number >= 0, got -1;"),
            "{err}"
        );
        assert!(
            err.contains("more than the 1% that may be left out"),
            "{err}"
        );
    }

    #[test]
    fn a_nan_cell_is_called_what_it_is() {
        let err = table("a\nNaN\n", &["a"])
            .unwrap()
            .for_each_row(|r| {
                r.number("a")?;
                Ok(())
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2, column `a`: expected a number, found \"NaN\" (not a number)"
        );
    }

    #[test]
    fn rejects_a_header_without_required_columns() {
        let err = table("a,c\n1,2\n", &["a", "b"]).err().unwrap();
        assert!(err.to_string().contains("lacks column(s) b"), "{err}");
    }
}
