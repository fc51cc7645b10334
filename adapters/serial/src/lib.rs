//! ferrogate-serial (work in progress).
