//! The simulator adapter: devices with waveform points, for demos, tests and benchmarks.
