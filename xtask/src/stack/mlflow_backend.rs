//! Where MLflow keeps its runs and registry: the SQLite file in `mlruns/` (the demo's store),
//! or a PostgreSQL database (`--mlflow-backend postgresql://...`) for a stack that outgrows
//! one machine. The password never appears in a command line, a plan or a log: the servers
//! and PostgreSQL's tools get the URI without it, and the password in `PGPASSWORD`, which
//! libpq reads and [`crate::runner::Step`] masks when it shows a step.

use anyhow::{bail, Result};

/// Environment variables whose values are secrets: shown masked in plans and logs.
pub const SECRET_ENV: &[&str] = &["PGPASSWORD"];

/// The driver MLflow's SQLAlchemy (2.1: psycopg 3 for `postgresql://`) needs, with libpq
/// inside its binary wheel so neither the image nor the host needs PostgreSQL's client
/// library. `upgrade-deps` locks it with MLflow, so the image and the local environment,
/// both installed from `requirements.lock`, have it.
pub const POSTGRES_DRIVER: &str = "psycopg[binary]";

/// The name a container gives this machine: compose maps it to the host's gateway address
/// (`extra_hosts: host-gateway`, Docker 20.10+).
pub const HOST_FROM_CONTAINERS: &str = "host.docker.internal";

/// `localhost`, `127.0.0.1` (any 127.x), `::1`: this machine, seen from the host.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    /// `mlruns/mlflow.db` in the stack directory.
    Sqlite,
    Postgres(Postgres),
}

/// A PostgreSQL database for MLflow.
#[derive(Clone, PartialEq)]
pub struct Postgres {
    /// `postgresql://user@host:port/database?...`: the URI without its password.
    pub uri: String,
    /// The password, decoded, if the URI had one.
    pub password: Option<String>,
}

impl Backend {
    /// `--mlflow-backend`: nothing (or `sqlite`) for the SQLite store, else a
    /// `postgresql://` URI.
    pub fn parse(value: Option<&str>) -> Result<Self> {
        let Some(value) = value
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != "sqlite")
        else {
            return Ok(Self::Sqlite);
        };
        let Some(rest) = value.strip_prefix("postgresql://") else {
            let scheme = value.split("://").next().unwrap_or(value);
            bail!(
                "--mlflow-backend takes `sqlite` (the default: mlruns/mlflow.db) or a \
                 postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE URI, not {}",
                if value.contains("://") {
                    format!("a {scheme}:// URI")
                } else {
                    format!("{value:?}")
                }
            );
        };
        // The user's part ends at the last `@` before the query, so a password may hold `/`
        // (as generated ones do) without turning into the host.
        let before_query = &rest[..rest.find('?').unwrap_or(rest.len())];
        let (userinfo, after_user) = match before_query.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (host, path) = after_user.split_at(after_user.find('/').unwrap_or(after_user.len()));
        let database = path.trim_start_matches('/');
        let (database, query) = database.split_once('?').unwrap_or((database, ""));
        if query
            .split('&')
            .any(|pair| pair.split('=').next() == Some("password"))
        {
            bail!(
                "--mlflow-backend: give the password as postgresql://USER:PASSWORD@HOST/DATABASE \
                 (percent-encoded), not as a `password` query parameter, which would show in \
                 command lines and logs"
            );
        }
        if host.is_empty() || database.is_empty() {
            bail!(
                "--mlflow-backend {}: name the server and the database, as in \
                 postgresql://mlflow@db.example:5432/mlflow",
                Self::mask(value)
            );
        }
        let (user, password) = match userinfo {
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (Some(user), Some(percent_decode(password)?)),
                None => (Some(info), None),
            },
            None => (None, None),
        };
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        Ok(Self::Postgres(Postgres {
            uri: format!("postgresql://{user}{host}{path}"),
            password,
        }))
    }

    /// The URI with any password replaced by `***`, for messages about what the user typed.
    fn mask(value: &str) -> String {
        match (value.find("://"), value.rfind('@')) {
            (Some(start), Some(at)) if at > start => {
                let userinfo = &value[start + 3..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{}{user}:***{}", &value[..start + 3], &value[at..]),
                    None => value.to_owned(),
                }
            }
            _ => value.to_owned(),
        }
    }

    /// What a backup's manifest says it holds: `sqlite` or `postgresql`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgresql",
        }
    }

    pub fn postgres(&self) -> Option<&Postgres> {
        match self {
            Self::Postgres(pg) => Some(pg),
            Self::Sqlite => None,
        }
    }
}

