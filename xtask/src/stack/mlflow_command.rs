//! The MLflow tracking server's one command line and environment, the same for the local
//! runtime and the compose file.

/// The MLflow command line without the idle parent process `mlflow server` keeps (in the
/// MLflow service's folder; the image's entrypoint): half the server's memory.
pub const LAUNCHER: &str = "server.py";

/// The server's environment: no job runner (measured: 0.4 GB and 5 s to start, instead of
/// 1.3 GB, 39 processes and 9-16 s; and what lets [`LAUNCHER`] drop the parent process).
pub const SERVER_ENV: &[(&str, &str)] = &[("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")];

/// Where and how one MLflow server serves.
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// `--backend-store-uri`: `sqlite:///FILE`, or a PostgreSQL URI without its password.
    pub backend_store_uri: String,
    /// Where uploaded artifacts go (the default, `./mlartifacts`, is not persisted).
    pub artifacts: String,
    /// MLflow 3 answers only these `Host` headers (its default covers localhost).
    pub allowed_hosts: Option<String>,
}

/// The arguments of `mlflow` for the server: its store, artifacts on the persisted volume,
/// one worker.
pub fn server_args(settings: &ServerSettings) -> Vec<String> {
    let mut args: Vec<String> = [
        "server",
        "--host",
        &settings.host,
        "--port",
        &settings.port.to_string(),
        "--backend-store-uri",
        &settings.backend_store_uri,
        "--artifacts-destination",
        &settings.artifacts,
        "--workers",
        "1",
    ]
    .map(String::from)
    .to_vec();
    if let Some(hosts) = &settings.allowed_hosts {
        args.extend(["--allowed-hosts".to_owned(), hosts.clone()]);
    }
    args
}

/// The SQLite store's file name in `mlruns/`, on the host and in the container alike.
pub const STORE_FILE: &str = "mlflow.db";

/// Prints, as JSON, the schema revisions MLflow's migrations know (`revisions`, newest
/// first) and their head (`head`): run by MLflow's own Python, it tells a store an older
/// MLflow made (a known revision) from one a newer MLflow made (an unknown one).
pub const SCHEMA_REVISIONS: &str = "import json\n\
from alembic.script import ScriptDirectory\n\
from mlflow.store.db.utils import _get_alembic_config\n\
script = ScriptDirectory.from_config(_get_alembic_config(db_url=''))\n\
heads = list(script.get_heads())\n\
print(json.dumps({'head': heads[0] if len(heads) == 1 else None, \
'revisions': [r.revision for r in script.walk_revisions()]}))\n";

/// The arguments of MLflow's Python that migrate the store at `store` (a path as that
/// process sees it) to the installed MLflow's schema.
pub fn upgrade_args(store: &str) -> Vec<String> {
    [
        "-m",
        "mlflow",
        "db",
        "upgrade",
        &format!("sqlite:///{store}"),
    ]
    .map(String::from)
    .to_vec()
}
