//! Runs each adapter as its own task and restarts a failed one with backoff.
