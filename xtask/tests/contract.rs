//! The names and ports users depend on: the README's stack table is what they were promised,
//! and the toolkit (reading the service.toml files) must serve exactly that.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{stderr, Stack};

/// `(container, host port)` of each row of the README's stack table (a row may list several
/// ports: an API and its dashboard).
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
        .flat_map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let container = cells[2].trim_matches('`').to_owned();
            let ports: Vec<u16> = cells[3]
                .split(|c: char| !c.is_ascii_digit())
                .filter(|n| !n.is_empty())
                .map(|n| n.parse().unwrap())
                .collect();
            assert!(!ports.is_empty(), "no port in {row}");
            ports.into_iter().map(move |p| (container.clone(), p))
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
    // Every published port, as the status rows list them (`127.0.0.1:8002, 127.0.0.1:8501`
    // on the local runtime; stopped services list none, so read the URLs and the compose
    // file's ports instead).
    let compose = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/docker-compose.demo.yml"),
    )
    .unwrap();
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&compose).unwrap();
    let served: BTreeSet<(String, u16)> = rows
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let container = r["container"].as_str().unwrap().to_owned();
            let service = r["service"].as_str().unwrap();
            yaml["services"][service]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| {
                    // 127.0.0.1:${VAR:-8002}:8000
                    let published = p.as_str().unwrap().split(":-").nth(1).unwrap();
                    let port = published.split('}').next().unwrap().parse().unwrap();
                    (container.clone(), port)
                })
                .collect::<Vec<_>>()
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
