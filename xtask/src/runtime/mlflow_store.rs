//! MLflow's store and its schema: which revision a store is at, refusing to start the server
//! on one the pinned MLflow would refuse, and moving an older one forward (`cargo xtask mlflow
//! upgrade`) with the pinned MLflow's own migrations.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::ctx::Ctx;
use crate::runner::Step;
use crate::runtime::mlflow_server;
use crate::stack::mlflow_command::SCHEMA_REVISIONS;
use crate::util::sqlite::Database;

/// Fails, before MLflow starts, when the stack's store is at another schema revision than
/// the pinned MLflow's: the server would refuse it, and only `mlflow upgrade` (which backs
/// the store up first) may change it. A missing store, or one MLflow never finished making,
/// is left to the server. So is a PostgreSQL store: MLflow checks its revision on start and
/// refuses one at another, saying so in its log.
pub fn check_before_start(ctx: &Ctx) -> Result<()> {
    if ctx.mlflow_backend.postgres().is_some() {
        return Ok(());
    }
    let store = mlflow_server::store_path(ctx);
    if ctx.dry_run() || !store.exists() {
        return Ok(());
    }
    let revision = Database::open(&store)
        .and_then(|db| db.schema_revision())
        .with_context(|| format!("MLflow's store {} cannot be read", ctx.show(&store)))?;
    let expected = ctx.stack.mlflow_schema_revision();
    match revision {
        Some(found) if found != expected => bail!(
            "MLflow's store {} is at schema revision {found}, and MLflow {} opens only {expected}. \
             If an older MLflow made it, run `cargo xtask mlflow upgrade` (it backs the store up \
             first, and puts it back if anything fails); if a newer one did, restore a backup \
             this version made, or pin that version in services/mlflow/service.toml. Nothing \
             was started.",
            ctx.show(&store),
            ctx.stack.mlflow_version(),
        ),
        _ => Ok(()),
    }
}

/// The schema revisions the pinned MLflow's migrations know.
#[derive(Debug, Deserialize)]
pub struct Migrations {
    /// Where they lead; `None` if they branch (not an MLflow release).
    pub head: Option<String>,
    pub revisions: Vec<String>,
}

/// Asks the pinned MLflow (`python`, from [`Runtime::mlflow_python`]) which schema
/// revisions it knows, and checks that `services/mlflow/service.toml` names its head.
pub fn migrations(ctx: &Ctx, python: &Step) -> Result<Migrations> {
    let Some(output) = ctx
        .runner
        .run_unchecked(&python.clone().args(["-c", SCHEMA_REVISIONS]))?
    else {
        // A dry run: nothing ran; the plan goes on as if the store were older.
        let pinned = ctx.stack.mlflow_schema_revision().to_owned();
        return Ok(Migrations {
            head: Some(pinned.clone()),
            revisions: vec![pinned],
        });
    };
    let printed = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "cannot ask the pinned MLflow for its schema revisions ({}): {}",
            output.status,
            crate::runner::tail(&String::from_utf8_lossy(&output.stderr), 20)
        );
    }
    let migrations: Migrations = serde_json::from_str(printed.trim())
        .with_context(|| format!("MLflow printed no list of schema revisions: {printed}"))?;
    let pinned = ctx.stack.mlflow_schema_revision();
    match &migrations.head {
        Some(head) if head == pinned => Ok(migrations),
        Some(head) => bail!(
            "services/mlflow/service.toml says MLflow {}'s schema revision is {pinned}, but its \
             migrations lead to {head}: set `schema_revision = \"{head}\"` there",
            ctx.stack.mlflow_version()
        ),
        None => bail!(
            "MLflow {}'s migrations have more than one head: not a store this toolkit can upgrade",
            ctx.stack.mlflow_version()
        ),
    }
}

/// What a store holds, counted: by kind of thing, how many.
pub type Counts = BTreeMap<&'static str, u64>;

/// The things an upgrade must keep, as tables of the store.
const COUNTED: [(&str, &str); 5] = [
    ("experiments", "experiments"),
    ("runs", "runs"),
    ("registered models", "registered_models"),
    ("model versions", "model_versions"),
    ("aliases", "registered_model_aliases"),
];

/// Counts the store's experiments, runs, registered models, versions and aliases, reading
/// the file (a store the server cannot open yet). Aliases count as none before MLflow had
/// them (2.3).
pub fn count_in_file(database: &Database) -> Result<Counts> {
    let tables = database.table_names()?;
    let mut counts = Counts::new();
    for (what, table) in COUNTED {
        let n = if tables.iter().any(|t| t == table) {
            database.count_rows(table)?
        } else {
            0
        };
        counts.insert(what, n);
    }
    Ok(counts)
}

/// The same counts through the running server's REST API.
pub fn count_through_api(url: &str) -> Result<Counts> {
    let client = mlflow_client::Client::new(url, mlflow_client::ClientOptions::default())?;
    let experiments = client.search_experiments()?;
    let ids: Vec<&str> = experiments
        .iter()
        .map(|e| e.experiment_id.as_str())
        .collect();
    let runs = if ids.is_empty() {
        0
    } else {
        client.search_all_runs(&ids)?.len()
    };
    let models = client.search_registered_models()?;
    let mut versions = 0;
    for model in &models {
        versions += client.search_model_versions(&model.name)?.len();
    }
    let aliases: usize = models.iter().map(|m| m.aliases.len()).sum();
    Ok(Counts::from([
        ("experiments", experiments.len() as u64),
        ("runs", runs as u64),
        ("registered models", models.len() as u64),
        ("model versions", versions as u64),
        ("aliases", aliases as u64),
    ]))
}

/// `3 experiments, 12 runs, ...`
pub fn describe(counts: &Counts) -> String {
    COUNTED
        .iter()
        .map(|(what, _)| format!("{} {what}", counts.get(what).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}
