//! Small pieces every part uses: progress and tables for people and CI logs, HTTP probes, file
//! locks, polling with a deadline, the backup archive's format, and the table names of a SQLite
//! file.

pub mod archive;
pub mod debian_archive;
pub mod drift;
pub mod http;
pub mod lock;
pub mod poll;
pub mod postgres;
pub mod progress;
pub mod sqlite;
pub mod table;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::poll::until;

    #[test]
    fn polling_returns_the_first_answer() {
        let mut calls = 0;
        let answer = until(Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(answer, Some(3));
    }

    #[test]
    fn polling_gives_up_after_the_deadline_with_a_last_attempt() {
        let mut calls = 0;
        let answer: Option<()> = until(Duration::ZERO, Duration::from_millis(1), || {
            calls += 1;
            None
        });
        assert_eq!(answer, None);
        assert_eq!(calls, 1);
    }

    #[test]
    fn both_source_formats_name_the_debian_archive_and_others_do_not() {
        use super::debian_archive::archive_of;
        assert_eq!(
            archive_of("URIs: http://archive.example/debian"),
            Some("http://archive.example/debian")
        );
        assert_eq!(
            archive_of("deb [arch=amd64] http://archive.example/debian/ bookworm main"),
            Some("http://archive.example/debian/")
        );
        assert_eq!(
            archive_of("URIs: http://archive.example/debian-security"),
            None
        );
        assert_eq!(
            archive_of("# deb http://archive.example/debian bookworm"),
            None
        );
    }
}
