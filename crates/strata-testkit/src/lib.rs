//! Helpers that the cluster tests (`tests/`) and the fault-injection
//! harness (`jepsen/`) share, so that each exists once: waiting for a
//! condition with a deadline instead of sleeping, finding the `strata`
//! binary the workspace build made, and a strict OpenMetrics checker for
//! scrapes of a node's `/metrics`.
//!
//! **Boundary:** depends on nothing of Strata (tokio and thiserror only), so
//! that the harness, which must see Strata only as a user does, can use it;
//! and no product crate depends on it (dev-dependencies aside).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub mod openmetrics;

/// How often `poll_until` asks again: short against the seconds a cluster
/// takes to elect or fail over, long enough that a probe (a few RPCs to
/// loopback nodes) does not load the nodes it waits for.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Asks `probe` every `POLL_INTERVAL` until it returns `Some`, and returns
/// that value; `None` once `timeout` has passed without one. The probe runs
/// at least once, also with a zero timeout.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `poll_until` for tests: the value, or a panic naming `what` when
/// `timeout` passes first.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(timeout, probe).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Why no `strata` binary was found.
#[derive(Debug, thiserror::Error)]
pub enum MissingBinary {
    #[error("{} does not exist; give the path of a built `strata` binary", .0.display())]
    Given(PathBuf),
    #[error(
        "no `strata` binary beside {}; build the workspace first (`cargo build --workspace --all-targets`)",
        .0.display()
    )]
    NotBuilt(PathBuf),
    #[error("cannot find the running executable's path: {0}")]
    OwnPath(std::io::Error),
}

/// The `strata` binary to run: `given` (a flag or $STRATA_BIN) when there
/// is one, else the one the workspace build put beside the running
/// executable. Cargo puts binaries in `target/<profile>/` and test
/// executables in `target/<profile>/deps/`, so both folders are looked in.
pub fn strata_binary(given: Option<&Path>) -> Result<PathBuf, MissingBinary> {
    if let Some(path) = given {
        return if path.exists() { Ok(path.to_path_buf()) } else { Err(MissingBinary::Given(path.to_path_buf())) };
    }
    let exe = std::env::current_exe().map_err(MissingBinary::OwnPath)?;
    let folder = exe.parent().unwrap_or(Path::new("."));
    // The executable's own folder first: a binary beside it is the newer
    // build when both exist.
    let found = [Some(folder), folder.parent()]
        .into_iter()
        .flatten()
        .map(|dir| dir.join("strata"))
        .find(|candidate| candidate.is_file());
    found.ok_or_else(|| MissingBinary::NotBuilt(folder.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test]
    async fn poll_until_returns_the_first_value_and_gives_up_at_the_deadline() {
        let calls = Cell::new(0);
        let found = poll_until(Duration::from_secs(10), || async {
            calls.set(calls.get() + 1);
            (calls.get() == 3).then_some("third")
        })
        .await;
        assert_eq!((found, calls.get()), (Some("third"), 3));

        let calls = Cell::new(0);
        let started = Instant::now();
        let nothing: Option<()> = poll_until(Duration::from_millis(120), || async {
            calls.set(calls.get() + 1);
            None
        })
        .await;
        assert_eq!(nothing, None);
        assert!(started.elapsed() >= Duration::from_millis(120));
        assert!(calls.get() >= 2, "asked again until the deadline, not once");
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 0ns waiting for the impossible")]
    async fn eventually_names_what_it_waited_for() {
        eventually(Duration::ZERO, "the impossible", || async { None::<()> }).await;
    }

    #[test]
    fn a_given_binary_must_exist() {
        let here = std::env::current_exe().unwrap();
        assert_eq!(strata_binary(Some(&here)).unwrap(), here);
        let missing = here.with_file_name("no-such-strata");
        let error = strata_binary(Some(&missing)).unwrap_err();
        assert!(matches!(&error, MissingBinary::Given(path) if *path == missing), "{error}");
        assert!(error.to_string().contains("no-such-strata does not exist"), "{error}");
    }
}
