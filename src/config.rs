//! Gateway configuration: `gateway.toml`, `conf.d/*.toml`, `profiles/*.toml`.
