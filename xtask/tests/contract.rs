//! The names and ports users depend on: the README's stack table is what they were promised,
//! and the toolkit (reading the service.toml files) must serve exactly that.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{stderr, Stack};

/// `(container, host port)` of each row of the README's stack table.
fn readme_table() -> BTreeSet<(String, u16)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let table = readme
        .split("## The stack")
        .nth(1)
        .expect("the README has a stack section");
    table
        .lines()
        .skip_while(|l| !l.starts_with("| service"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let container = cells[2].trim_matches('`').to_owned();
            let port = cells[3]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|_| panic!("no port in {row}"));
            (container, port)
        })
        .collect()
}

#[test]
fn the_readme_table_is_the_stack_the_toolkit_runs() {
    let stack = Stack::new();
    let output = stack.xtask(&[
        "--runtime",
        "local",
        "--port-offset",
        "0",
        "status",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let served: BTreeSet<(String, u16)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let url = r["url"].as_str().unwrap();
            let port = url.rsplit(':').next().unwrap().parse().unwrap();
            (r["container"].as_str().unwrap().to_owned(), port)
        })
        .collect();
    assert_eq!(readme_table(), served);
}

#[test]
fn the_published_names_and_ports_are_kept() {
    let promised = readme_table();
    for pair in [
        ("mlflow-server", 5000),
        ("bankchurn-api", 8001),
        ("carvision-api", 8002),
        ("telecom-api", 8003),
    ] {
        assert!(
            promised.contains(&(pair.0.to_owned(), pair.1)),
            "{pair:?} is gone from the README's stack table"
        );
    }
}
