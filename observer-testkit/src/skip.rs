//! Skipping a test loudly when this machine lacks what it needs. Under CI=true, whose set-up
//! installs everything, a skip is a failure: a skipped test proves nothing.

/// Whether this run is CI's.
#[must_use]
pub fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips `test` loudly, saying why and what to do; fails instead under CI=true.
pub fn skip(test: &str, why: &str) {
    assert!(
        !under_ci(),
        "{test}: {why}; under CI=true it may not be skipped"
    );
    eprintln!("\n*** SKIPPED {test}: {why} ***\n");
}