/// Shown as the URI with `***` for the password: a debug print must not leak it.
impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Postgres").field(&self.shown()).finish()
    }
}

impl Postgres {
    /// The environment MLflow and PostgreSQL's tools need for the password.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.password
            .iter()
            .map(|p| ("PGPASSWORD", p.clone()))
            .collect()
    }

    /// The stored URI in its parts: the user with its `@` (or nothing), the host as written
    /// (`[::1]` with its brackets), the port with its `:` (or nothing), and the rest (the
    /// database and query).
    fn parts(&self) -> (&str, &str, &str, &str) {
        let rest = self.uri.trim_start_matches("postgresql://");
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (user, hostport) = match authority.rfind('@') {
            Some(at) => authority.split_at(at + 1),
            None => ("", authority),
        };
        // `[::1]:5433`, `db:5433`, `db`
        let (host, port) = match hostport.rfind(':') {
            Some(colon) if !hostport[colon..].contains(']') => hostport.split_at(colon),
            _ => (hostport, ""),
        };
        (user, host, port, path)
    }

    /// The server's host and port (5432 when the URI names none).
    pub fn address(&self) -> (String, u16) {
        let (_, host, port, _) = self.parts();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.trim_start_matches(':').parse().unwrap_or(5432);
        (host.to_owned(), port)
    }

    /// The URI as a container reaches it: a loopback host (`localhost`, `127.0.0.1`, `::1`)
    /// means this machine, which a container reaches as [`HOST_FROM_CONTAINERS`] (mapped to
    /// the host's gateway address on the container's network).
    pub fn uri_from_containers(&self) -> String {
        let (host, _) = self.address();
        if !is_loopback(&host) {
            return self.uri.clone();
        }
        let (user, _, port, path) = self.parts();
        format!("postgresql://{user}{HOST_FROM_CONTAINERS}{port}{path}")
    }

    /// A swarm's MLflow may run on any node: a loopback host would name a different machine
    /// (or none) from each, so it is refused, saying what to pass instead.
    pub fn check_reachable_by_every_node(&self) -> Result<()> {
        let (host, port) = self.address();
        if is_loopback(&host) {
            bail!(
                "--mlflow-backend {}: {host} is each node itself, not one database server: a \
                 swarm's MLflow runs on whichever node it is placed, and the backup's pg_dump \
                 runs here. Pass an address every node and this machine reach, as in \
                 postgresql://mlflow@db.example:{port}/mlflow (the server's name or its \
                 address on the nodes' network)",
                self.shown()
            );
        }
        Ok(())
    }

    pub fn shown(&self) -> String {
        match (&self.password, self.uri.find('@')) {
            (Some(_), Some(at)) => format!("{}:***{}", &self.uri[..at], &self.uri[at..]),
            _ => self.uri.clone(),
        }
    }
}

