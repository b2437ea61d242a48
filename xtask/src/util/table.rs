//! Tables for people (aligned text) and for GitHub's step summary (markdown).

/// A left-aligned text table.
pub fn text(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("   ").trim_end().to_owned()
    };
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = vec![line(&headers)];
    out.extend(rows.iter().map(|r| line(r)));
    out.join("\n")
}

/// The same table as markdown; `|` in cells is escaped.
pub fn markdown(headers: &[&str], rows: &[Vec<String>]) -> String {
    let escape = |cell: &str| cell.replace('|', "\\|").replace('\n', " ");
    let mut md = format!(
        "| {} |\n|{}|\n",
        headers.join(" | "),
        vec!["---"; headers.len()].join("|")
    );
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| escape(c)).collect();
        md.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = text(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A      BB\nlong   x");
    }

    #[test]
    fn markdown_escapes_pipes() {
        let md = markdown(&["check", "result"], &[vec!["a".into(), "x | y".into()]]);
        assert_eq!(md, "| check | result |\n|---|---|\n| a | x \\| y |\n");
    }
}
