//! Structured logs: human-readable by default, JSON lines with `LOG_FORMAT=json`, level from
//! `LOG_LEVEL`: a level (`debug`), or a default and levels per target (`info,serving=debug`).

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

/// `LOG_LEVEL`'s filter; `info` when it is unset, empty or not a filter. tracing-subscriber's
/// `Targets` reads the same `target=level` lists as its `EnvFilter` without the span and field
/// directives (`[span]=debug`, refused here rather than read as a target), which would link a
/// regex engine into every service binary. Empty items are left out, as `EnvFilter` does
/// (`Targets` would read one as "errors only").
fn filter(log_level: Option<&str>) -> Targets {
    let items: Vec<&str> = log_level
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect();
    let info = || Targets::new().with_default(LevelFilter::INFO);
    if items.is_empty() || items.iter().any(|item| item.contains(['[', '{'])) {
        return info();
    }
    items.join(",").parse().unwrap_or_else(|_| info())
}

pub fn init() {
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let log_level = std::env::var("LOG_LEVEL").ok();
    let registry = tracing_subscriber::registry().with(filter(log_level.as_deref()));
    // A second init (as in tests) is harmless, hence `try_init`.
    let _ = if json {
        registry.with(lines.json().flatten_event(true)).try_init()
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry.with(lines.with_ansi(ansi)).try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn log_level_takes_a_level_or_levels_per_target_and_falls_back_to_info() {
        let default = filter(None);
        assert!(default.would_enable("serving::http", &Level::INFO));
        assert!(!default.would_enable("serving::http", &Level::DEBUG));

        let debug = filter(Some("debug"));
        assert!(debug.would_enable("hyper::proto", &Level::DEBUG));
        assert!(!debug.would_enable("hyper::proto", &Level::TRACE));

        let per_target = filter(Some("warn,serving=debug"));
        assert!(per_target.would_enable("serving::server", &Level::DEBUG));
        assert!(!per_target.would_enable("hyper::proto", &Level::INFO));
        assert!(per_target.would_enable("hyper::proto", &Level::WARN));

        let trailing_comma = filter(Some("debug,"));
        assert!(trailing_comma.would_enable("serving", &Level::DEBUG));

        for not_a_filter in ["serving=loud", "", " , ", "[request]=debug"] {
            let info = filter(Some(not_a_filter));
            assert!(
                info.would_enable("serving", &Level::INFO),
                "{not_a_filter:?}"
            );
            assert!(
                !info.would_enable("serving", &Level::DEBUG),
                "{not_a_filter:?}"
            );
        }
    }
}