/// `%XX` escapes decoded (a password with `@` or `:` in it is written `%40`, `%3A`).
fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                bail!("--mlflow-backend: the password has a % not followed by two hex digits");
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| anyhow::anyhow!("--mlflow-backend: the password is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_uri_for_the_environment() {
        assert_eq!(Backend::parse(None).unwrap(), Backend::Sqlite);
        assert_eq!(Backend::parse(Some("sqlite")).unwrap(), Backend::Sqlite);
        let Backend::Postgres(pg) = Backend::parse(Some(
            "postgresql://ml:s%40cret:x@db:5433/mlflow?sslmode=require",
        ))
        .unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(pg.uri, "postgresql://ml@db:5433/mlflow?sslmode=require");
        assert_eq!(pg.password.as_deref(), Some("s@cret:x"));
        assert_eq!(
            pg.shown(),
            "postgresql://ml:***@db:5433/mlflow?sslmode=require"
        );
        assert_eq!(pg.env(), [("PGPASSWORD", "s@cret:x".to_owned())]);
        assert!(!format!("{pg:?}").contains("s@cret"), "{pg:?}");
        // A generated password may hold `/`: it stays the password, never the host.
        let Backend::Postgres(slashed) =
            Backend::parse(Some("postgresql://u:ab/cd+ef@db/mlflow")).unwrap()
        else {
            panic!("not postgres")
        };
        assert_eq!(slashed.uri, "postgresql://u@db/mlflow");
        assert_eq!(slashed.password.as_deref(), Some("ab/cd+ef"));
        let err = Backend::parse(Some("postgresql://u@db/mlflow?password=hunter2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not as a `password` query parameter"), "{err}");
        let no_password = Backend::parse(Some("postgresql://db/mlflow")).unwrap();
        assert_eq!(
            no_password.postgres().unwrap().shown(),
            "postgresql://db/mlflow"
        );
    }

    #[test]
    fn a_swarm_refuses_a_loopback_database_without_showing_the_password() {
        for uri in [
            "postgresql://mlflow:pw@localhost/mlflow",
            "postgresql://mlflow:pw@127.0.0.1:5433/mlflow",
        ] {
            let Backend::Postgres(pg) = Backend::parse(Some(uri)).unwrap() else {
                panic!("{uri} is PostgreSQL");
            };
            let why = pg.check_reachable_by_every_node().unwrap_err().to_string();
            assert!(why.contains("an address every node"), "{why}");
            assert!(!why.contains("pw@"), "{why}");
        }
        let Backend::Postgres(pg) =
            Backend::parse(Some("postgresql://mlflow:pw@10.0.0.5/mlflow")).unwrap()
        else {
            panic!("PostgreSQL");
        };
        pg.check_reachable_by_every_node().unwrap();
    }

    #[test]
    fn containers_reach_a_database_on_this_machine_through_the_host_gateway() {
        let pg = |uri: &str| {
            Backend::parse(Some(uri))
                .unwrap()
                .postgres()
                .unwrap()
                .clone()
        };
        let local = pg("postgresql://ml:pw@127.0.0.1:5433/mlflow?sslmode=disable");
        assert_eq!(local.address(), ("127.0.0.1".to_owned(), 5433));
        assert_eq!(
            local.uri_from_containers(),
            "postgresql://ml@host.docker.internal:5433/mlflow?sslmode=disable"
        );
        let named = pg("postgresql://localhost/mlflow");
        assert_eq!(named.address(), ("localhost".to_owned(), 5432));
        assert_eq!(
            named.uri_from_containers(),
            "postgresql://host.docker.internal/mlflow"
        );
        let v6 = pg("postgresql://u@[::1]:6000/mlflow");
        assert_eq!(v6.address(), ("::1".to_owned(), 6000));
        assert_eq!(
            v6.uri_from_containers(),
            "postgresql://u@host.docker.internal:6000/mlflow"
        );
        let remote = pg("postgresql://u:pw@db.example:5432/mlflow");
        assert_eq!(remote.address(), ("db.example".to_owned(), 5432));
        assert_eq!(
            remote.uri_from_containers(),
            "postgresql://u@db.example:5432/mlflow"
        );
    }

    #[test]
    fn other_stores_are_refused_without_showing_the_password() {
        let err = Backend::parse(Some("mysql://u:hunter2@db/mlflow")).unwrap_err();
        assert!(format!("{err}").contains("a mysql:// URI"), "{err}");
        let err = format!(
            "{}",
            Backend::parse(Some("postgresql://u:hunter2@db")).unwrap_err()
        );
        assert!(
            err.contains("postgresql://u:***@db") && !err.contains("hunter2"),
            "{err}"
        );
    }
}
